# The two commands a new user needs: `make demo` and `make test`.
# Both install what they need into .venv from the pinned lockfile.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never

.PHONY: install demo demo-vendors test lint typecheck schemas lock clean

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: requirements-dev.lock pyproject.toml | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements-dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ops.demo

# The same consultation through the Intron and Invox clients against the vendor emulator
# (docs/sandbox.md): no credentials, no network.
demo-vendors: install
	$(PY) -m ops.demo --mode vendors

# lint-imports checks the layer contracts in pyproject.toml ([tool.importlinter]).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: install
	$(VENV)/bin/mypy

test: install lint typecheck
	$(PY) -m pytest

# The JSON Schemas (schemas/export.py) and the AsyncAPI document, which also needs the
# topology and so lives in ops/ (schemas/ imports nothing from worker/ or ops/).
schemas: install
	$(PY) -m schemas.export
	$(PY) -m ops.asyncapi
	$(PY) -m ops.openapi

# requirements-dev.lock: what make install, the tests and CI use; requirements.lock: what the
# Docker image installs (runtime and the offline `local` providers, no test or lint tools),
# constrained to the dev lock's versions so that the image runs what the tests ran.
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --extra local --generate-hashes --python-version 3.11 -o requirements-dev.lock --quiet
	$(UV) pip compile pyproject.toml --extra local --generate-hashes --python-version 3.11 -c requirements-dev.lock -o requirements.lock --quiet

clean:
	rm -rf $(VENV) $(UV_VENV) .mypy_cache .pytest_cache .ruff_cache
