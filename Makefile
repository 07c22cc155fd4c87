# Two set-up commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
KFP_VENV ?= .venv-kfp

.PHONY: install kfp-env train test test-fast bench stack-up stack-down clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)     # pinned first: a CPU build, never a multi-GB CUDA one
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# kfp conflicts with the main environment (protobuf, requests, kubernetes pins): its own venv, only to compile
# infra/kubeflow/cdrl_pipeline.py and create recurring runs (~40 s once).
$(KFP_VENV)/.installed: infra/kubeflow/requirements.txt
	test -x $(KFP_VENV)/bin/python || $(PYTHON) -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/pip install --quiet --quiet -r infra/kubeflow/requirements.txt
	touch $@

kfp-env: $(KFP_VENV)/.installed

train: install
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python pipeline/train.py $(ARGS)

test: install kfp-env
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q $(ARGS)

test-fast: install
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: install
	$(BIN)/python benchmarks/step_time.py --config pipeline/configs/toy_official.yaml --json benchmarks/results/step_time_toy_official.json

# The local stack (SeaweedFS S3 + MLflow server): eval "$$(make -s stack-up)", later make stack-down.
stack-up: install
	@PYTHON=$(BIN)/python infra/local/stack-up.sh $(ARGS)

stack-down:
	@PYTHON=$(BIN)/python infra/local/stack-down.sh $(ARGS)

clean:
	rm -rf $(VENV) $(KFP_VENV) .pytest_cache build *.egg-info
