#!/usr/bin/env bash
# Stop the local stack started by stack-up.sh. Options: [--dir .stack] (relative to the repository root).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m infra.local down "$@"
