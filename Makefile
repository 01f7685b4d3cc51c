# Two commands do everything on a fresh machine:
#   make demo   back up a local etcd it starts itself, list, verify, inspect
#   make test   unit, contract and integration tests against real etcd and S3 servers
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint bench proto clean system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

system:
	./scripts/setup-system.sh

demo: $(STAMP)
	$(BIN)/python -m lifeboat.demo

# pytest in two workers, one a core; each test file runs on one of them, so a module's servers start once.
test: $(STAMP) system
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/contract -k 'not s3'

lint: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) system
	$(BIN)/python benchmarks/run_all.py

proto: $(STAMP)
	./scripts/gen-proto.sh

clean:
	rm -rf $(VENV) demo-work bench-work
