# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-full stack-up stack-down worker clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## virtualenv with the project and its test tools

demo: install  ## stack up, a worker, 14 days of history, a live minute, summary + picture, stack down
	$(BIN)/fraudctl demo

test: install  ## the whole test suite (real broker, real Redis)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-full: install  ## the long variants: parity on every card, fault tests on 14 days
	PARITY_CARD_SAMPLE=1 FAULT_SLICE=2018-04-01,14,1 $(BIN)/python -m pytest tests/test_parity.py tests/test_faults.py $(PYTEST_ARGS)

stack-up: install
	$(BIN)/fraudctl stack up

stack-down: install
	$(BIN)/fraudctl stack down

worker: install  ## one worker in the foreground
	$(BIN)/python -m app worker -l info

clean:
	rm -rf .run .pytest_cache
