"""MMS of the consistent model: bounded kinetics with two potentials, at NON-degenerate parameters.

What is verified
    The five-field residual that ``CoupledProblem._build_forms`` assembles when
    ``phase_field.kinetics = "bounded"`` and ``electrochemistry.potentials = "two"`` (without
    mechanics), built here from the same ``nzsp_fem.physics.forms`` functions in the same way:
    ``supply_limited_rate``, ``lumped_phase_residual``, ``driving_force_residual``,
    ``nernst_planck_flux``/``nernst_planck_residual`` (lumped storage, lumped tested sink),
    ``charge_residual`` (ionic with +Q, electronic with -Q) and ``electronic_anchor``, on a
    mixed P1 space (eta, mu, c, phi_i, phi_e) of the unit square, N = 8, 16, 32, 64. For every
    field the L2 rate of the finest pair must be 2 within 0.1.

Parameters
    alpha = 0.3, n = 2, L = 0.7, L_eta = 1.3, E_eq = 0.15, gradient 0.05, site ratio 9.71,
    Q = 2.5, anchor 0.8, a smooth grain-boundary band beta(x), ionic conductivities
    (metal floor, SE, GB) = (0.05, 1, 0.3) and electronic ones (Na, SE, GB) = (20, 0.02, 0.2)
    mixed "metal-first", diffusivities (0.1, 1, 3) mixed by the paper's rule. With the usual
    alpha = 0.5, n = 1, L = 1 swapping alpha <-> 1 - alpha, writing n^2 for n or dropping L
    cannot change a residual; here each of them does (``test_..._detects_mistakes``).

Strong form (scaled, potentials in RT/F), written in this file independently of forms.py
    mu       = g'(eta) - k div(kappa grad eta)                  (k = gradient, kappa = 1 or
                                                                  the 2D anisotropy, atan2)
    d eta/dt = r = -L [mu^+ + c mu^-] - L_eta h'(eta) [exp((1-a) n e) - c exp(-a n e)],
               e = phi_e - phi_i - E_eq, mu^+- = (mu +- |mu|)/2, |mu| ~ mu^2/sqrt(mu^2 + w^2)
    dc/dt    = div(D (grad c + n c grad phi_i)) - S r
    div(sigma_i grad phi_i) = Q r
    div(sigma_e grad phi_e) = -Q r + eps (1 - h(eta))^2 e
    g = eta^2 (1-eta)^2, h = eta^3 (6 eta^2 - 15 eta + 10); g', h' by ufl.diff.

    The exact mu is *defined* by the first line (from the exact eta), so the mu equation has
    no source at all. Every other source is the strong residual of the exact fields with
    (u(T1) - u(T0))/DT for du/dt (one backward-Euler step from the exact old state, as in
    tests/test_mms.py). The c, phi_i and phi_e sources are tested with v dx at quadrature
    degree 4, i.e. NOT lumped like the forms' storage/sink terms (that lumping error is
    O(h^2) and part of what is measured). The eta equation is, with vertex quadrature, a
    nodal ODE: its source is collocated with the same vertex rule (see solve_mms).

    Exact fields are smooth and time dependent. At T1: eta in [0.22, 0.79] (isotropic) or
    [0.42, 0.90] (anisotropic front), so the clamping of h is inactive; c in [0.44, 1.56];
    n e in [-1.9, 0.37] (cathodic and anodic); mu changes sign (48 % / 94 % of the square
    has mu < 0), so both supply branches are active; sigma_e spans [1.4, 18.7] and sigma_i
    [0.08, 0.93] (isotropic case).
    Newton (newtonls + bt, MUMPS) starts from the exact old state; dirichlet = exact on the
    whole boundary; errors against the exact UFL fields at degree 8, allreduce'd (works
    serially and under mpirun -n 2).

DT = 0.1, as in tests/test_kinetics_parameters.py: the lumped, nodal eta equation is
1/dt - dr/deta at every vertex, and here dr/deta spans [-9.4, 9.1] (isotropic) and
[-8.1, 3.9] (anisotropic) at T1, so 1/dt = 10 keeps it positive everywhere. (Measured: DT =
0.2 still converges to the exact solution from the old state, but without that margin.)

Measured (``pytest -s``, serial; identical under mpirun -n 2), L2 error at N = 8/16/32/64,
rate of the finest pair:
    isotropic    eta 5.91e-3 .. 9.52e-5 (1.998)   mu 5.72e-3 .. 1.09e-4 (1.983)
                 c   1.33e-2 .. 2.20e-4 (1.995)   phi_i 6.40e-3 .. 1.10e-4 (1.990)
                 phi_e 6.18e-3 .. 9.89e-5 (1.998)
    anisotropic  eta 1.21e-3 .. 2.00e-5 (1.995)   mu 2.80e-3 .. 5.59e-5 (1.980)
                 c   1.30e-2 .. 2.13e-4 (1.997)   phi_i 6.97e-3 .. 1.19e-4 (1.994)
                 phi_e 6.42e-3 .. 1.02e-4 (1.999)
Mutants at N = 32 (error / correct error, worst field mu with rate < 0 on 16 -> 32):
alpha <-> 1-alpha eta 137x, mu 834x; n^2 for n eta 192x, mu 1029x; L dropped mu 15x.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from mms_support import g_model, h_model, l2_error, rates_of, slope, snes_options

from mpi4py import MPI

import basix.ufl
import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.physics import forms
from nzsp_fem.physics.materials import PhaseValues, mix
from nzsp_fem.solver.snes import SNESProblem

COMM = MPI.COMM_WORLD
PI = math.pi
SIZES = (8, 16, 32, 64)
RATE_TOL = 0.1
Q_SOLVE, Q_ERROR = 4, 8
T0, DT = 0.3, 0.1
T1 = T0 + DT

# Non-degenerate parameters (scaled). The strong form below uses these module constants,
# never the AllenCahnParameters fields.
MOBILITY = 0.7
GRADIENT = 0.05
REACTION = 1.3
ALPHA = 0.3
ELECTRONS = 2
E_EQ = 0.15
SMOOTHING = 1e-3  # forms.supply_limited_rate's default w
SITE_RATIO = 9.71
CHARGE = 2.5
ANCHOR = 0.8
IONIC = PhaseValues(0.05, 1.0, 0.3)  # metal floor, SE, GB
ELECTRONIC = PhaseValues(20.0, 0.02, 0.2)  # Na, SE, GB
DIFFUSIVITY = PhaseValues(0.1, 1.0, 3.0)
ANISOTROPY = (0.05, 4, 0.3, 0.05)  # delta, omega, theta0, floor

NAMES = ("eta", "mu", "c", "phi_i", "phi_e")


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


# Strong form, transcribed independently of forms.py ----------------------------------------


def kappa_model(grad_eta, anisotropic):
    """1, or 1 + delta f cos(omega (theta - theta0)) with theta = atan2 and the fade
    f = (|grad eta|^2 / (|grad eta|^2 + floor^2))^(omega/2) documented by anisotropy_factor."""
    if not anisotropic:
        return 1.0
    strength, mode, angle, floor = ANISOTROPY
    g2 = ufl.dot(grad_eta, grad_eta)
    theta = ufl.atan2(grad_eta[1], grad_eta[0])
    return 1 + strength * (g2 / (g2 + floor**2)) ** (mode / 2) * ufl.cos(mode * (theta - angle))


def mu_model(eta, anisotropic):
    """mu = g'(eta) - k div(kappa grad eta) (in units of W)."""
    return slope(g_model, eta) - ufl.div(GRADIENT * kappa_model(ufl.grad(eta), anisotropic) * ufl.grad(eta))


