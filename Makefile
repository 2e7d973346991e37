# The two commands: `make demo` and `make test`. Both set everything up first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
XVFB := xvfb-run -a -s "-screen 0 1920x1080x24"

.PHONY: setup demo test lint contracts bench clean

setup:
	@bash tools/setup.sh $(VENV)

lint: setup
	$(VENV)/bin/ruff check src training tests benchmarks tools

contracts: setup
	$(VENV)/bin/lint-imports

test: setup lint contracts
	$(PY) -m pytest

demo: setup
	@if [ -z "$$DISPLAY" ]; then \
		$(XVFB) $(PY) -m napari_neuroseg.demo --out demo-output --exit; \
	else \
		$(PY) -m napari_neuroseg.demo --out demo-output; \
	fi

bench: setup
	$(PY) benchmarks/bench_readers.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
