# Two set-up commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
KFP_VENV ?= .venv-kfp

.PHONY: install kfp-env train test test-fast test-unit bench stack-up stack-down clean

UV     := $(BIN)/uv

# uv installs the dependencies (~10x faster than pip); pip installs only torch, pinned first, because only pip
# looks in the local wheel folder that holds the CPU build (uv would fetch a multi-GB CUDA one). uv then keeps
# the installed torch, which satisfies the project's range. uv, unlike pip, writes no bytecode unless asked:
# without it every process (each Ray worker, driver and server) compiles ray, mlflow and pandas from source
# again wherever PYTHONDONTWRITEBYTECODE is set, as in this project's CI (measured: importing the driver's
# modules 6.3 s against 3.2 s; the Ray tests twice as slow).
$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv

$(BIN)/.installed: pyproject.toml | $(UV)
	$(BIN)/pip install --quiet $(TORCH_PIN)     # pinned first: a CPU build, never a multi-GB CUDA one
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# kfp conflicts with the main environment (protobuf, requests, kubernetes pins): its own venv, only to compile
# infra/kubeflow/cdrl_pipeline.py and create recurring runs (a few seconds once).
$(KFP_VENV)/.installed: infra/kubeflow/requirements.txt | $(UV)
	test -x $(KFP_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(KFP_VENV)
	$(UV) pip install --quiet --python $(KFP_VENV)/bin/python -r infra/kubeflow/requirements.txt
	touch $@

kfp-env: $(KFP_VENV)/.installed

train: install
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python pipeline/train.py $(ARGS)

# Everything but the Ray tests on two pytest-xdist workers, and beside them the fault-injection test (marker
# `waits`: a Ray test that spends most of its time with servers stopped); then the other tests that start Ray
# clusters (marker `ray`) one after another with the machine to themselves (beside other work they slow down
# several-fold and their time-based checks fail). kfp-env installs beside the main environment; the Ray token
# is created once first (Ray clusters starting together would race to write ~/.ray/auth_token). Every part
# always runs, any failing fails the target; the fault test's output is printed after the parallel part's.
# One intra-op thread per process (OMP_NUM_THREADS=1, what Ray gives its workers anyway): the tests' nets are
# tiny, and two xdist workers beside a Ray run, each with torch's two spinning OpenMP threads, oversubscribe
# two cores (measured: the non-Ray part 233–361 s against 477 s). --durations lists each part's slowest tests.
PYTEST := OMP_NUM_THREADS=1 MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -p no:cacheprovider --durations=12
test:
	$(MAKE) --no-print-directory -j2 install kfp-env
	RAY_AUTH_MODE=token $(BIN)/ray get-auth-token --generate > /dev/null
	$(PYTEST) -m waits $(ARGS) > .test-waits.log 2>&1 & waits_pid=$$!; \
	$(PYTEST) -n 2 -m "not ray" $(ARGS); parallel=$$?; \
	wait $$waits_pid; waits=$$?; cat .test-waits.log; \
	$(PYTEST) -m "ray and not waits" $(ARGS); ray=$$?; \
	test $$parallel -eq 0 -a $$waits -eq 0 -a $$ray -eq 0

test-fast: install   # no real Ray / S3 / MLflow servers
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

test-unit: install   # in-process only: no servers, no child processes, no full-size networks
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -m "not slow and not subprocess and not full_size" $(ARGS)

bench: install
	$(BIN)/python benchmarks/step_time.py --config pipeline/configs/toy_official.yaml --json benchmarks/results/step_time_toy_official.json

# The local stack (SeaweedFS S3 + MLflow server): eval "$$(make -s stack-up)", later make stack-down.
stack-up: install
	@PYTHON=$(BIN)/python infra/local/stack-up.sh $(ARGS)

stack-down:
	@PYTHON=$(BIN)/python infra/local/stack-down.sh $(ARGS)

clean:
	rm -rf $(VENV) $(KFP_VENV) .pytest_cache build *.egg-info