def rate_model(eta, mu, c, phi_i, phi_e, alpha=ALPHA, electrons=ELECTRONS):
    """d eta/dt = -L [mu^+ + c mu^-] - L_eta h'(eta) [exp((1-a) n e) - c exp(-a n e)]."""
    mu_abs = mu**2 / ufl.sqrt(mu**2 + SMOOTHING**2)
    mu_plus, mu_minus = 0.5 * (mu + mu_abs), 0.5 * (mu - mu_abs)
    e = phi_e - phi_i - E_EQ
    bv = ufl.exp((1 - alpha) * electrons * e) - c * ufl.exp(-alpha * electrons * e)
    return -MOBILITY * (mu_plus + c * mu_minus) - REACTION * slope(h_model, eta) * bv


# Manufactured fields ---------------------------------------------------------------------------


def eta_field(x, t):
    """In [0.15, 0.85]; mu = g' - k lap(eta) then changes sign inside the square."""
    return 0.5 + 0.35 * ufl.sin(1.3 * PI * x[0] + 0.4) * ufl.cos(0.9 * PI * x[1]) * math.exp(-0.5 * t)


def eta_radial(x, t):
    """Curved front for the anisotropic case: |grad eta| >= 0.25, normal angle sweeps ~60
    degrees, eta in [0.42, 0.9] (test_mms.py's field)."""
    r = ufl.sqrt((x[0] + 0.3) ** 2 + (x[1] + 0.4) ** 2)
    return 0.9 - (0.25 + 0.05 * t) * (r - 0.5) - 0.05 * (r - 0.5) ** 2


