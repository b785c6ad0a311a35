"""Problem layer: what is solved. The field table, the coupled problem (mixed space, state,
residual, boundary conditions), its start-up problems and the diagnostics of a state.
Imports config, mesh and physics."""

from .coupled import CoupledProblem
from .diagnostics import Diagnostics, DiagnosticsEvaluator, metal_connects_electrodes
from .fields import Field, field_table
from .startup import StartupProblems

__all__ = [
    "CoupledProblem",
    "Diagnostics",
    "DiagnosticsEvaluator",
    "Field",
    "StartupProblems",
    "field_table",
    "metal_connects_electrodes",
]
