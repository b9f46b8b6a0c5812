# Two commands set everything up on a fresh machine (see README):
#   make demo   creates .venv, installs posemachines, trains and compares models on synthetic data
#   make test   installs the test tools too, then runs ruff and the fast suite (under 2 minutes)
#   make test-all   every test: the fast suite and the slow end-to-end ones (CI runs both)
PYTHON ?= python3
VENV ?= .venv
# A pinned torch: the CPU build where a local wheel exists, the CUDA build from PyPI elsewhere.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo test test-slow test-all install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[cnn]"

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[cnn,video,test]"

demo: install
	$(BIN)/pm data
	$(BIN)/pm train --backend mean --dataset synthetic --out $(OUT)/mean --overwrite
	$(BIN)/pm train --backend forest --dataset synthetic --stages 2 --seed 0 --out $(OUT)/forest --overwrite
	$(BIN)/pm train --backend cnn --config cpm-small --dataset synthetic --epochs 10 --lr 3e-3 --device cpu --out $(OUT)/cnn --overwrite
	$(BIN)/pm evaluate $(OUT)/forest --dataset synthetic --split test
	$(BIN)/pm compare $(OUT)/mean $(OUT)/forest $(OUT)/cnn --dataset synthetic --out $(OUT)/report

test: install-test
	$(BIN)/ruff check posemachines cli tests benchmarks examples
	$(BIN)/python -m pytest -q -m "not slow"

# The slow end-to-end tests alone (kills at every write, a people model that learns, dask...).
test-slow: install-test
	$(BIN)/python -m pytest -q -m slow

test-all: test test-slow

# Only what make made: the environment, build files and the demo's runs (runs/ also holds every
# model pm train wrote for you, which stays).
clean:
	rm -rf $(VENV) build dist *.egg-info $(OUT)
