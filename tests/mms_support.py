"""What the MMS test files share: the direct Newton solver settings, the model's g and h
written independently of the package, UFL differentiation, L2 errors and observed rates."""

from __future__ import annotations

import math

from mpi4py import MPI

import ufl
from dolfinx import fem

Q_ERROR = 8  # quadrature degree of the error integrals


def snes_options(**overrides) -> dict:
    """Newton with a backtracking line search and MUMPS, converged far below the
    discretisation error."""
    opts = {
        "snes_type": "newtonls",
        "snes_linesearch_type": "bt",
        "ksp_type": "preonly",
        "pc_type": "lu",
        "pc_factor_mat_solver_type": "mumps",
        "snes_rtol": 1e-11,
        "snes_atol": 1e-12,
        "snes_stol": 0.0,
        "snes_max_it": 30,
    }
    opts.update(overrides)
    return opts


def g_model(e):
    """g(eta)/W = eta^2 (1 - eta)^2, as docs/model.md writes it."""
    return e**2 * (1 - e) ** 2


def h_model(e):
    """h(eta) = eta^3 (6 eta^2 - 15 eta + 10), as docs/model.md writes it."""
    return e**3 * (6 * e**2 - 15 * e + 10)


def slope(fn, e):
    """d fn / d eta at the expression e, by UFL's symbolic differentiation."""
    var = ufl.variable(e)
    return ufl.diff(fn(var), var)


def l2_error(approx, exact, msh, degree: int = Q_ERROR) -> float:
    """||approx - exact||_L2 over the whole (distributed) mesh. Collective."""
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": degree})
    local = fem.assemble_scalar(fem.form((approx - exact) ** 2 * dx))
    return math.sqrt(msh.comm.allreduce(local, op=MPI.SUM))


def rates_of(errors, sizes) -> list[float]:
    """Observed convergence rates between consecutive mesh sizes N."""
    return [math.log(errors[i] / errors[i + 1]) / math.log(sizes[i + 1] / sizes[i]) for i in range(len(errors) - 1)]
