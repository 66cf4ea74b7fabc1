# make demo: set up .venv and build chimera. make test: set up .venv and run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
# Plugins install non-editable (real entry points), so their sources are prerequisites too.
PLUGIN_SOURCES := $(wildcard plugins/*/*/*.py plugins/*/*/*.toml)
# torchvision's model files, the references of tests/test_architectures.py: downloaded, never installed
# (its compiled ops do not load against the CPU torch), unpacked for tests/references.py to import by path.
TORCHVISION := torchvision-0.28.0
WHEELS := $(VENV)/wheels

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch 2.13.0 first: a bare `torch` requirement would pull a CUDA build of several GB.
# numpy beside it: torch works without it but warns on every import (an error under pytest).
# constraints.txt pins torch for the rest: the test extra's transformers must not bring its own.
$(STAMP): Makefile pyproject.toml constraints.txt $(PLUGINS) $(PLUGIN_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 numpy
	$(BIN)/pip install -q -c constraints.txt -e ".[test,graph]" $(patsubst %/pyproject.toml,./%,$(PLUGINS))
	$(BIN)/pip download -q --no-deps -d $(WHEELS) $(subst -,==,$(TORCHVISION))
	rm -rf $(WHEELS)/$(TORCHVISION)
	$(BIN)/python -m zipfile -e $(WHEELS)/$(TORCHVISION)-*.whl $(WHEELS)/$(TORCHVISION)
	touch $@

demo: $(STAMP)
	$(BIN)/zoo build chimera

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[lint]"
	$(BIN)/ruff check zoo tests bench plugins
	$(BIN)/ruff format --check zoo tests bench plugins
	$(BIN)/mypy zoo

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info zoo.egg-info
