# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing:
# torch 2.13.0 (CPU wheel) first and explicitly, so nothing pulls a multi-GB CUDA build, then the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format notebooks clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/othinklab demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check othinklab tests benchmarks
	$(VENV)/bin/ruff format --check othinklab tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format othinklab tests benchmarks
	$(VENV)/bin/ruff check --fix othinklab tests benchmarks

notebooks: $(STAMP)  # rewrite notebooks 03-05 (stripped) from notebooks/make_notebooks.py
	$(PY) notebooks/make_notebooks.py

clean-venv:
	rm -rf $(VENV)
