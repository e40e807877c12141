# The two commands of the README. Both install what they need first (scripts/setup.sh).
PYTHON ?= python3

.PHONY: setup demo test test-newest lint
# The suite's shuffled order: fixed, so a failure reproduces; `make test SEED=...` for another.
SEED ?= 20261206

setup:
	bash scripts/setup.sh

demo: setup
	pefty demo --workdir demo

test: setup
	$(PYTHON) -m pytest -q -p randomly --randomly-seed=$(SEED)

# Today's releases of every dependency instead of the pinned ones, in a new order.
test-newest: setup
	bash scripts/test_newest.sh

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
