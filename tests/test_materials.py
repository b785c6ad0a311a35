"""Interpolation, double well and the mixing rules of nzsp_fem.materials against values
computed by hand (issue 12, item 2).

Every expected number below is worked out in its comment from docs/model.md's formulas
    h(x) = x^3 (6x^2 - 15x + 10),  h'(x) = 30 x^2 (1-x)^2,  g/W = x^2 (1-x)^2,
    "paper":       P = h(b) P_GB + (1-h(b)) [h(e) P_DE + (1-h(e)) P_SE]
    "metal-first": P = h(e) P_DE + (1-h(e)) [h(b) P_GB + (1-h(b)) P_SE]
and h, h' held at 0/1 and 0 outside [0, 1]. None is copied from the code's output.
The functions are checked on floats, numpy arrays and UFL expressions (what the solver
uses: UFL with ufl.max_value/min_value clamping), the last through fem.Constant values
on a unit square (integral over area 1 = the value; allreduce'd, so MPI-safe).

Hand values used repeatedly
    h(1/2) = 1/8 (3/2 - 15/2 + 10) = 1/2;   h'(1/2) = 30/16 = 1.875
    h(1/4) = 1/64 (3/8 - 15/4 + 10) = 1/64 * 53/8 = 53/512 = 0.103515625
    h'(1/4) = 30 (1/16)(9/16) = 270/256 = 1.0546875
    h(3/4) = 1 - h(1/4) = 459/512 = 0.896484375 (h(1-x) = 1 - h(x))
    Unclamped h(1.2) = 1.728 (8.64 - 18 + 10) = 1.10592, h(-0.1) = -0.001 (0.06 + 1.5 + 10)
    = -0.01156, h'(1.2) = 30 * 1.44 * 0.04 = 1.728: what a missing clamp would give.
    Phase values P_DE = 5, P_SE = 50, P_GB = 20 (e.g. E in GPa).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi4py import MPI

import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.physics import materials

COMM = MPI.COMM_WORLD
P = materials.PhaseValues(metal=5.0, grain=50.0, grain_boundary=20.0)


class UflEvaluator:
    """Evaluates f(Constant, Constant) (a UFL scalar) at given values, MPI-collectively."""

    def __init__(self, fn):
        msh = dmesh.create_unit_square(COMM, 2, 2)
        self.a, self.b = fem.Constant(msh, 0.0), fem.Constant(msh, 0.0)
        self.form = fem.form(fn(self.a, self.b) * ufl.dx(domain=msh))

    def __call__(self, a, b=0.0):
        self.a.value, self.b.value = a, b
        return COMM.allreduce(fem.assemble_scalar(self.form), op=MPI.SUM)


# h, h' and the double well ----------------------------------------------------------------

H_CASES = [  # (x, h(x), h'(x)) by hand (module docstring)
    (0.0, 0.0, 0.0),
    (0.25, 53 / 512, 1.0546875),
    (0.5, 0.5, 1.875),
    (0.75, 459 / 512, 1.0546875),
    (1.0, 1.0, 0.0),
    (1.2, 1.0, 0.0),  # clamped; unclamped would be 1.10592 and 1.728
    (-0.1, 0.0, 0.0),  # clamped; unclamped would be -0.01156 and 30*0.01*1.21 = 0.363
]


def test_h_and_dh_hand_values_float_numpy_ufl():
    """h and h' at 0, 1/4, 1/2, 3/4, 1 and outside [0, 1] on floats, numpy arrays and UFL.

    Catches: the paper's typo h' = 6x^3 (gives 0.75 at 1/2, not 1.875), a wrong polynomial
    coefficient, h'(x) not the derivative of h, a missing clamp (h(1.2) = 1.106,
    h'(1.2) = 1.728, h(-0.1) = -0.0116), or clamping only in one of the float/UFL paths.
    """
    xs = np.array([c[0] for c in H_CASES])
    hs = np.array([c[1] for c in H_CASES])
    dhs = np.array([c[2] for c in H_CASES])
    for x, hv, dhv in H_CASES:
        assert math.isclose(float(materials.h(x)), hv, rel_tol=1e-14, abs_tol=1e-15), x
        assert math.isclose(float(materials.dh(x)), dhv, rel_tol=1e-14, abs_tol=1e-15), x
    np.testing.assert_allclose(materials.h(xs), hs, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(materials.dh(xs), dhs, rtol=1e-14, atol=1e-15)
    h_ufl = UflEvaluator(lambda a, b: materials.h(a))
    dh_ufl = UflEvaluator(lambda a, b: materials.dh(a))
    for x, hv, dhv in H_CASES:
        assert math.isclose(h_ufl(x), hv, rel_tol=1e-13, abs_tol=1e-14), x
        assert math.isclose(dh_ufl(x), dhv, rel_tol=1e-13, abs_tol=1e-14), x


def test_double_well_slope_hand_values():
    """g'/W = d/dx [x^2 (1-x)^2] = 2x(1-x)(1-2x):
    g'(1/4) = 2 (1/4)(3/4)(1/2) = 0.1875; g'(1/2) = 0; g'(0.8) = 2 (0.8)(0.2)(-0.6) = -0.192;
    g'(0) = g'(1) = 0; and equal to a central difference of the hand-written g/W = x^2 (1-x)^2.
    Catches a sign error (g' > 0 for x > 1/2 would make eta = 1/2 stable), a missing factor 2,
    4x^3 - 6x^2 + 2x miscoded. Float and UFL paths."""
    ev = UflEvaluator(lambda a, b: materials.double_well_slope(a))
    for x, slope in ((0.25, 0.1875), (0.5, 0.0), (0.8, -0.192), (0.0, 0.0), (1.0, 0.0)):
        assert math.isclose(materials.double_well_slope(x), slope, rel_tol=1e-13, abs_tol=1e-15), x
        assert math.isclose(ev(x), slope, rel_tol=1e-13, abs_tol=1e-15), x

    def g(x):
        return x**2 * (1 - x) ** 2

    d = 1e-5
    for x in (0.1, 0.37, 0.66, 0.9):
        fd = (g(x + d) - g(x - d)) / (2 * d)
        assert math.isclose(materials.double_well_slope(x), fd, rel_tol=1e-8), x


# The mixing rules -------------------------------------------------------------------------

# (eta, beta, paper, metal-first, d/deta paper, d/deta metal-first), P = (5, 50, 20):
MIX_CASES = [
    # he = 1/2, hb = 53/512:
    # paper = 20*53/512 + (459/512)(2.5 + 25) = 2.0703125 + 24.6533203125 = 26.7236328125
    # metal-first = 2.5 + 0.5 (2.0703125 + 50*459/512) = 2.5 + 0.5*46.89453125 = 25.947265625
    # slope paper = (459/512) * 1.875 * (5 - 50) = -75.640869140625
    # slope metal-first = 1.875 * (5 - 46.89453125) = -78.55224609375
    (0.5, 0.25, 26.7236328125, 25.947265625, -75.640869140625, -78.55224609375),
    # Metal in a GB: the paper keeps the GB value, metal-first the metal's; h'(1) = 0.
    (1.0, 1.0, 20.0, 5.0, 0.0, 0.0),
    # Half metal in a GB: paper 20 (slope 0: (1 - h(b)) = 0); metal-first 2.5 + 10 = 12.5,
    # slope 1.875 (5 - 20) = -28.125.
    (0.5, 1.0, 20.0, 12.5, 0.0, -28.125),
    # No GB: both rules are h(e) P_DE + (1-h(e)) P_SE = 5*53/512 + 50*459/512 = 45.341796875,
    # slope 1.0546875 * (5 - 50) = -47.4609375.
    (0.25, 0.0, 45.341796875, 45.341796875, -47.4609375, -47.4609375),
    # Pure electrolyte, half GB: 0.5*20 + 0.5*50 = 35 for both; h'(0) = 0.
    (0.0, 0.5, 35.0, 35.0, 0.0, 0.0),
    # Outside [0, 1] (clamped): eta 1.3 -> metal, beta -0.2 -> grain: 5 for both.
    (1.3, -0.2, 5.0, 5.0, 0.0, 0.0),
    # eta -0.5 -> electrolyte, beta 1.5 -> GB: 20 for both.
    (-0.5, 1.5, 20.0, 20.0, 0.0, 0.0),
]


@pytest.mark.parametrize("case", MIX_CASES, ids=[f"eta={c[0]},beta={c[1]}" for c in MIX_CASES])
def test_mix_and_slope_hand_values(case):
    """materials.mix and materials.mix_slope_eta for both rules, float and UFL paths.

    Catches: the two rules swapped or merged (a metal-filled GB is 20 in "paper", 5 in
    "metal-first"), h(beta) and h(eta) swapped, P_GB and P_SE swapped, eta used where
    h(eta) belongs (0.5 -> 0.5 either way, but 0.25 -> 0.25 vs 0.1035), the (1 - h(beta))
    factor missing from the paper slope, P_GB missing from the metal-first slope, no clamp.
    """
    eta, beta, paper, metal_first, slope_paper, slope_mf = case
    expected = {"paper": (paper, slope_paper), "metal-first": (metal_first, slope_mf)}
    for rule, (value, slope) in expected.items():
        assert math.isclose(float(materials.mix(P, eta, beta, rule)), value, rel_tol=1e-14), rule
        assert math.isclose(float(materials.mix_slope_eta(P, eta, beta, rule)), slope, rel_tol=1e-14, abs_tol=1e-13), (
            rule
        )
        mix_ufl = UflEvaluator(lambda a, b, r=rule: materials.mix(P, a, b, r))
        slope_ufl = UflEvaluator(lambda a, b, r=rule: materials.mix_slope_eta(P, a, b, r))
        assert math.isclose(mix_ufl(eta, beta), value, rel_tol=1e-13), rule
        assert math.isclose(slope_ufl(eta, beta), slope, rel_tol=1e-13, abs_tol=1e-12), rule


def test_mix_default_rule_is_paper_and_unknown_rule_raises():
    """docs/model.md: "paper" is the paper's rule and the default; a typo must not fall through."""
    assert materials.mix(P, 1.0, 1.0) == 20.0
    assert materials.mix_slope_eta(P, 0.5, 1.0) == 0.0
    with pytest.raises(ValueError):
        materials.mix(P, 0.5, 0.5, "metal_first")
    with pytest.raises(ValueError):
        materials.mix_slope_eta(P, 0.5, 0.5, "Paper")


def test_metal_only_hand_values():
    """Yield stress / hardening depend on eta only: h(e) P_DE + (1-h(e)) P_SE.
    With P_DE = 0.5, P_SE = 50 (MPa): eta = 1/4 -> 0.5*53/512 + 50*459/512 = 0.0517578125
    + 44.82421875 = 44.8759765625; eta = 1/2 -> 25.25; eta = 1 or 1.2 -> 0.5; eta = -0.3 -> 50.
    Catches metal/grain swapped, eta in place of h(eta), no clamp."""
    for eta, value in ((0.25, 44.8759765625), (0.5, 25.25), (1.0, 0.5), (1.2, 0.5), (-0.3, 50.0)):
        assert math.isclose(float(materials.metal_only(0.5, 50.0, eta)), value, rel_tol=1e-14), eta
    ev = UflEvaluator(lambda a, b: materials.metal_only(0.5, 50.0, a))
    assert math.isclose(ev(0.25), 44.8759765625, rel_tol=1e-13)


@pytest.mark.parametrize("rule", ["paper", "metal-first"])
def test_mix_slope_is_derivative_of_mix(rule):
    """mix_slope_eta equals ufl.diff(mix, eta) as UFL fields over eta in [-0.3, 1.3] and
    beta in [-0.2, 1.2] (clamped regions included): eta = x, beta = y on a rectangle whose
    mesh lines sit on the clamp kinks eta = 0, 1 and beta = 0, 1, so each cell integrand is
    smooth; ||slope - diff||_L2 / ||slope||_L2 < 1e-12 (allreduce'd). Also a float central
    difference of mix at interior points.

    Catches any slope that is not d mix/d eta: the GB factor of the wrong rule, the
    (1 - h(beta)) factor dropped, a sign error, a slope that does not vanish where h is held.
    This derivative is what mechanical_driving_force uses for dE/deta.
    """
    msh = dmesh.create_rectangle(COMM, [np.array([-0.3, -0.2]), np.array([1.3, 1.2])], [16, 14])
    x = ufl.SpatialCoordinate(msh)
    eta = ufl.variable(x[0])
    beta = x[1]
    diff = ufl.diff(materials.mix(P, eta, beta, rule), eta)
    slope = materials.mix_slope_eta(P, x[0], beta, rule)
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 10})

    def norm2(expr):
        return COMM.allreduce(fem.assemble_scalar(fem.form(expr**2 * dx)), op=MPI.SUM)

    slope2 = norm2(slope)  # collective: never inside a rank-0-only branch
    rel = math.sqrt(norm2(slope - diff) / slope2)
    if COMM.rank == 0:
        print(
            f"\nmix_slope_eta vs ufl.diff(mix) ({rule}): relative L2 difference {rel:.2e}, "
            f"||slope||_L2 = {math.sqrt(slope2):.3f}",
            flush=True,
        )
    assert slope2 > 100.0  # the slope is not trivially zero (|P_DE - P_SE| = 45)
    assert rel < 1e-12

    d = 1e-6
    for e, b in ((0.3, 0.2), (0.5, 0.7), (0.81, 0.45)):
        fd = (materials.mix(P, e + d, b, rule) - materials.mix(P, e - d, b, rule)) / (2 * d)
        assert math.isclose(materials.mix_slope_eta(P, e, b, rule), fd, rel_tol=1e-7), (e, b)
