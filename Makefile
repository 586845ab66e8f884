# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The lock of exact versions and hashes every install uses (docs/operations.md).
LOCK := requirements.lock
UV_VERSION ?= 0.13.9
LOCK_ARGS ?=
# Repeats of each broker fault in `make test-full` (tests/test_broker_faults.py).
BROKER_FAULT_RUNS ?= 3
# Extra options of `make notebooks`, e.g. JUPYTER_ARGS="--no-browser --port 8890".
JUPYTER_ARGS ?=

.PHONY: install lock notebooks demo test test-full stack-up stack-down worker clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/activate
	@echo "installing the locked dependencies ($(LOCK)) into $(VENV)..."
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed  ## virtualenv with the exact versions of requirements.lock

$(BIN)/uv: | $(BIN)/activate
	$(BIN)/pip install -q uv==$(UV_VERSION)

lock: $(BIN)/uv  ## regenerate requirements.lock from pyproject.toml (then: make install test)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra notebooks --generate-hashes --universal \
	  --python-version 3.11 --quiet $(LOCK_ARGS) -o $(LOCK)

notebooks: install  ## JupyterLab on notebooks/ (from the lock: the notebooks extra)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(JUPYTER_ARGS)

demo: install  ## stack up, a worker, 14 days of history, a live minute, summary + picture, stack down
	$(BIN)/fraudctl demo

test: install  ## the whole test suite (real broker, real Redis)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-full: install  ## the long variants: parity on every card, fault tests on 14 days, every restart shape 5 times on both brokers, broker faults on 3 Kafka nodes
	PARITY_CARD_SAMPLE=1 FAULT_SLICE=2018-04-01,14,1 $(BIN)/python -m pytest tests/test_parity.py tests/test_faults.py $(PYTEST_ARGS)
	ROLLING_RESTART_RUNS=10 $(BIN)/python -m pytest -s tests/test_operations.py -k rolling_restart $(PYTEST_ARGS)
	FLOW_RESTART_SHAPES=all FLOW_RESTART_RUNS=5 $(BIN)/python -m pytest -s tests/test_operations.py -k membership_changes $(PYTEST_ARGS)
	CATCHUP_DAYS=21 $(BIN)/python -m pytest -s tests/test_operations.py -k catch_up $(PYTEST_ARGS)
	KILL_BOTH_RUNS=5 $(BIN)/python -m pytest -s tests/test_alert_faults.py $(PYTEST_ARGS)
	BROKER_FAULTS=all BROKER_FAULT_RUNS=$(BROKER_FAULT_RUNS) $(BIN)/python -m pytest -s tests/test_broker_faults.py $(PYTEST_ARGS)

stack-up: install
	$(BIN)/fraudctl stack up

stack-down: install
	$(BIN)/fraudctl stack down

worker: install  ## one worker in the foreground
	$(BIN)/python -m app worker -l info

clean:
	rm -rf .run .pytest_cache
