"""nzsp-fem: electro-chemo-mechanical phase-field model of Na dendrites along grain
boundaries in Na3Zr2Si2PO12, solved with DOLFINx 0.9 under MPI.

The Python API::

    from mpi4py import MPI
    import nzsp_fem

    cfg = nzsp_fem.load_config("configs/demo.yaml", overrides={"time.t_end": "1 ms"})
    sim = nzsp_fem.Simulation(cfg, comm=MPI.COMM_WORLD)  # mesh, problem, solver
    while not sim.finished:
        info = sim.step()  # one accepted step; writes nothing
    # or: nzsp_fem.Simulation(cfg).run(output="results/x") with the standard outputs

:func:`load_config` takes a YAML path, a mapping of sections or a :class:`Config`; all go
through the same validation. The loop's observers (:class:`Observer`) see every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from .run import Fields, Observer, RunState, Simulation, StepFailed, StepInfo

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Fields",
    "Observer",
    "RunState",
    "Simulation",
    "StepFailed",
    "StepInfo",
    "load_config",
]

# Loaded on first use: importing DOLFINx takes seconds, and the CLI reports bad input
# before that.
_LAZY = {"Fields", "Observer", "RunState", "Simulation", "StepFailed", "StepInfo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'nzsp_fem' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