def c_field(x, t):
    return 1.0 + 0.4 * (1 + t) * ufl.cos(1.1 * PI * x[0]) * ufl.sin(PI * x[1] + 0.3)


def phi_i_field(x, t):
    return -0.6 + 0.5 * x[0] + 0.3 * (1 - 0.5 * t) * ufl.sin(1.2 * PI * x[1]) * ufl.cos(0.7 * PI * x[0])


def phi_e_field(x, t):
    """phi_e - phi_i - E_eq in about [-0.95, 0.2]: cathodic and anodic, n |e| < 2."""
    return -0.75 + 0.3 * x[1] + 0.25 * (1 + t) * ufl.cos(1.1 * PI * x[0] + 0.2) * ufl.sin(0.8 * PI * x[1] + 0.5)


def beta_field(x):
    """A smooth grain-boundary band around x = 0.6."""
    return ufl.exp(-(((x[0] - 0.6 - 0.2 * x[1]) / 0.25) ** 2))


def exact_state(x, t, anisotropic):
    eta = (eta_radial if anisotropic else eta_field)(x, t)
    return (eta, mu_model(eta, anisotropic), c_field(x, t), phi_i_field(x, t), phi_e_field(x, t))


# Helpers ---------------------------------------------------------------------------------------


def interpolate(V, expr):
    f = fem.Function(V)
    f.interpolate(fem.Expression(expr, V.element.interpolation_points()))
    return f


