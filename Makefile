# Every target installs what it needs into .venv first, so `make run` and
# `make test` work on a fresh machine with only python3 on the PATH.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test unit e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/qcluster serve --data-dir ./data --host 127.0.0.1 --http-port 6333 --grpc-port 6334

test: install
	$(PY) -m pytest -q tests

unit: install
	$(PY) -m pytest -q tests/unit

e2e: install
	$(PY) -m pytest -q tests/e2e

clean:
	rm -rf $(VENV) data .pytest_cache
