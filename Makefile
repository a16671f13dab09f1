# Two commands on a fresh machine: `make demo` and `make test` (`make test-all` is CI's full suite). Each creates .venv when missing:
# torch 2.13.0 (CPU wheel) first and explicitly, so nothing pulls a multi-GB CUDA build, then the package with
# constraints.txt pinning what the numbers depend on (transformers, peft, numpy, ...), so a fresh clone reproduces them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint format notebooks gpu-check real-check clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/othinklab demo

# The fast suite a contributor runs before every change (every module's logic; <= 5 minutes on 2 cores).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not notebook and not browser"

# Everything: notebooks, the browser, grid and ablation smoke, kill-and-resume, distributed. CI runs this.
test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check othinklab tests benchmarks scripts
	$(VENV)/bin/ruff format --check othinklab tests benchmarks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format othinklab tests benchmarks scripts
	$(VENV)/bin/ruff check --fix othinklab tests benchmarks scripts

# notebooks/NN_*.py and their solved copies notebooks/solutions/NN_*.py (jupytext percent format) are the
# sources; the .ipynb beside each is generated from it and stripped of outputs. --update keeps the cells'
# ids, so an unchanged source gives an unchanged .ipynb.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --update --to ipynb notebooks/[0-9]*.py notebooks/solutions/[0-9]*.py
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace notebooks/[0-9]*.ipynb notebooks/solutions/[0-9]*.ipynb

gpu-check: $(STAMP)  # on a CUDA machine: the real-size path, TRL side by side, notebook 06 (the GPU one), NCCL (<= 8 min); skips on CPU
	$(PY) benchmarks/gpu_check.py

real-check: $(STAMP)  # on CPU: Qwen2-VL-2B, Qwen2.5-VL-3B, Qwen3-VL-2B at full size (random weights) through train/export/eval
	$(PY) benchmarks/real_check.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
