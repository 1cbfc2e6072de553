# `make demo`, `make test` and `make lab`. Each creates or reuses .venv, installed from requirements.lock.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# How requirements.lock is made (`make lock`): every package, exact versions and hashes, for Python 3.11 on
# x86_64 Linux, from pyproject.toml (with the dev extra) and the torch pair in requirements.in.
LOCK   := uv pip compile pyproject.toml requirements.in --extra dev --generate-hashes --python-version 3.11 \
          --python-platform x86_64-manylinux_2_28

# On a 2-core machine, one BLAS/OpenMP thread per process; AutoAttack is 20-50x slower when
# threads are oversubscribed. The kit sets torch's own thread count explicitly as well.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test lab fashion-data lock check-lock clean

demo: $(STAMP)
	$(BIN)/rslad-kit reproduce --preset classroom

# The notebooks in order (notebooks/README.md). Installs nothing beyond `make demo`; two threads
# for the one kernel a student runs at a time.
# Jupyter refuses to start as root (containers, lab VMs) without --allow-root. The "get notified about
# Jupyter news?" pop-up would cover the outputs: its plugin is disabled in .venv, and nothing is fetched.
lab: $(STAMP)
	$(BIN)/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements"
	OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(BIN)/jupyter lab --notebook-dir=notebooks \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# Fashion-MNIST for `--preset fashion` (the demo's digits need nothing): Debian's package as root with
# apt (offline from a local mirror), else torchvision's download into data/.
fashion-data: $(STAMP)
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	else $(BIN)/python -c "from rslad_kit import data; data.load('fashion', 'data'); print('Fashion-MNIST: data/')"; fi

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

# The lock is installed with pip's hash checking; the kit itself goes on top, editable, with no deps.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Fails when .venv holds anything other than exactly what requirements.lock pins (CI runs it).
check-lock: $(STAMP)
	$(BIN)/pip check
	$(BIN)/python .ci/lock_matches.py requirements.lock

# Re-resolve every dependency to the newest versions that pyproject.toml and requirements.in allow.
lock: $(STAMP)
	$(BIN)/$(LOCK) --upgrade -o requirements.lock

clean:
	rm -rf $(VENV) results .pytest_cache notebooks/runs
