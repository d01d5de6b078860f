# The two commands of the README. Each creates (or reuses) a local virtualenv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lingudistill-installed

.PHONY: demo test lint venv evidence clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, alone: pip takes the tested build from this machine's wheel store
	$(BIN)/pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,demo]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	PYTHON=$(BIN)/python SWIFT=$(BIN)/swift bash examples/demo.sh

# examples/evidence: the paired, controlled experiment (4 builds x 2 orders, every arm; see its README)
evidence: $(STAMP)
	$(BIN)/python examples/evidence/run.py --jobs 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers, one test file each at a time, one thread per process: two workers with torch's default of one
# thread per core would run four busy threads (and twice that during the two-process tests) on the 2 cores.
test: lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 --dist loadfile

clean:
	rm -rf demo_assets output .pytest_cache
