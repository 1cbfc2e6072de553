# `make demo`, `make test` and `make lab`. Each creates or reuses .venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# On a 2-core machine, one BLAS/OpenMP thread per process; AutoAttack is 20-50x slower when
# threads are oversubscribed. The kit sets torch's own thread count explicitly as well.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test lab clean

demo: $(STAMP)
	$(BIN)/rslad-kit reproduce --preset classroom

# The notebooks in order (notebooks/README.md). Installs nothing beyond `make demo`; two threads
# for the one kernel a student runs at a time.
# Jupyter refuses to start as root (containers, lab VMs) without --allow-root.
lab: $(STAMP)
	OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(BIN)/jupyter lab --notebook-dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

$(STAMP): pyproject.toml requirements-pinned.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-pinned.txt
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) results .pytest_cache notebooks/runs
