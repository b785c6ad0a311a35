"""Boundary conditions, declared once and turned into DOLFINx objects for whichever space
needs them (the mixed space of the coupled problem, or one field's space in the start-up
solves).

Right edge (x = Lx): reservoir, phi = 0 (the ionic potential with two potentials) and
c = 1 (unless electrochemistry.reservoir is off). Left edge (x = 0): the Na electrode,
phi = phi_app (the electronic potential phi_e with two potentials) or a current density
(galvanostatic, a Neumann term on the same potential), as the first segment of the
electrode protocol says (config/protocol.py; the coupled problem switches later segments
in between steps). Mechanics: u_x = 0 on left and right, u_y = 0 at
the bottom (u_z = 0 at the front in 3D), an optional stack pressure on the top edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ufl
from dolfinx import fem

from ..config.protocol import electrode_segments
from ..mesh import BOTTOM, FRONT, LEFT, RIGHT, TOP
from ..physics import forms
from ..physics.scaling import Scaling


@dataclass(frozen=True)
class Dirichlet:
    """field (or one component of it) = value (scaled) on the facets with these tags."""

    field: str
    value: float
    tags: tuple[int, ...]
    component: int | None = None


def electrode_potential_condition(scaling: Scaling, potential: float) -> Dirichlet:
    """The potentiostatic electrode at ``potential`` (V). With two potentials the electrode
    sets the electronic potential and the reservoir the ionic one; with one, both act on phi."""
    field = "phi_e" if scaling.cfg.electrochemistry.potentials == "two" else "phi_i"
    return Dirichlet(field, potential / scaling.potential, (LEFT,))


def dirichlet_conditions(scaling: Scaling, dim: int, electrode: bool = True) -> list[Dirichlet]:
    """The Dirichlet conditions at the start; ``electrode=False`` leaves out the electrode's
    potential (the coupled problem keeps it apart to switch it on and off)."""
    cfg = scaling.cfg
    ec = cfg.electrochemistry
    out = [Dirichlet("phi_i", 0.0, (RIGHT,))]
    if ec.reservoir:
        out.append(Dirichlet("c", 0.0 if cfg.solver.log_concentration else 1.0, (RIGHT,)))
    first = electrode_segments(cfg)[0]
    if electrode and first.mode == "potentiostatic":
        out.append(electrode_potential_condition(scaling, first.potential))
    if cfg.mechanics.enabled:
        out.append(Dirichlet("u", 0.0, (LEFT, RIGHT), component=0))
        out.append(Dirichlet("u", 0.0, (BOTTOM,), component=1))
        if dim == 3:
            out.append(Dirichlet("u", 0.0, (FRONT,), component=2))
    return out


def build_dirichlet(conditions: list[Dirichlet], space_of, facet_tags, fdim: int) -> list:
    """DOLFINx BCs for ``conditions`` restricted to the fields ``space_of`` knows.

    ``space_of(name)`` gives the space a field lives in (a subspace of the mixed space, or
    a collapsed one), or None to skip that field.
    """
    bcs = []
    for cond in conditions:
        space = space_of(cond.field)
        if space is None:
            continue
        if cond.component is not None:
            space = space.sub(cond.component)
        facets = np.concatenate([facet_tags.find(t) for t in cond.tags])
        if space.component():
            # A subspace: its dofs are numbered in the parent space.
            collapsed, _ = space.collapse()
            dofs = fem.locate_dofs_topological((space, collapsed), fdim, facets)
            value = fem.Function(collapsed)
            value.x.array[:] = cond.value
            bcs.append(fem.dirichletbc(value, dofs, space))
        else:
            dofs = fem.locate_dofs_topological(space, fdim, facets)
            value = fem.Function(space)
            value.x.array[:] = cond.value
            bcs.append(fem.dirichletbc(value, dofs))
    return bcs


def electrode_current_term(scaling: Scaling, v, ds, current=None):
    """The galvanostatic electrode's Neumann term in the charge equation, or None.

    ``current``: the scaled current density as a Constant that a protocol changes between
    steps; by default the first segment's value (None when that one is potentiostatic).
    """
    if current is None:
        first = electrode_segments(scaling.cfg)[0]
        if first.mode != "galvanostatic":
            return None
        current = first.signed_current_density / scaling.current_density
    return forms.galvanostatic_term(current, v, ds(LEFT))


def stack_traction_term(scaling: Scaling, v, mesh, ds):
    """The stack pressure on the top edge as a weak term, or None without one."""
    pressure = scaling.cfg.mechanics.stack_pressure
    if pressure <= 0:
        return None
    return forms.traction_term(pressure / scaling.stress, v, ufl.FacetNormal(mesh), ds(TOP))
