# flowlite: `make demo` and `make test` are all a newcomer needs (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
STAMP := $(VENV)/.requirements-$(REQ_HASH)
# One torch thread: on 2 busy cores two threads stall (theory §11.3).
export OMP_NUM_THREADS ?= 1
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup demo test test-unit test-notebooks notebooks clean

# The venv is (re)built only when requirements.txt changes: the stamp's name carries the file's hash, so a fresh
# clone (new mtimes) reuses a venv made from the same pins.
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.requirements-*
	@touch $@

setup: $(STAMP)

# The main job: every method on the default problem, 40 CPU s of training each, two runs at a time (about five
# minutes on 2 cores), then the base-vs-tilt plots of every problem (seconds).
demo: setup
	$(BIN)/python -m flowlite bench --problems reweight --budget-seconds 40 --jobs 2 --out runs/demo/bench
	$(BIN)/python -m flowlite targets --problem all --out runs/demo
	@echo "demo done: table runs/demo/bench/summary.md; figures runs/demo/bench/samples.png, runs/demo/bench/curves_reweight.png; targets runs/demo/*.md"

# Two pytest workers, one torch thread each (a clean 2-core machine); --dist loadfile keeps each notebook's cells
# in order on one worker. PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: setup
	FLOWLITE_FAST=1 $(BIN)/python -m pytest -q $(XDIST) tests notebooks --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 --durations=10

test-unit: setup
	FLOWLITE_FAST=1 $(BIN)/python -m pytest -q tests

test-notebooks: setup
	FLOWLITE_FAST=1 $(BIN)/python -m pytest -q notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900

# Figures show inline: no matplotlib backend is exported to the kernel (an inherited MPLBACKEND=Agg draws nothing),
# and each notebook's first cell sets %matplotlib inline.
notebooks: setup
	$(BIN)/python -m pip install --quiet jupyterlab==4.6.6
	env -u MPLBACKEND $(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
