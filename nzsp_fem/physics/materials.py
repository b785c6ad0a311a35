"""Interpolation, double well and the phase/GB mixing rules: the one place for them.

Works on floats, numpy arrays and UFL expressions alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ufl

MIXING_RULES = ("paper", "metal-first")


def clamp01(x):
    """x limited to [0, 1] (UFL, numpy or float)."""
    if isinstance(x, ufl.core.expr.Expr):
        return ufl.max_value(0.0, ufl.min_value(1.0, x))
    return np.clip(x, 0.0, 1.0)


def h(x):
    """Smooth step h(x) = x^3 (6x^2 - 15x + 10) on [0, 1], constant outside.

    Held at 0 and 1 outside [0, 1] (still C1, as h'(0) = h'(1) = 0): the polynomial's
    h'(x) > 0 beyond 1 let cathodic Butler-Volmer push eta ever further above 1 inside the
    metal (measured eta 1.07 and c piling up there), and properties overshoot the metal's.
    """
    x = clamp01(x)
    return x**3 * (6 * x**2 - 15 * x + 10)


def dh(x):
    """h'(x) = 30 x^2 (1-x)^2 on [0, 1], 0 outside (the paper prints 6x^3: a typo)."""
    x = clamp01(x)
    return 30 * x**2 * (1 - x) ** 2


def double_well_slope(x):
    """g'(x)/W = 2 x (1-x)(1-2x)."""
    return 2 * x * (1 - x) * (1 - 2 * x)


@dataclass(frozen=True)
class PhaseValues:
    """A property in the Na metal (DE), the NZSP grain (SE) and the grain boundary (GB)."""

    metal: float
    grain: float
    grain_boundary: float


def mix(values: PhaseValues, eta, beta, rule: str = "paper"):
    """P(eta, beta) after docs/model.md (the paper's eqs. 21-24).

    "paper":       h(beta) P_GB + (1-h(beta)) [h(eta) P_DE + (1-h(eta)) P_SE]
                   (a GB filled with metal keeps GB properties);
    "metal-first": h(eta) P_DE + (1-h(eta)) [h(beta) P_GB + (1-h(beta)) P_SE].
    """
    he, hb = h(eta), h(beta)
    if rule == "paper":
        return hb * values.grain_boundary + (1 - hb) * (he * values.metal + (1 - he) * values.grain)
    if rule == "metal-first":
        return he * values.metal + (1 - he) * (hb * values.grain_boundary + (1 - hb) * values.grain)
    raise ValueError(f"unknown mixing rule {rule!r}; expected one of {MIXING_RULES}")


def mix_slope_eta(values: PhaseValues, eta, beta, rule: str = "paper"):
    """dP/d(eta) of :func:`mix`, for the elastic-energy driving force."""
    hb = h(beta)
    if rule == "paper":
        return (1 - hb) * dh(eta) * (values.metal - values.grain)
    if rule == "metal-first":
        return dh(eta) * (values.metal - (hb * values.grain_boundary + (1 - hb) * values.grain))
    raise ValueError(f"unknown mixing rule {rule!r}; expected one of {MIXING_RULES}")


def metal_only(metal: float, grain: float, eta):
    """Properties that depend on eta only (yield stress, hardening)."""
    he = h(eta)
    return he * metal + (1 - he) * grain
