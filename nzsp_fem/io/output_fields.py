"""The functions written for ParaView and drawn in figures, in SI units, derived from the
field table (nodal outputs of each unknown) and the problem's cell-averaged fields; and
``Simulation.fields``, the same nodal fields by name."""

from __future__ import annotations

import numpy as np

from dolfinx import fem

from ..problem import CoupledProblem, DiagnosticsEvaluator
from .figures import Panel, gather_grid


class OutputFields:
    """Output functions grouped by space (one VTX writer each).

    VTX writers keep references to the functions they were opened with, so these are
    created once and refilled before every write. The cell fields are the diagnostics'
    own cell averages, which it refills in place.
    """

    def __init__(self, problem: CoupledProblem, diagnostics: DiagnosticsEvaluator):
        self.problem, self.diagnostics = problem, diagnostics
        self.nodal: list[tuple[str, str, float, fem.Function]] = []  # (field, output name, factor, function)
        # By location, as figures.gather_grid takes them: P1 point data, DG0 cell data.
        self.point_data: dict[str, fem.Function] = {}
        self.groups: dict[str, list[fem.Function]] = {}
        vector_outputs = []
        for f in problem.table:
            V = problem.collapsed_space(f.name)
            for out_name, factor in f.outputs:
                func = fem.Function(V, name=out_name)
                self.nodal.append((f.name, out_name, factor, func))
                if f.is_vector:
                    vector_outputs.append(func)
                else:
                    self.point_data[out_name] = func
        self.cells = diagnostics.cell_fields()
        self.cell_data = dict(self.cells)
        beta_on_cells = problem.beta.function_space.ufl_element().degree == 0
        (self.cell_data if beta_on_cells else self.point_data)["beta"] = problem.beta
        self.groups = {
            "nodal": list(self.point_data.values()),
            "cells": [f for k, f in self.cell_data.items() if k != "current_density"],
            "current_vector": [self.cells["current_density"]],
        }
        if vector_outputs:
            self.groups["displacement"] = vector_outputs

    def update(self) -> dict[str, list]:
        pb = self.problem
        for name, _, factor, func in self.nodal:
            values = pb.physical_values(name)
            func.x.array[:] = values if factor == 1.0 else values * factor
        self.diagnostics.cell_fields()  # refills self.cells
        return self.groups


def field_panels(grids=()) -> list[Panel]:
    """The standard field rows, restricted to fields every given grid has (no mechanics ->
    no stress rows)."""
    panels = [
        Panel("eta", "η (-)", "viridis"),
        Panel("c_mol_m3", "c (mol/m³)", "cividis"),
        Panel("phi_V", "φ (V)", "coolwarm"),
        Panel("phi_i_V", "φ_i ionic (V)", "coolwarm"),
        Panel("phi_e_V", "φ_e electronic (V)", "coolwarm"),
        Panel("current_density_magnitude", "|i| ionic (A/m²)", "inferno"),
        Panel("electronic_current_density_magnitude", "|i_e| electronic (A/m²)", "inferno"),
        Panel("plastic_strain", "p (-)", "magma"),
        Panel("von_mises", "σ_vM (Pa)", "plasma"),
    ]
    for grid in grids:
        if grid is not None:
            names = set(grid.point_data.keys()) | set(grid.cell_data.keys())
            panels = [p for p in panels if p.field in names]
    # With single-ion transport c is c0 to round-off: a map of that is noise in colour.
    present = [g for g in grids if g is not None]
    if present and not any(_varies(g, "c_mol_m3") for g in present):
        panels = [p for p in panels if p.field != "c_mol_m3"]
    return panels


def _varies(grid, name: str, relative: float = 1e-9) -> bool:
    """Whether a field of the grid spans more than ``relative`` of its magnitude."""
    if name not in grid.point_data and name not in grid.cell_data:
        return False
    data = np.asarray(grid.point_data[name] if name in grid.point_data else grid.cell_data[name])
    lo, hi = float(data.min()), float(data.max())
    return hi - lo > relative * max(abs(lo), abs(hi), 1e-300)


def gather_state(fields: OutputFields):
    """The current fields (SI) on one pyvista grid on rank 0 (None elsewhere). Collective."""
    problem = fields.problem
    fields.update()
    tags = {"grain": problem.poly.cell_tags} if problem.poly.cell_tags is not None else None
    return gather_grid(problem.mesh, fields.point_data, fields.cell_data, tags, length_scale=problem.scaling.length)


class Fields:
    """The current fields by name (``sim.fields.eta``), each a DOLFINx Function on its own
    (collapsed) space in SI units: eta, c (mol/m^3, also when the unknown is ln c),
    phi_i (V; ``phi`` is the same function), phi_e (V, two potentials), u (m, with
    mechanics). Refilled from the state at every access; a copy, so writing to it changes
    nothing."""

    def __init__(self, problem: CoupledProblem):
        self._problem = problem
        self._functions: dict[str, fem.Function] = {}

    @property
    def names(self) -> list[str]:
        return [f.name for f in self._problem.table]

    def __getattr__(self, name: str) -> fem.Function:
        pb = self._problem
        # ``phi`` was the field's name before the ionic potential became phi_i in both models.
        key = "phi_i" if name == "phi" else name
        if key.startswith("_") or key not in pb.field:
            raise AttributeError(f"no field {name!r}; the fields are {', '.join(self.names)}")
        func = self._functions.get(key)
        if func is None:
            func = self._functions[key] = fem.Function(pb.collapsed_space(key), name=name)
        factor = pb.field[key].outputs[0][1] if pb.field[key].outputs else 1.0
        func.x.array[:] = pb.physical_values(key) * factor
        return func

    def __dir__(self) -> list[str]:
        return self.names + ["phi"] * ("phi_i" in self.names)
