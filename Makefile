# Every target runs through bin/nzsp-env, which provides DOLFINx 0.9 natively or builds
# (first use only) a Debian trixie root file system from docker/packages.txt.
ENV    := bin/nzsp-env
PYTEST := python3 -m pytest -q -p no:cacheprovider
NP     ?= 2

.PHONY: all test test-serial test-mpi demo bench runtime lint format clean-results

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
