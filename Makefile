# One place for the torch pin: the CPU build, installed before anything that depends on torch, so pip
# never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# Elsewhere, point this at the PyTorch CPU wheel index (https://download.pytorch.org/whl/cpu) to get the CPU build.
TORCH_INDEX ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekit-installed
DEMO_DIR ?= build/demo

.PHONY: venv demo test lint format bench peers clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[all,dev]" "$(TORCH_PIN)"
	touch $(STAMP)

demo: venv
	$(PY) benchmarks/demo.py --out $(DEMO_DIR)

test: venv
	$(PY) -m ruff check edgekit tests benchmarks examples tools
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check edgekit tests benchmarks examples tools
	$(PY) -m ruff format --check edgekit tests benchmarks examples tools

format: venv
	$(PY) -m ruff format edgekit tests benchmarks examples tools
	$(PY) -m ruff check --fix edgekit tests benchmarks examples tools

bench: venv
	$(PY) benchmarks/bench_suite.py --plot

# INT8 options for MiniLM against the peers (Optimum, NNCF, optimum-intel), which get their own venv under build/.
peers: venv
	$(PY) benchmarks/peers.py --torch-pin "$(TORCH_PIN)"

clean:
	rm -rf build .pytest_cache
