"""Helpers the test files share: config merging, rank-0 printing, global extremes, the
environment of child processes, and the one-line user-error check."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mpi4py import MPI

if TYPE_CHECKING:
    from nzsp_fem import Simulation

COMM = MPI.COMM_WORLD
REPO = Path(__file__).resolve().parents[1]


def merge(base: dict, over: dict) -> dict:
    """``over`` laid over a copy of ``base``: nested sections merge, values and lists replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def rprint(*args) -> None:
    if COMM.rank == 0:
        print(*args, flush=True)


def gmax(a) -> float:
    return COMM.allreduce(float(np.max(a, initial=-np.inf)), op=MPI.MAX)


def gmin(a) -> float:
    return COMM.allreduce(float(np.min(a, initial=np.inf)), op=MPI.MIN)


def child_environment() -> dict:
    """The environment of a child process (python or mpirun): this repository importable,
    and without the MPI job variables inherited when pytest itself runs under mpirun: a
    child python would otherwise join the parent's job and a nested mpirun would fail.
    OMPI_MCA_* (transport settings) and OMPI_ALLOW* (run as root) are kept."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PMIX_")
        and not (k.startswith("OMPI_") and not (k.startswith("OMPI_MCA_") or k.startswith("OMPI_ALLOW")))
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def assert_one_line_error(r: subprocess.CompletedProcess, *expected: str, status: int = 2) -> None:
    """Exit ``status`` (2: bad input) with one 'nzsp-fem: error: ...' line naming the problem,
    and no traceback."""
    both = r.stdout + r.stderr
    assert r.returncode == status, both
    assert "Traceback" not in both, both
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nzsp-fem: error: "), r.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


class FixedSteps:
    """A Simulation stepped with fixed steps, for tests: subclasses set ``sim``
    (nzsp_fem.Simulation); ``pb``, ``solver``, ``evaluator`` and ``t`` are its own."""

    sim: Simulation

    @property
    def pb(self):
        return self.sim.problem

    @property
    def solver(self):
        return self.sim.solver

    @property
    def evaluator(self):
        return self.sim.evaluator

    @property
    def t(self) -> float:
        return self.sim.t

    def set_state(self, **values) -> None:
        """Set fields (scaled values) in the state, taken as the committed state."""
        for name, v in values.items():
            self.pb.set_sub(name, v)
        self.sim.state_changed()

    def step(self, dt: float):
        """One step of dt (s), which must converge; its SNES report."""
        return self.sim.step(dt).report

    def owned(self, name: str):
        """(coordinates in m, physical values) at the owned nodes of a scalar field."""
        V = self.pb.subspaces[name][0]
        n = V.dofmap.index_map.size_local
        return V.tabulate_dof_coordinates()[:n] * self.pb.scaling.length, self.pb.physical_values(name)[:n]


def tiny_bicrystal(cache) -> dict:
    """The small run several test files share: a 0.4 x 0.2 um bicrystal (vertical GB at
    x = 0.2 um) with a 40 nm nucleus on the left electrode, no mechanics, fixed 1 us steps
    (t_end and outputs are each test's own)."""
    return {
        "domain": {"size": ["0.4 um", "0.2 um"]},
        "microstructure": {"grains": 2, "seeds": [["0.1 um", "0.1 um"], ["0.3 um", "0.1 um"]]},
        "mesh": {"size_grain": "40 nm", "size_gb": "25 nm", "size_nucleus": "30 nm", "cache_dir": str(cache)},
        "nuclei": {"positions": [[0, "0.1 um"]], "radius": "40 nm"},
        "phase_field": {"gradient_coefficient": "7.2e-10 J/m"},
        "mechanics": {"enabled": False},
        "time": {"dt_initial": "1 us", "dt_max": "1 us"},
        # Exact linear solves: these runs' fixed steps must all pass at the tight Newton
        # tolerances some files set (rtol 1e-12: with auto's field split Newton's line search
        # failed at the round-off floor, 166 steps instead of 40 in test_faults).
        "solver": {"preset": "direct"},
    }
