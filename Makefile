# The two commands: `make demo` and `make test`. Both set everything up first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
XVFB := xvfb-run -a -s "-screen 0 1920x1080x24"

.PHONY: setup demo demo-images test lint contracts bench clean

setup:
	@bash tools/setup.sh $(VENV)

lint: setup
	$(VENV)/bin/ruff check src training tests benchmarks tools

contracts: setup
	$(VENV)/bin/lint-imports

test: setup lint contracts
	$(PY) -m pytest

# The real samples are used when ../shared/data is there (a fresh clone runs the samples only).
DEMO_DATA ?= ../shared/data
DEMO_ARGS = --out demo-output $(if $(wildcard $(DEMO_DATA)/.),--data $(DEMO_DATA))

demo: setup
	@if [ -z "$$DISPLAY" ]; then \
		$(XVFB) $(PY) -m napari_neuroseg.demo $(DEMO_ARGS) --exit; \
	else \
		$(PY) -m napari_neuroseg.demo $(DEMO_ARGS); \
	fi

# Regenerate the README's and docs' screenshots (small copies in docs/images; needs the data).
demo-images: setup
	$(XVFB) $(PY) -m napari_neuroseg.demo $(DEMO_ARGS) --exit --docs-images docs/images

bench: setup
	$(PY) benchmarks/bench_readers.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
