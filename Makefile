# Two commands for a newcomer: `make demo` and `make test`. Both install what they need.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration e2e system-deps bench clean

$(STAMP): pyproject.toml
	bash scripts/system-deps.sh base
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/balancer demo

# Debian packages the e2e tests use (curl, nginx, wrk, ...); installed with apt-get when root.
system-deps:
	bash scripts/system-deps.sh test

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

e2e: $(STAMP) system-deps
	$(PY) -m pytest -q tests/e2e

# Not part of `make test`: compares balancer with HAProxy and NGINX on this machine.
bench: $(STAMP)
	bash scripts/system-deps.sh bench
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
