# Every target runs through bin/nzsp-env, which provides DOLFINx 0.9 natively or builds
# (first use only) a Debian trixie root file system from docker/packages.txt.
ENV    := bin/nzsp-env
PYTEST := python3 -m pytest -q -p no:cacheprovider
NP     ?= 2

.PHONY: all test test-serial test-mpi demo bench bench-fipy runtime lint format clean-results

all: test

runtime:
	$(ENV) python3 -c "import dolfinx; print('DOLFINx', dolfinx.__version__)"

test: runtime test-serial test-mpi

test-serial:
	$(ENV) $(PYTEST) tests

test-mpi:
	$(ENV) mpirun -n 2 $(PYTEST) tests -m "not serial"

demo: runtime
	$(ENV) mpirun -n $(NP) nzsp-fem configs/demo.yaml --overwrite
	@echo "demo outputs: results/demo/"

bench: runtime
	$(ENV) python3 -m benchmarks.bench

# nzsp-fem against FiPy on configs/bench/fipy_reduced.yaml (issue 19, item 7). FiPy lives in
# its own venv from PyPI, never in the runtime; the driver runs on the host python3 and
# starts each run, 1 core each, in its own process (nzsp-fem through $(ENV)).
FIPY_VENV := .venv-fipy
$(FIPY_VENV)/.installed:
	python3 -m venv $(FIPY_VENV)
	$(FIPY_VENV)/bin/pip install -q fipy==4.0.3 numpy==2.4.6 scipy==1.17.1
	touch $@

bench-fipy: runtime $(FIPY_VENV)/.installed
	python3 benchmarks/fipy_table.py

# Linters come from PyPI (requirements-lint.txt) into a local venv; they need no DOLFINx.
LINT_VENV := .venv-lint
$(LINT_VENV)/.installed: requirements-lint.txt
	python3 -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install -q -r requirements-lint.txt
	touch $@

lint: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/ruff format --check .
	$(LINT_VENV)/bin/ruff check .
	$(LINT_VENV)/bin/mypy

format: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/ruff format .
	$(LINT_VENV)/bin/ruff check --fix .

clean-results:
	rm -rf results