def solve_mms(n, p_forms, anisotropic=False, must_converge=True):
    """One backward-Euler step of the five-field MMS on an n x n mesh.

    ``p_forms`` go to forms.py; the sources always use the module constants. Returns
    {field: L2 error} (all inf if SNES fails and ``must_converge`` is False).
    """
    msh = dmesh.create_unit_square(COMM, n, n)
    x = ufl.SpatialCoordinate(msh)
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": Q_SOLVE})
    dxl = ufl.Measure("dx", msh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
    P1 = basix.ufl.element("Lagrange", msh.basix_cell(), 1)
    W = fem.functionspace(msh, basix.ufl.mixed_element([P1] * 5))
    w = fem.Function(W)
    eta, mu, c, phi_i, phi_e = ufl.split(w)
    v_eta, v_mu, v_c, v_i, v_e = ufl.TestFunctions(W)
    beta = beta_field(x)

    exact1 = exact_state(x, T1, anisotropic)
    exact0 = exact_state(x, T0, anisotropic)
    eta1, mu1, c1, phi_i1, phi_e1 = exact1
    eta0, _, c0, _, _ = exact0

    # The residual of CoupledProblem._build_forms (bounded, two potentials, no mechanics).
    if anisotropic:
        strength, mode, angle, floor = ANISOTROPY
        kappa = forms.anisotropy_factor(ufl.grad(eta), 2, strength, mode, angle, floor)
    else:
        kappa = forms.anisotropy_factor(ufl.grad(eta), 2, 0.0, 4, 0.0, 0.05)
    p = p_forms
    local_rate = forms.supply_limited_rate(eta, mu, c, phi_e - phi_i, p)

    def rate(v):
        return local_rate * v * dxl

    F = forms.lumped_phase_residual(eta, eta0, DT, v_eta, local_rate, dxl)
    F += forms.driving_force_residual(mu, eta, 0.0, v_mu, p, kappa, dx, dxl)
    D = mix(DIFFUSIVITY, eta, beta)
    flux = forms.nernst_planck_flux(c, ufl.grad(c), ufl.grad(phi_i), D, ELECTRONS)
    F += forms.nernst_planck_residual(c, c0, DT, flux, v_c, rate(v_c), SITE_RATIO, dx, dxl)
    sigma_i = mix(IONIC, eta, beta, "metal-first")
    sigma_e = mix(ELECTRONIC, eta, beta, "metal-first")
    F += forms.charge_residual(phi_i, sigma_i, v_i, rate(v_i), CHARGE, dx)
    overpotential = phi_e - phi_i - p.equilibrium_potential
    F += forms.charge_residual(phi_e, sigma_e, v_e, rate(v_e), -CHARGE, dx)
    F += forms.electronic_anchor(overpotential, eta, v_e, ANCHOR, dxl)

    # Manufactured sources: strong residuals of the exact fields (none for mu, see docstring).
    r1 = rate_model(eta1, mu1, c1, phi_i1, phi_e1)
    D1 = mix(DIFFUSIVITY, eta1, beta)
    sigma_i1 = mix(IONIC, eta1, beta, "metal-first")
    sigma_e1 = mix(ELECTRONIC, eta1, beta, "metal-first")
    e1 = phi_e1 - phi_i1 - E_EQ
    source_eta = (eta1 - eta0) / DT - r1
    source_c = (c1 - c0) / DT - ufl.div(D1 * (ufl.grad(c1) + ELECTRONS * c1 * ufl.grad(phi_i1))) + SITE_RATIO * r1
    source_i = -ufl.div(sigma_i1 * ufl.grad(phi_i1)) + CHARGE * r1
    source_e = -ufl.div(sigma_e1 * ufl.grad(phi_e1)) - CHARGE * r1 + ANCHOR * (1 - h_model(eta1)) ** 2 * e1
    # The eta equation is a nodal (vertex-quadrature) ODE, so its source is collocated at the
    # vertices too; tested with v dx instead, the O(h^2) smooth error M_L^-1 M S - S enters
    # eta and, through k lap_h(eta), mu with a constant ~ 6th derivatives of eta and a jump at
    # the Dirichlet boundary (measured at DT = 0.05: mu rates 1.32, 1.51, 1.71, 1.84 up to N = 128).
    F -= source_eta * v_eta * dxl
    F -= (source_c * v_c + source_i * v_i + source_e * v_e) * dx

    # Dirichlet = exact on the boundary; Newton starts from the exact old state.
    fdim = msh.topology.dim - 1
    msh.topology.create_connectivity(fdim, fdim + 1)
    facets = dmesh.exterior_facet_indices(msh.topology)
    bcs = []
    for i in range(5):
        Vi, dofs_i = W.sub(i).collapse()
        w.x.array[dofs_i] = interpolate(Vi, exact0[i]).x.array
        dofs = fem.locate_dofs_topological((W.sub(i), Vi), fdim, facets)
        bcs.append(fem.dirichletbc(interpolate(Vi, exact1[i]), dofs, W.sub(i)))
    w.x.scatter_forward()

    problem = SNESProblem(F, w, bcs, snes_options())
    report = problem.solve()
    problem.destroy()
    if not report.converged and not must_converge:
        return {name: math.inf for name in NAMES}
    assert report.converged, f"SNES did not converge at N = {n}: {report}"
    return {name: l2_error(u, ex, msh) for name, u, ex in zip(NAMES, ufl.split(w), exact1)}


# 1. Convergence -------------------------------------------------------------------------------


def report_table(title, errors, sizes):
    rates = {name: rates_of(errors[name], sizes) for name in NAMES}
    if COMM.rank == 0:
        lines = [f"\nMMS {title}: L2 errors (rates)"]
        for name in NAMES:
            cells = [f"{errors[name][0]:.3e}"] + [f"{e:.3e} ({r:5.3f})" for e, r in zip(errors[name][1:], rates[name])]
            lines.append(f"  {name:6s} " + "  ".join(cells))
        print("\n".join(lines), flush=True)
    return rates


@pytest.mark.parametrize("anisotropic", [False, True], ids=["isotropic", "anisotropic"])
def test_bounded_two_potentials_mms(anisotropic):
    """P1 rate 2 (within 0.1, finest pair) for eta, mu, c, phi_i and phi_e."""
    runs = [solve_mms(n, parameters(), anisotropic) for n in SIZES]
    errors = {name: [run[name] for run in runs] for name in NAMES}
    rates = report_table(f"bounded + two potentials ({'anisotropic' if anisotropic else 'isotropic'})", errors, SIZES)
    for name in NAMES:
        assert all(math.isfinite(e) and e > 0 for e in errors[name]), (name, errors[name])
        assert abs(rates[name][-1] - 2.0) < RATE_TOL, (name, rates[name], errors[name])


# 2. Teeth: the same MMS with kinetics mistakes planted through the parameters ---------------

MUTANTS = {
    # exp((1-a) n e) - c exp(-a n e) with a -> 1 - a: the same as alpha = 0.7.
    "alpha <-> 1-alpha": dict(alpha=1 - ALPHA),
    # n^2 in place of n in both exponents: with n = 2 that is electrons = 4.
    "n^2 for n": dict(electrons=ELECTRONS**2),
    # -[mu^+ + c mu^-] without L: the same as L = 1.
    "mobility dropped": dict(mobility=1.0),
}


@pytest.mark.parametrize("mistake", list(MUTANTS))
def test_bounded_two_potentials_mms_detects_mistakes(mistake):
    """forms get the mutated kinetics, the sources keep the right ones (isotropic case).

    On N = 16, 32 the worst field (largest error ratio to the correct solution at N = 32)
    must be > 10x off and its observed rate < 1, where the correct one is 2: test 1 would
    fail. SNES failure counts as detected (test 1 asserts convergence).
    """
    sizes = (16, 32)
    runs = [solve_mms(n, parameters(**MUTANTS[mistake]), must_converge=False) for n in sizes]
    correct = solve_mms(32, parameters())
    if not all(math.isfinite(e) for e in runs[1].values()):
        return
    ratios = {name: runs[1][name] / correct[name] for name in NAMES}
    worst = max(ratios, key=ratios.get)
    rate = rates_of([runs[0][worst], runs[1][worst]], sizes)[0]
    if COMM.rank == 0:
        print(
            f"\nmutant '{mistake}': error ratio to the correct one at N=32: "
            + ", ".join(f"{name} {ratios[name]:.1f}x" for name in NAMES)
            + f"; worst {worst}: N=16 {runs[0][worst]:.3e}, N=32 {runs[1][worst]:.3e}, rate {rate:.3f}",
            flush=True,
        )
    assert ratios[worst] > 10.0, (ratios, runs, correct)
    assert rate < 1.0, (worst, rate, runs)
