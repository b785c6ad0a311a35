"""Small-strain isotropic linear elasticity, as 3x3 tensors (plane strain in 2D): the one
place for the strain and the elastic stress, used by the equilibrium residual, the return
map and the outputs."""

from __future__ import annotations

import ufl


def strain3(u) -> ufl.core.expr.Expr:
    """3x3 small strain of a 2D (plane strain) or 3D displacement."""
    gdim = u.ufl_shape[0]
    e = ufl.sym(ufl.grad(u))
    if gdim == 3:
        return e
    if gdim != 2:
        raise ValueError(f"strain3 needs a 2D or 3D vector, got shape {u.ufl_shape}")
    return ufl.as_tensor([[e[0, 0], e[0, 1], 0.0], [e[1, 0], e[1, 1], 0.0], [0.0, 0.0, 0.0]])


def lame(E, nu):
    """(lam, mu) from Young's modulus and Poisson's ratio."""
    lam = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
    mu = E / (2.0 * (1.0 + nu))
    return lam, mu


def elastic_stress(eps_e3, lam, mu):
    return lam * ufl.tr(eps_e3) * ufl.Identity(3) + 2.0 * mu * eps_e3


def deviator(t3):
    return t3 - ufl.tr(t3) / 3.0 * ufl.Identity(3)


def von_mises(sigma3):
    """sqrt(3/2 s:s). Not regularised: for output, not for forms that get differentiated."""
    s = deviator(sigma3)
    return ufl.sqrt(1.5 * ufl.inner(s, s))
