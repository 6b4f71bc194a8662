# Two commands for a newcomer: `make demo` and `make test`. Both install what they need.
VENV   := .venv
PY     := $(VENV)/bin/python
# The interpreter .venv is made with: the distribution's python3 when it is 3.11 or newer
# (Debian's is built with PGO and LTO, libpython linked in: 10% less user CPU per proxied
# request than a plain source build such as pyenv's, see bench/README.md), else python3 on
# PATH. `make test PYTHON=python3.12` chooses another (remove .venv first).
PYTHON ?= $(or $(shell for p in /usr/bin/python3 python3; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; done),python3)
export PYTHON
STAMP  := $(VENV)/.installed
# The data plane is compiled in place with mypyc (setup.py, src/balancer/native.py).
NATIVE := $(VENV)/.native
NATIVE_SRC := $(shell $(PYTHON) -c 'import runpy; n = runpy.run_path("src/balancer/native.py"); print(*("src/" + p for p in n["COMPILED"]), *("src/" + p for _, p in n["C_EXTENSIONS"]))')

.PHONY: demo test lint unit integration e2e system-deps bench clean native docs

# What `make demo` needs and no more: the runtime packages, balancer interpreted, in about
# 15 s on a fresh machine instead of two minutes of test packages and compiling. The data
# plane is compiled by `make native` or `make test`; once it is, demo keeps it up to date.
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): pyproject.toml setup.py
	bash scripts/system-deps.sh base
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q 'setuptools>=77'
	BALANCER_PURE=1 $(PY) -m pip install -q --no-build-isolation -e '.[tiers]'
	touch $(RUN_STAMP)

# Editable install without build isolation: mypyc type-checks with the packages of .venv.
$(STAMP): pyproject.toml setup.py
	bash scripts/system-deps.sh base
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		> $(VENV)/build-requires.txt
	$(PY) -m pip install -q -r $(VENV)/build-requires.txt
	$(PY) -m pip install -q --no-build-isolation -e '.[test,tiers]'
	touch $(STAMP) $(NATIVE) $(RUN_STAMP)

# Rebuilds the compiled modules after their source changed.
# mypyc leaves the library as it was when an edit changes no C (a comment, a docstring):
# touched, it counts as built from the current source (native.stale()).
$(NATIVE): $(STAMP) $(NATIVE_SRC)
	$(PY) setup.py -q build_ext --inplace
	touch src/balancer_native__mypyc.*.so $(NATIVE)

native: $(NATIVE)

demo: $(RUN_STAMP) $(if $(wildcard src/balancer_native__mypyc*.so),$(NATIVE))
	$(VENV)/bin/balancer demo

# Debian packages the e2e tests use (curl, nginx, wrk, ...); installed with apt-get when root.
system-deps:
	bash scripts/system-deps.sh test

test: $(NATIVE) system-deps lint
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench lab
	$(VENV)/bin/ruff format --check src tests bench lab
	$(VENV)/bin/mypy

unit: $(NATIVE)
	$(PY) -m pytest -q tests/unit

integration: $(NATIVE)
	$(PY) -m pytest -q tests/integration

e2e: $(NATIVE) system-deps
	$(PY) -m pytest -q tests/e2e

# Regenerates docs/config-keys.md from src/balancer/config/model.py (a unit test fails while it is stale).
docs: $(STAMP)
	$(PY) -m balancer.config.reference docs/config-keys.md

# Not part of `make test`: compares balancer with HAProxy, NGINX and Python peers on this machine
# (bench/README.md). The peers and matplotlib go into bench/.venv-peers, not the project's venv.
bench: $(NATIVE)
	bash scripts/system-deps.sh bench
	$(PY) bench/peers.py install
	$(PY) bench/all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info build
	find src -name '*.so' -delete
