"""Cell averages of UFL expressions into DG0: how every cellwise output is made."""

from __future__ import annotations

import numpy as np

import ufl
from dolfinx import fem, la


class CellAverage:
    """Quadrature-weighted cell average of a scalar, vector or tensor ``expr`` into DG0,
    with its forms compiled once: calling it refills ``.out`` for the current state.

    Interpolating quadrature functions into DG spaces is avoided on purpose: basix 0.9
    checks only the shape of the interpolation points, so it can mis-map silently. The
    DG0 mass matrix is diagonal, so the L2 projection is two vector assemblies and a
    division (the cell measures, fixed for a mesh, are assembled once).
    """

    def __init__(self, expr, V_dg0, dx):
        v = ufl.TestFunction(V_dg0)
        shape = v.ufl_shape
        ones = ufl.as_ufl(1.0) if len(shape) == 0 else ufl.as_tensor(np.ones(shape).tolist())
        self._numerator = fem.form(ufl.inner(expr, v) * dx)
        measure = fem.assemble_vector(fem.form(ufl.inner(ones, v) * dx))
        measure.scatter_reverse(la.InsertMode.add)
        self._n = V_dg0.dofmap.index_map.size_local * V_dg0.dofmap.index_map_bs
        self._measure = measure.array[: self._n].copy()
        self.out = fem.Function(V_dg0)

    def __call__(self) -> fem.Function:
        b = fem.assemble_vector(self._numerator)
        b.scatter_reverse(la.InsertMode.add)
        self.out.x.array[: self._n] = b.array[: self._n] / self._measure
        self.out.x.scatter_forward()
        return self.out
