# One-command entry points. Each works on a fresh clone: it makes the venv and installs pinned deps first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)
# Pinned threads: reproducible weights and no oversubscription of the 2 cores.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2

.PHONY: setup test demo ui clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q screener_ssl_tests

demo: setup
	$(PY) -m screener_ssl.demo

ui: setup
	$(VENV)/bin/dagster dev

clean:
	rm -rf data/* storage history schedules logs
