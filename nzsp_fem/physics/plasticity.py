"""Rate-independent J2 plasticity with linear isotropic hardening (small strain).

The return map is a closed-form UFL expression, so ``ufl.derivative`` of a residual built
from ``ReturnMap.sigma`` is the algorithmic (consistent) tangent and Newton stays
quadratic once the plastic set has settled. The committed state (plastic strain and
equivalent plastic strain at step n) lives in quadrature spaces; every form that uses the
return map must be integrated with ``PlasticState.dx`` so that the quadrature points of
the form and of the state coincide.

All tensors are 3x3, also in 2D: plane strain has eps_zz = 0 for the total strain, but
the plastic strain has a zz component (plastic flow is isochoric, so eps_p_zz != 0 when
eps_p_xx + eps_p_yy != 0), and the out-of-plane stress follows from it.

Units are those of the caller; lam, mu, sigma_y and H may be UFL expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import basix.ufl
import ufl
from dolfinx import fem

from .cell_average import CellAverage
from .elasticity import deviator, elastic_stress

# The von Mises norm is sqrt(3/2 s:s + tiny^2) with tiny = _TINY_REL * mu: its derivative
# s / q is then finite at s = 0 (a stress-free start would otherwise give 0/0 = NaN in the
# tangent), while q is changed by far less than any meaningful yield stress.
_TINY_REL = 1.0e-12


class PlasticState:
    """Committed plastic state (eps_p, p) at the quadrature points of degree ``q``."""

    def __init__(self, mesh, quadrature_degree: int = 2):
        self.mesh = mesh
        self.quadrature_degree = quadrature_degree
        cell = mesh.topology.cell_name()
        Qt = basix.ufl.quadrature_element(cell, value_shape=(3, 3), degree=quadrature_degree)
        Qs = basix.ufl.quadrature_element(cell, value_shape=(), degree=quadrature_degree)
        self.W_tensor = fem.functionspace(mesh, Qt)
        self.W_scalar = fem.functionspace(mesh, Qs)
        self.eps_p = fem.Function(self.W_tensor, name="eps_p")
        self.p = fem.Function(self.W_scalar, name="p")
        # New values are evaluated into these first and copied afterwards, because the
        # expressions read the committed state that is being overwritten.
        self._eps_p_work = fem.Function(self.W_tensor)
        self._p_work = fem.Function(self.W_scalar)
        self.dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.eps_p.x.array.copy(), self.p.x.array.copy()

    def restore(self, snap) -> None:
        eps_p, p = snap
        self.eps_p.x.array[:] = eps_p
        self.p.x.array[:] = p
        self.eps_p.x.scatter_forward()
        self.p.x.scatter_forward()

    def commit(self, ret: ReturnMap) -> None:
        """Store ret.eps_p_new and ret.p_new; call only after a converged solve."""
        if ret._expressions is None:
            # Compiled once per ReturnMap: the expressions read the current coefficients
            # (displacement, material fields), so they stay valid from step to step.
            ret._expressions = (
                fem.Expression(ret.eps_p_new, self.W_tensor.element.interpolation_points()),
                fem.Expression(ret.p_new, self.W_scalar.element.interpolation_points()),
            )
        e_eps, e_p = ret._expressions
        self._eps_p_work.interpolate(e_eps)
        self._p_work.interpolate(e_p)
        self.eps_p.x.array[:] = self._eps_p_work.x.array
        self.p.x.array[:] = self._p_work.x.array
        self.eps_p.x.scatter_forward()
        self.p.x.scatter_forward()


@dataclass
class ReturnMap:
    sigma: ufl.core.expr.Expr
    eps_p_new: ufl.core.expr.Expr
    p_new: ufl.core.expr.Expr
    eps_e: ufl.core.expr.Expr
    _expressions: tuple | None = field(default=None, repr=False, compare=False)


def radial_return(eps_total3, eps_eig3, state: PlasticState, lam, mu, sigma_y, hardening) -> ReturnMap:
    """Backward-Euler J2 return from the committed state for the strain ``eps_total3``.

    ``eps_eig3`` is a stress-free (eigen)strain such as the deposition expansion, or None.
    With linear hardening the plastic multiplier has the closed form
    dp = <q_trial - sigma_y - H p_n> / (3 mu + H), exact for any step size.
    """
    eps_eig3 = 0.0 * ufl.Identity(3) if eps_eig3 is None else eps_eig3
    eps_e_trial = eps_total3 - eps_eig3 - state.eps_p
    sigma_trial = elastic_stress(eps_e_trial, lam, mu)
    s = deviator(sigma_trial)
    tiny = _TINY_REL * mu
    q = ufl.sqrt(1.5 * ufl.inner(s, s) + tiny * tiny)
    f = q - (sigma_y + hardening * state.p)
    dp = ufl.conditional(ufl.gt(f, 0.0), f, 0.0) / (3.0 * mu + hardening)
    flow = 1.5 * s / q  # d q / d sigma: the associative flow direction
    return ReturnMap(
        sigma=sigma_trial - 2.0 * mu * dp * flow,
        eps_p_new=state.eps_p + dp * flow,
        p_new=state.p + dp,
        eps_e=eps_e_trial - dp * flow,
    )


def project_cellwise_average(expr, state: PlasticState, V_dg0) -> fem.Function:
    """Cell average of ``expr`` into DG0 with the quadrature of ``state`` (one-off)."""
    return CellAverage(expr, V_dg0, state.dx)()
