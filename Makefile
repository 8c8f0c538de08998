# dsbox: `make run` runs the main job, `make test` runs the whole suite.
# Both create (or refresh) .venv first. torch is pinned to one release: on the
# project's CPU machines that release lies on disk as a CPU wheel; on a CUDA box
# pip takes the regular (CUDA) wheel of the same release from PyPI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: run test lint install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dsbox run

lint: $(STAMP)
	$(VENV)/bin/ruff check dsbox tests benchmarks scripts

test: $(STAMP) lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
