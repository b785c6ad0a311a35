"""Shared test setup: the `serial` marker and an MPI-consistent scratch directory.

The suite runs serially (``pytest``) and under ``mpirun -n 2 pytest -m "not serial"``.
Tests marked ``serial`` (e.g. ones that spawn subprocesses) are skipped when more than one
rank is running, as a safety net in case the marker filter is forgotten.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mpi4py import MPI


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size == 1:
        return
    skip = pytest.mark.skip(reason=f"serial test, not run on {MPI.COMM_WORLD.size} MPI ranks")
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(skip)


@pytest.fixture
def tmp_workdir(tmp_path) -> Path:
    """A fresh directory per test, the same on every rank (rank 0's tmp_path)."""
    return Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))
