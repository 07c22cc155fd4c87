#!/usr/bin/env bash
# Start the local stack (SeaweedFS S3 + MLflow server) on loopback; the logic is infra/local/ (python -m infra.local).
# Prints `export ...` lines on stdout, so `eval "$(infra/local/stack-up.sh)"` configures this shell.
# Options: [--dir .stack] [--s3-port 8333] [--mlflow-port 5000] [--bucket cdrl] [--no-mlflow]
# (a relative --dir is taken from the repository root).
set -euo pipefail
cd "$(dirname "$0")/../.."
export MLFLOW_DISABLE_TELEMETRY=true
exec "${PYTHON:-.venv/bin/python}" -m infra.local up "$@"
