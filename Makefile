# The two commands of the README. Both install what they need first (scripts/setup.sh).
PYTHON ?= python3

.PHONY: setup demo test test-shuffled test-newest lint
# A shuffled order (pytest-randomly): fixed, so a failure reproduces; `SEED=...` for another.
SEED ?= 7

setup:
	bash scripts/setup.sh

demo: setup
	pefty demo --workdir demo

test: setup
	$(PYTHON) -m pytest -q -p no:randomly

# The same suite in a shuffled order: no test may lean on another having run first.
test-shuffled: setup
	$(PYTHON) -m pytest -q -p randomly --randomly-seed=$(SEED)

# Today's releases of every dependency instead of the pinned ones, in a new order.
test-newest: setup
	bash scripts/test_newest.sh

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
