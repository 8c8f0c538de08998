# dsbox: `make run` runs the main job, `make test` runs the whole suite.
# Both create (or refresh) .venv first. torch is pinned to one release: on the
# project's CPU machines that release lies on disk as a CPU wheel; on a CUDA box
# pip takes the regular (CUDA) wheel of the same release from PyPI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: run test lint install clean gpu-check

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

# The first thing a lent GPU runs (scripts/gpu_check.py): never installs anything (the GPU
# machine has no network). Python: .venv's if its torch sees CUDA, else python3's if that one
# does, else .venv's (which then says "no CUDA" and exits 0). GPU_CHECK_ARGS: e.g. --out DIR.
gpu-check:
	@py=python3; [ -x $(PY) ] && py=$(PY); \
	cuda='import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; \
	if ! $$py -c "$$cuda" 2>/dev/null && python3 -c "$$cuda" 2>/dev/null; then py=python3; fi; \
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $$py -u scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
