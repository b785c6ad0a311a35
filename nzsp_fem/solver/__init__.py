"""Solver layer: how the problem is solved. The SNES wrapper (the one place that knows the
DOLFINx 0.9 assembly API), the PETSc presets, the coupled solver and the adaptive time-step
controller. Imports config and problem (and below)."""

from .coupled import CoupledSolver
from .snes import SNESProblem, SolveReport
from .state import RunState
from .timestepping import StepController

__all__ = ["CoupledSolver", "RunState", "SNESProblem", "SolveReport", "StepController"]
