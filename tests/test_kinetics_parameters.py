"""Allen-Cahn + Butler-Volmer with NON-degenerate kinetics parameters (issue 12, item 1).

Why
    tests/test_mms.py and the physics tests run the kinetics with mobility L = 1,
    alpha = 0.5 and n = 1. At those values three classic coding mistakes leave every
    residual unchanged: swapping alpha and 1 - alpha (0.5 <-> 0.5), writing n^2 for n
    (1 = 1) and dropping the mobility (1 x ... = ...). Here alpha = 0.3, n = 2, L = 0.7,
    L_eta = 1.7 and E_eq = 0.15 (all scaled, potentials in RT/F), so each of them changes
    the numbers.

What is verified
    1. ``test_allen_cahn_mms_nondegenerate``: MMS of docs/model.md eq. 1 (Allen-Cahn with the
       Butler-Volmer term, a given c, phi and mechanical driving force), P1 on the unit
       square, N = 8 .. 64, through forms.allen_cahn_local_rate / allen_cahn_rate /
       allen_cahn_residual with an AllenCahnParameters. L2 rate of the finest pair must be
       2 within 0.1. The source is the strong form written in this file from docs/model.md
       (g', h' by ufl.diff of g and h as docs/model.md prints them), never from forms.py.
    2. ``test_allen_cahn_mms_detects_parameter_mistakes``: the same MMS with forms given
       the mutated kinetics (alpha -> 1 - alpha, n -> n^2, mobility dropped from the local
       rate) while the source keeps the right ones: the error must stop converging. This
       shows the MMS of test 1 has teeth for each mistake.
    3. ``test_local_rate_pointwise``: forms.allen_cahn_local_rate at a few (eta, c, phi,
       dpsi/deta) values against a hand-written float expression (rel. 1e-12), and the
       three mutated float expressions differ from the correct one by > 5 % there (so the
       1e-12 check would catch each of them by 10 orders of magnitude).

All meshes live on MPI.COMM_WORLD and every norm/value is allreduce'd: collective-safe.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from mms_support import g_model, h_model, l2_error, rates_of, slope, snes_options

from mpi4py import MPI

import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.physics import forms
from nzsp_fem.solver.snes import SNESProblem

COMM = MPI.COMM_WORLD
PI = math.pi
SIZES = (8, 16, 32, 64)
RATE_TOL = 0.1
Q_SOLVE, Q_ERROR = 4, 8
# dt = 0.1, not test_mms.py's 0.2: with n = 2 the Butler-Volmer slope -L_eta h''(eta) BV
# reaches ~ +50 here, and at dt = 0.2 the linearised step operator 1/dt - d(rate)/d(eta)
# - L kappa lap is indefinite enough that Newton from 0.5 lands on another discrete
# solution (measured: error 0.012 at every N). At dt = 0.1 the solution is the exact one.
T0, DT = 0.3, 0.1
T1 = T0 + DT

# Non-degenerate kinetics (scaled). Written once here; the hand expressions below use these
# numbers directly, not the AllenCahnParameters fields.
MOBILITY = 0.7  # L W t0
GRADIENT = 0.05  # kappa0 / (W l0^2)
REACTION = 1.7  # L_eta t0
ALPHA = 0.3  # charge-transfer coefficient
ELECTRONS = 2  # n
E_EQ = 0.15  # equilibrium potential / (RT/F)


def parameters(**changes):
    p = forms.AllenCahnParameters(
        mobility=MOBILITY,
        gradient=GRADIENT,
        reaction=REACTION,
        alpha=ALPHA,
        electrons=ELECTRONS,
        equilibrium_potential=E_EQ,
    )
    return replace(p, **changes)


# Strong form of docs/model.md eq. 1, transcribed independently of forms.py ----------------------


def rate_model(eta, c, phi, mech):
    """d eta/dt = -L [g'(eta) + dpsi/deta - div(kappa grad eta)]
                  - L_eta h'(eta) [exp((1-alpha) n eta_a) - c exp(-alpha n eta_a)],
    eta_a = phi - E_eq, f = F/RT = 1 in these units."""
    eta_a = phi - E_EQ
    bv = ufl.exp((1 - ALPHA) * ELECTRONS * eta_a) - c * ufl.exp(-ALPHA * ELECTRONS * eta_a)
    return (
        -MOBILITY * (slope(g_model, eta) + mech - ufl.div(GRADIENT * ufl.grad(eta)))
        - REACTION * slope(h_model, eta) * bv
    )


# Manufactured fields (same families as test_mms.py) -----------------------------------------


def eta_field(x, t):
    return 0.5 + 0.35 * ufl.sin(1.3 * PI * x[0] + 0.4) * ufl.cos(0.9 * PI * x[1]) * math.exp(-0.5 * t)


def c_field(x, t):
    return 1.0 + 0.4 * (1 + t) * ufl.cos(1.1 * PI * x[0]) * ufl.sin(PI * x[1] + 0.3)


def phi_field(x, t):
    """About -0.9 .. 0.2, so eta_a = phi - E_eq spans both signs' worth of BV asymmetry."""
    return -0.6 + 0.5 * x[0] + 0.3 * (1 - 0.5 * t) * ufl.sin(1.2 * PI * x[1]) * ufl.cos(0.7 * PI * x[0])


def mech_field(x):
    return 0.3 * ufl.cos(PI * x[0]) * x[1] + 0.1


def solve_mms(n, p_forms, local_p=None, must_converge=True):
    """One backward-Euler step of the MMS problem on an n x n mesh; returns the L2 error
    (inf if SNES fails and ``must_converge`` is False).

    ``p_forms`` are the parameters forms.py gets; ``local_p`` (default p_forms) are the ones
    of the pointwise local rate only (to emulate a mistake confined to allen_cahn_local_rate).
    The manufactured source always uses the correct module constants.
    """
    msh = dmesh.create_unit_square(COMM, n, n)
    x = ufl.SpatialCoordinate(msh)
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": Q_SOLVE})
    V = fem.functionspace(msh, ("Lagrange", 1))
    v = ufl.TestFunction(V)
    eta_exact, eta_old = eta_field(x, T1), eta_field(x, T0)
    c, phi, mech = c_field(x, T1), phi_field(x, T1), mech_field(x)

    eta = fem.Function(V)
    eta.x.array[:] = 0.5
    local_rate = forms.allen_cahn_local_rate(eta, c, phi, mech, local_p or p_forms)
    rate = forms.allen_cahn_rate(v, eta, local_rate, 1.0, p_forms, dx)
    F = forms.allen_cahn_residual(eta, eta_old, DT, v, rate, dx)
    F -= ((eta_exact - eta_old) / DT - rate_model(eta_exact, c, phi, mech)) * v * dx

    fdim = msh.topology.dim - 1
    msh.topology.create_connectivity(fdim, fdim + 1)
    facets = dmesh.exterior_facet_indices(msh.topology)
    g = fem.Function(V)
    g.interpolate(fem.Expression(eta_exact, V.element.interpolation_points()))
    bc = fem.dirichletbc(g, fem.locate_dofs_topological(V, fdim, facets))
    problem = SNESProblem(F, eta, [bc], snes_options())
    report = problem.solve()
    problem.destroy()
    if not report.converged and not must_converge:
        return math.inf
    assert report.converged, f"SNES did not converge at N = {n}: {report}"
    return l2_error(eta, eta_exact, msh)


# 1. MMS at non-degenerate parameters ---------------------------------------------------------


def test_allen_cahn_mms_nondegenerate():
    """P1 rate 2 (within 0.1) for Allen-Cahn + BV at alpha = 0.3, n = 2, L = 0.7, L_eta = 1.7,
    E_eq = 0.15, with a non-zero mechanical driving force and gradient term.

    Catches in forms.py: exp(alpha n eta_a) / exp(-(1-alpha) n eta_a) (alpha and 1 - alpha
    swapped), n^2 or a missing n in the exponents, a missing L on g' + dpsi/deta or on the
    gradient term, a missing/extra c on the cathodic term, E_eq dropped or added with the
    wrong sign, h' or g' wrong, a wrong sign of any term. Each of these makes the discrete
    solution converge to a different function, so the error stalls (test 2 measures it).
    """
    errors = [solve_mms(n, parameters()) for n in SIZES]
    rates = rates_of(errors, SIZES)
    if COMM.rank == 0:
        print(
            "\nMMS Allen-Cahn + BV, alpha=0.3, n=2, L=0.7, L_eta=1.7, E_eq=0.15: "
            + ", ".join(f"N={n} e={e:.3e}" for n, e in zip(SIZES, errors))
            + "; rates "
            + " ".join(f"{r:.3f}" for r in rates),
            flush=True,
        )
    assert all(math.isfinite(e) and e > 0 for e in errors), errors
    assert abs(rates[-1] - 2.0) < RATE_TOL, (rates, errors)


# 2. The same MMS with the mistakes planted through the parameters ------------------------------

MUTANTS = {
    # exp((1-a) n eta_a) - c exp(-a n eta_a) with a -> 1 - a: the same as alpha = 0.7.
    "alpha <-> 1-alpha": (dict(alpha=1 - ALPHA), None),
    # n^2 in place of n in both exponents: with n = 2 that is electrons = 4.
    "n^2 for n": (dict(electrons=ELECTRONS**2), None),
    # -(g' + dpsi/deta) without L in the local rate; the gradient term keeps L.
    "mobility dropped": ({}, dict(mobility=1.0)),
}


@pytest.mark.parametrize("mistake", list(MUTANTS))
def test_allen_cahn_mms_detects_parameter_mistakes(mistake):
    """The MMS of test 1 fails for each mistake: forms get the mutated kinetics, the source
    keeps the correct ones. At N = 16 and 32 the error must be > 20x the correct solution's
    error at N = 32 and its observed rate < 1 (the correct rate is 2). A mutant for which
    SNES fails counts as detected too (test 1 asserts convergence), recorded as error inf.

    This is the proof that test 1 would catch alpha <-> 1-alpha, n^2 for n and a dropped
    mobility in forms.allen_cahn_local_rate / butler_volmer, which with the old parameters
    (alpha = 0.5, n = 1, L = 1) were invisible.
    """
    changes, local_changes = MUTANTS[mistake]
    sizes = (16, 32)
    p_forms = parameters(**changes)
    local_p = parameters(**local_changes) if local_changes is not None else None
    errors = [solve_mms(n, p_forms, local_p, must_converge=False) for n in sizes]
    correct = solve_mms(32, parameters())
    rate = rates_of(errors, sizes)[0] if math.isfinite(errors[1]) else -math.inf
    if COMM.rank == 0:
        print(
            f"\nmutant '{mistake}': errors N=16 {errors[0]:.3e}, N=32 {errors[1]:.3e}, "
            f"rate {rate:.3f}; correct error at N=32 {correct:.3e} "
            f"(ratio {errors[1] / correct:.1f})",
            flush=True,
        )
    assert errors[1] > 20.0 * correct, (errors, correct)
    assert rate < 1.0, (rate, errors)


# 3. Pointwise rate against a hand-written expression ------------------------------------------

POINTS = [  # (eta, c, phi, dpsi/deta): cathodic and anodic overpotentials, c != 1
    (0.30, 0.80, -0.40, 0.20),
    (0.65, 1.30, 0.55, -0.10),
    (0.45, 0.50, -1.10, 0.00),
    (0.20, 1.70, 0.05, 0.35),
]


def local_rate_by_hand(eta, c, phi, mech, mobility=MOBILITY, alpha=ALPHA, n_exp=ELECTRONS):
    """-L [2 eta (1-eta)(1-2 eta) + mech] - L_eta 30 eta^2 (1-eta)^2
    [exp((1-alpha) n (phi-E_eq)) - c exp(-alpha n (phi-E_eq))], plain floats."""
    g1 = 2 * eta * (1 - eta) * (1 - 2 * eta)
    h1 = 30 * eta**2 * (1 - eta) ** 2
    ea = phi - E_EQ
    bv = math.exp((1 - alpha) * n_exp * ea) - c * math.exp(-alpha * n_exp * ea)
    return -mobility * (g1 + mech) - REACTION * h1 * bv


def test_local_rate_pointwise():
    """forms.allen_cahn_local_rate (UFL, evaluated with Constants on a 1-cell-per-rank unit
    square: integral over area 1 = the value) equals the hand formula to 1e-12 relative at
    four (eta, c, phi, dpsi/deta) points; and each mutated hand formula (alpha <-> 1-alpha,
    n^2 for n, L dropped) differs from the correct one there by more than 5 %, at least at
    one point, and by more than 1e-3 relative at every point with eta_a != 0.

    Catches in forms.py: any of the three mistakes (off by >= 5 % vs a 1e-12 tolerance),
    E_eq ignored, c on the wrong exponential, the wrong sign of the BV or mechanical term.
    """
    msh = dmesh.create_unit_square(COMM, 2, 2)
    consts = [fem.Constant(msh, 0.0) for _ in range(4)]
    eta, c, phi, mech = consts
    expr = forms.allen_cahn_local_rate(eta, c, phi, mech, parameters())
    form = fem.form(expr * ufl.dx(domain=msh))
    worst = 0.0
    margins = {"alpha <-> 1-alpha": [], "n^2 for n": [], "mobility dropped": []}
    for point in POINTS:
        for const, value in zip(consts, point):
            const.value = value
        value = COMM.allreduce(fem.assemble_scalar(form), op=MPI.SUM)
        exact = local_rate_by_hand(*point)
        worst = max(worst, abs(value - exact) / abs(exact))
        mutated = {
            "alpha <-> 1-alpha": local_rate_by_hand(*point, alpha=1 - ALPHA),
            "n^2 for n": local_rate_by_hand(*point, n_exp=ELECTRONS**2),
            "mobility dropped": local_rate_by_hand(*point, mobility=1.0),
        }
        for name, m in mutated.items():
            margins[name].append(abs(m - exact) / abs(exact))
        assert math.isclose(value, exact, rel_tol=1e-12), (point, value, exact)
    if COMM.rank == 0:
        print(
            f"\nlocal rate: worst rel. deviation from hand formula {worst:.1e}; mutant margins "
            + "; ".join(f"{k}: " + " ".join(f"{m:.2f}" for m in v) for k, v in margins.items()),
            flush=True,
        )
    for name, rel in margins.items():
        assert max(rel) > 0.05, (name, rel)
        assert min(rel) > 1e-3, (name, rel)


def test_degenerate_parameters_hide_the_mistakes():
    """The reason for this file: at alpha = 0.5, n = 1, L = 1 the three mutated hand
    formulas coincide with the correct one (to round-off) at the same points. If this ever
    fails, the hand formula above no longer expresses the mistakes it claims to."""
    for eta, c, phi, mech in POINTS:

        def rate(mobility, alpha, n_exp):
            return local_rate_by_hand(eta, c, phi, mech, mobility=mobility, alpha=alpha, n_exp=n_exp)

        correct = rate(1.0, 0.5, 1)
        for mutant in (rate(1.0, 1 - 0.5, 1), rate(1.0, 0.5, 1**2), rate(1.0, 0.5, 1)):
            assert math.isclose(mutant, correct, rel_tol=1e-14, abs_tol=1e-14)
    assert np.isfinite(correct)
