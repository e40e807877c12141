# The two commands of the README. Both install what they need first (scripts/setup.sh).
PYTHON ?= python3

.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	pefty demo --workdir demo

test: setup
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
