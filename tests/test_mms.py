"""Method of manufactured solutions (MMS) for the weak forms of ``nzsp_fem.forms``.

What is verified
    The residual functions of ``nzsp_fem.forms``, the ones the coupled solver assembles,
    discretised with P1 Lagrange on the unit square (N = 8, 16, 32, 64), must converge to a
    manufactured exact solution at the optimal L2 rate: ``abs(rate - 2) < 0.1`` on the finest
    pair of meshes. Errors and rates are printed (``pytest -s``).

How the sources are made
    The exact fields are UFL expressions of ``ufl.SpatialCoordinate``. Each source is the
    strong-form residual of the exact fields, written in this file from docs/model.md
    (scaled units, potentials in units of RT/F) with ``ufl.div``/``ufl.grad``, with g'(eta)
    and h'(eta) obtained by ``ufl.diff`` of g and h as docs/model.md prints them and kappa(theta)
    from ``ufl.atan2``. The sources are *not* built from forms.py's expressions, so a wrong
    sign, factor or derivative there stops convergence instead of being copied into the
    source. ``materials.mix`` gives the coefficients on both sides: it is data, not under test.

Time
    The forms are backward Euler. Every case is one step from a given old state
    ``u_old = u(x, T0)`` to the exact ``u(x, T0 + DT)``; its source contains the difference
    quotient ``(u(x, T0 + DT) - u_old) / DT`` in place of du/dt. The discrete time derivative
    is then exact and only the spatial error is measured, while the storage terms, their
    1/dt and the old state still enter the forms as in the solver.

Boundary conditions and norms
    Dirichlet data = exact solution on the whole boundary. Residuals use quadrature degree
    Q_SOLVE = 4, errors ``||u_h - u||_L2`` integrate against the exact UFL expression with
    degree Q_ERROR = 8. Meshes live on MPI.COMM_WORLD and norms are allreduce'd, so every test
    is collective and runs serially and under ``mpirun -n 2``.

The last test (a 1D-like strip) checks the equilibrium interface of the Allen-Cahn equation
against the analytic tanh profile and the width ``Scaling.interface_width``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from mms_support import g_model, h_model, slope, snes_options

from mpi4py import MPI

import basix.ufl
import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.config import Config
from nzsp_fem.physics import forms
from nzsp_fem.physics.materials import PhaseValues, mix
from nzsp_fem.physics.scaling import Scaling
from nzsp_fem.solver.snes import SNESProblem

COMM = MPI.COMM_WORLD
SIZES = (8, 16, 32, 64)
RATE_TOL = 0.1
Q_SOLVE = 4
Q_ERROR = 8
T0, DT = 0.3, 0.2
T1 = T0 + DT
PI = math.pi
SITE_RATIO = 9.71  # c_m / c0 of Table 1
ELECTRONS = 1


# Helpers ----------------------------------------------------------------------------------


def unit_square(n):
    return dmesh.create_unit_square(COMM, n, n)


def measure(msh, degree):
    return ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": degree})


def p1(msh):
    return fem.functionspace(msh, ("Lagrange", 1))


def interpolate(V, expr):
    f = fem.Function(V)
    f.interpolate(fem.Expression(expr, V.element.interpolation_points()))
    return f


def boundary_facets(msh):
    fdim = msh.topology.dim - 1
    msh.topology.create_connectivity(fdim, fdim + 1)
    return dmesh.exterior_facet_indices(msh.topology)


def exact_bc(V, expr):
    """Dirichlet bc u = expr on the whole boundary of a scalar space."""
    dofs = fem.locate_dofs_topological(V, V.mesh.topology.dim - 1, boundary_facets(V.mesh))
    return fem.dirichletbc(interpolate(V, expr), dofs)


def exact_bcs_mixed(W, exprs):
    """One Dirichlet bc per sub-space of a mixed space, each equal to its exact field."""
    msh = W.mesh
    facets = boundary_facets(msh)
    bcs = []
    for i, expr in enumerate(exprs):
        Vi, _ = W.sub(i).collapse()
        dofs = fem.locate_dofs_topological((W.sub(i), Vi), msh.topology.dim - 1, facets)
        bcs.append(fem.dirichletbc(interpolate(Vi, expr), dofs, W.sub(i)))
    return bcs


def l2_error(approx, exact, msh):
    local = fem.assemble_scalar(fem.form((approx - exact) ** 2 * measure(msh, Q_ERROR)))
    return math.sqrt(COMM.allreduce(local, op=MPI.SUM))


def solve(F, u, bcs, **overrides):
    problem = SNESProblem(F, u, bcs, snes_options(**overrides))
    report = problem.solve()
    problem.destroy()
    assert report.converged, f"SNES did not converge: {report}"
    return report


def rates_of(errors):
    return [math.log(errors[i] / errors[i + 1]) / math.log(SIZES[i + 1] / SIZES[i]) for i in range(len(errors) - 1)]


def check_rates(name, errors):
    """Print the error table; assert the rate of the finest pair is 2 within RATE_TOL."""
    rates = rates_of(errors)
    if COMM.rank == 0:
        lines = [f"\nMMS {name}: L2 errors and rates"]
        for i, n in enumerate(SIZES):
            rate = f"{rates[i - 1]:6.3f}" if i > 0 else "     -"
            lines.append(f"  N={n:3d}  error={errors[i]:.4e}  rate={rate}")
        print("\n".join(lines), flush=True)
    assert all(e > 0 and math.isfinite(e) for e in errors), errors
    assert abs(rates[-1] - 2.0) < RATE_TOL, f"{name}: rates {rates}, errors {errors}"
    return rates


# Strong forms, transcribed from docs/model.md (independently of forms.py) -----------------


def butler_volmer_model(c, phi, p):
    """I_BV / (L_eta h') = exp((1-alpha) n f eta_a) - c exp(-alpha n f eta_a), f = 1 scaled."""
    eta_a = phi - p.equilibrium_potential
    return ufl.exp((1 - p.alpha) * p.electrons * eta_a) - c * ufl.exp(-p.alpha * p.electrons * eta_a)


def local_rate_model(eta, c, phi, mech, p):
    """d eta/dt without the gradient term: -L [g' + dpsi_e/deta] - L_eta h'(eta) BV (scaled)."""
    return -p.mobility * (slope(g_model, eta) + mech) - p.reaction * slope(h_model, eta) * butler_volmer_model(
        c, phi, p
    )


def kappa_model(grad_eta, strength, mode, angle, floor):
    """kappa/kappa0 = 1 + delta cos(omega (theta - theta0)), theta = atan2(eta_y, eta_x),
    faded by (|grad eta|^2 / (|grad eta|^2 + floor^2))^(omega/2), the regularisation that
    forms.anisotropy_factor documents (1 for floor = 0, docs/model.md's kappa)."""
    if strength == 0.0:
        return 1.0
    g2 = ufl.dot(grad_eta, grad_eta)
    theta = ufl.atan2(grad_eta[1], grad_eta[0])
    fade = (g2 / (g2 + floor**2)) ** (mode / 2)
    return 1 + strength * fade * ufl.cos(mode * (theta - angle))


def rate_model(eta, c, phi, mech, kappa, p):
    """d eta/dt = local rate + L div(kappa grad eta) (docs/model.md eq. 1, scaled)."""
    return local_rate_model(eta, c, phi, mech, p) + p.mobility * ufl.div(p.gradient * kappa * ufl.grad(eta))


def allen_cahn_source(eta1, eta0, c, phi, mech, kappa, p):
    """(eta - eta_old)/dt - d eta/dt of the exact fields."""
    return (eta1 - eta0) / DT - rate_model(eta1, c, phi, mech, kappa, p)


def nernst_planck_source(c1, c0, phi, D, sink):
    """(c - c_old)/dt - div(D grad c + D c n grad phi) + (c_m/c0) sink of the exact fields."""
    return (c1 - c0) / DT - ufl.div(D * (ufl.grad(c1) + ELECTRONS * c1 * ufl.grad(phi))) + SITE_RATIO * sink


def charge_source_model(phi, sigma, rate, charge_source):
    """-div(sigma grad phi) + n F c_m d eta/dt (scaled) of the exact fields."""
    return -ufl.div(sigma * ufl.grad(phi)) + charge_source * rate


# Manufactured fields (x: SpatialCoordinate, t: float) -----------------------------------------


def eta_field(x, t):
    """In [0.15, 0.85]: h'(eta) and g'(eta) are far from zero, the BV term is active."""
    return 0.5 + 0.35 * ufl.sin(1.3 * PI * x[0] + 0.4) * ufl.cos(0.9 * PI * x[1]) * math.exp(-0.5 * t)


def eta_radial(x, t):
    """A curved front: grad eta = f'(r) r_hat with r measured from (-0.3, -0.4), so the
    normal angle sweeps about 60 degrees over the square and |grad eta| >= 0.25."""
    r = ufl.sqrt((x[0] + 0.3) ** 2 + (x[1] + 0.4) ** 2)
    return 0.9 - (0.25 + 0.05 * t) * (r - 0.5) - 0.05 * (r - 0.5) ** 2


def c_field(x, t):
    """Positive concentration (c0 units), >= 0.5."""
    return 1.0 + 0.4 * (1 + t) * ufl.cos(1.1 * PI * x[0]) * ufl.sin(PI * x[1] + 0.3)


def mu_field(x, t):
    """Log-concentration ln c."""
    return 0.3 * (1 + t) * ufl.sin(PI * x[0] + 0.2) * ufl.cos(1.2 * PI * x[1]) - 0.2 * x[0] * x[1]


def phi_field(x, t):
    """Potential in RT/F units, about -0.9 .. 0.2."""
    return -0.6 + 0.5 * x[0] + 0.3 * (1 - 0.5 * t) * ufl.sin(1.2 * PI * x[1]) * ufl.cos(0.7 * PI * x[0])


def beta_field(x):
    """A smooth grain-boundary band around x = 0.6."""
    return ufl.exp(-(((x[0] - 0.6 - 0.2 * x[1]) / 0.25) ** 2))


def ac_parameters(reaction=2.0):
    return forms.AllenCahnParameters(
        mobility=1.0, gradient=0.1, reaction=reaction, alpha=0.5, electrons=ELECTRONS, equilibrium_potential=0.1
    )


# 1. Nernst-Planck with a given potential --------------------------------------------------


@pytest.mark.parametrize("unknown", ["c", "ln c"])
def test_nernst_planck(unknown):
    """Diffusion-migration with variable D, a given potential and a given deposition sink.

    Unknown c, or the log-concentration mu = ln c as the solver uses it (c = exp(mu),
    grad_c = c grad(mu)). One backward-Euler step; forms.nernst_planck_flux and
    forms.nernst_planck_residual against docs/model.md eq. 4:
    dc/dt = div(D grad c + D c n grad phi) - (c_m/c0) sink.
    """
    errors, c_errors = [], []
    for n in SIZES:
        msh = unit_square(n)
        x = ufl.SpatialCoordinate(msh)
        dx = measure(msh, Q_SOLVE)
        V = p1(msh)
        v = ufl.TestFunction(V)
        phi = phi_field(x, T1)
        D = 1.0 + 0.5 * ufl.sin(PI * x[0]) * ufl.cos(0.5 * PI * x[1])
        sink = 0.2 * ufl.cos(PI * x[0] * x[1]) - 0.1
        u = fem.Function(V)
        if unknown == "c":
            u_exact, c0 = c_field(x, T1), c_field(x, T0)
            c1, c, grad_c = u_exact, u, ufl.grad(u)
            u.x.array[:] = 1.0
        else:
            u_exact = mu_field(x, T1)
            c0, c1 = ufl.exp(mu_field(x, T0)), ufl.exp(u_exact)
            c = ufl.exp(u)
            grad_c = c * ufl.grad(u)
            u.x.array[:] = 0.0
        flux = forms.nernst_planck_flux(c, grad_c, ufl.grad(phi), D, ELECTRONS)
        F = forms.nernst_planck_residual(c, c0, DT, flux, v, sink, SITE_RATIO, dx)
        F -= nernst_planck_source(c1, c0, phi, D, sink) * v * dx
        solve(F, u, [exact_bc(V, u_exact)])
        errors.append(l2_error(u, u_exact, msh))
        c_errors.append(l2_error(c, c1, msh))
    check_rates(f"Nernst-Planck, unknown {unknown}", errors)
    if unknown == "ln c":
        check_rates("Nernst-Planck, c = exp(mu)", c_errors)


# 2. Charge conservation --------------------------------------------------------------------


def test_charge_conservation():
    """div(sigma grad phi) = n F c_m d eta/dt (docs/model.md eq. 5) with a spatially variable sigma
    (contrast 10 through h of a smooth field) and a given deposition rate passed through the
    deposition_rate/charge_source arguments of forms.charge_residual; the remaining part of
    the strong residual enters as an added f v dx."""
    charge_source = 2.5
    errors = []
    for n in SIZES:
        msh = unit_square(n)
        x = ufl.SpatialCoordinate(msh)
        dx = measure(msh, Q_SOLVE)
        V = p1(msh)
        v = ufl.TestFunction(V)
        phi_exact = phi_field(x, T1)
        s = 0.5 + 0.45 * ufl.sin(1.5 * PI * x[0]) * ufl.cos(PI * x[1])
        sigma = 1.0 + 9.0 * h_model(s)
        rate = 0.4 * ufl.sin(2 * PI * x[0] * x[1]) - 0.2
        phi = fem.Function(V)
        F = forms.charge_residual(phi, sigma, v, rate, charge_source, dx)
        F -= charge_source_model(phi_exact, sigma, rate, charge_source) * v * dx
        solve(F, phi, [exact_bc(V, phi_exact)])
        errors.append(l2_error(phi, phi_exact, msh))
    check_rates("charge conservation", errors)


# 3. Allen-Cahn with Butler-Volmer kinetics ----------------------------------------------------


@pytest.mark.parametrize("anisotropy", [None, (0.05, 4, 0.3, 0.05)], ids=["isotropic", "anisotropic"])
def test_allen_cahn(anisotropy):
    """docs/model.md eq. 1 with given c and phi, Butler-Volmer active (reaction = 2,
    E_eq = 0.1) and a given mechanical driving force, solved by Newton.

    One backward-Euler step (dt = 0.2) from eta_old = eta(x, T0) to eta(x, T0 + dt); the source
    holds the difference quotient, so the steady-looking discrete problem has the exact
    eta(x, T0 + dt) as its solution (see module docstring). Uses forms.allen_cahn_local_rate
    and forms.allen_cahn_residual; the anisotropic variant also forms.anisotropy_factor with
    delta = 0.05, omega = 4, theta0 = 0.3 and floor 0.05 on a curved front whose normal angle
    sweeps ~60 degrees (|grad eta| >= 0.25, so atan2 is smooth). The weak d eta/dt comes from
    forms.allen_cahn_rate, as in the solver.
    """
    p = ac_parameters()
    errors = []
    for n in SIZES:
        msh = unit_square(n)
        x = ufl.SpatialCoordinate(msh)
        dx = measure(msh, Q_SOLVE)
        V = p1(msh)
        v = ufl.TestFunction(V)
        field = eta_field if anisotropy is None else eta_radial
        eta_exact, eta_old = field(x, T1), field(x, T0)
        c, phi = c_field(x, T1), phi_field(x, T1)
        mech = 0.3 * ufl.cos(PI * x[0]) * x[1]
        eta = fem.Function(V)
        eta.x.array[:] = 0.5
        if anisotropy is None:
            kappa, kappa_exact = 1.0, 1.0
        else:
            strength, mode, angle, floor = anisotropy
            kappa = forms.anisotropy_factor(ufl.grad(eta), 2, strength, mode, angle, floor)
            kappa_exact = kappa_model(ufl.grad(eta_exact), strength, mode, angle, floor)
        local_rate = forms.allen_cahn_local_rate(eta, c, phi, mech, p)
        rate = forms.allen_cahn_rate(v, eta, local_rate, kappa, p, dx)
        F = forms.allen_cahn_residual(eta, eta_old, DT, v, rate, dx)
        F -= allen_cahn_source(eta_exact, eta_old, c, phi, mech, kappa_exact, p) * v * dx
        solve(F, eta, [exact_bc(V, eta_exact)])
        errors.append(l2_error(eta, eta_exact, msh))
    check_rates(f"Allen-Cahn + Butler-Volmer ({'isotropic' if anisotropy is None else 'anisotropic'})", errors)


# 4. Coupled eta / c / phi --------------------------------------------------------------------


@pytest.mark.parametrize("log_c", [False, True], ids=["c", "ln c"])
def test_coupled(log_c):
    """All three residuals on one mixed P1 space, coupled as nzsp_fem.problem does: the weak
    Allen-Cahn rate (forms.allen_cahn_rate: local rate of the unknowns eta, c, phi plus the
    gradient term), tested with v_c and v_phi, is the sink ``site_ratio * rate`` of
    Nernst-Planck and the source ``charge_source * rate`` of the charge equation;
    D(eta, beta) and sigma(eta, beta) follow materials.mix ("paper" rule) with a smooth
    given GB field beta. Each equation gets its own manufactured source from its strong form;
    there the sink is d eta/dt = local rate + L div(kappa grad eta) of the exact fields,
    written from docs/model.md. The c unknown is c itself or ln c (c = exp(mu)), as the solver's
    log_c option. Rates of every field.
    """
    p = ac_parameters()
    charge_source = 0.5
    diffusivities = PhaseValues(metal=0.2, grain=1.0, grain_boundary=3.0)
    conductivities = PhaseValues(metal=10.0, grain=1.0, grain_boundary=0.3)
    names = ("eta", "ln c" if log_c else "c", "phi")
    errors = {name: [] for name in names}
    for n in SIZES:
        msh = unit_square(n)
        x = ufl.SpatialCoordinate(msh)
        dx = measure(msh, Q_SOLVE)
        P1 = basix.ufl.element("Lagrange", msh.basix_cell(), 1)
        W = fem.functionspace(msh, basix.ufl.mixed_element([P1, P1, P1]))
        w = fem.Function(W)
        v_eta, v_c, v_phi = ufl.TestFunctions(W)
        eta, conc, phi = ufl.split(w)
        beta = beta_field(x)

        eta1, eta0 = eta_field(x, T1), eta_field(x, T0)
        phi1 = phi_field(x, T1)
        if log_c:
            conc1 = mu_field(x, T1)
            c1, c0 = ufl.exp(conc1), ufl.exp(mu_field(x, T0))
            c = ufl.exp(conc)
            grad_c = c * ufl.grad(conc)
            conc_guess = 0.0
        else:
            conc1 = c_field(x, T1)
            c1, c0 = conc1, c_field(x, T0)
            c, grad_c = conc, ufl.grad(conc)
            conc_guess = 1.0

        # The solver's coupled residual (nzsp_fem.problem._build_forms without mechanics):
        # the weak d eta/dt, tested with each equation's test function, is the sink.
        local_rate = forms.allen_cahn_local_rate(eta, c, phi, 0.0, p)

        def rate(v):
            return forms.allen_cahn_rate(v, eta, local_rate, 1.0, p, dx)

        F = forms.allen_cahn_residual(eta, eta0, DT, v_eta, rate(v_eta), dx)
        D = mix(diffusivities, eta, beta)
        flux = forms.nernst_planck_flux(c, grad_c, ufl.grad(phi), D, ELECTRONS)
        F += forms.nernst_planck_residual(c, c0, DT, flux, v_c, rate(v_c), SITE_RATIO, dx)
        sigma = mix(conductivities, eta, beta)
        F += forms.charge_residual(phi, sigma, v_phi, rate(v_phi), charge_source, dx)

        # Manufactured sources, one per equation, from the strong forms; the sink is the
        # strong d eta/dt = local rate + L div(kappa grad eta) (without the AC source: the
        # solver's sink is the physical rate, and v_c, v_phi vanish on the boundary).
        rate1 = rate_model(eta1, c1, phi1, 0.0, 1.0, p)
        F -= allen_cahn_source(eta1, eta0, c1, phi1, 0.0, 1.0, p) * v_eta * dx
        F -= nernst_planck_source(c1, c0, phi1, mix(diffusivities, eta1, beta), rate1) * v_c * dx
        F -= charge_source_model(phi1, mix(conductivities, eta1, beta), rate1, charge_source) * v_phi * dx

        for i, value in enumerate((0.5, conc_guess, 0.0)):
            w.sub(i).interpolate(lambda xx, value=value: np.full(xx.shape[1], value))
        solve(F, w, exact_bcs_mixed(W, (eta1, conc1, phi1)))
        for name, approx, exact in zip(names, (eta, conc, phi), (eta1, conc1, phi1)):
            errors[name].append(l2_error(approx, exact, msh))
    for name in names:
        check_rates(f"coupled ({'ln c' if log_c else 'c'} unknown), field {name}", errors[name])


# 5. 1D Allen-Cahn equilibrium: the interface width --------------------------------------------


def test_allen_cahn_equilibrium_width():
    """The flat equilibrium interface of Allen-Cahn has the analytic width of Config.

    Without reaction and mechanics, the 1D equilibrium of docs/model.md eq. 1 is
    g'(eta) = kappa0 eta'' with g = W eta^2 (1 - eta)^2 .
    Multiplying by eta' and integrating from the bulk (eta = 1, eta' = 0) gives
    kappa0 eta'^2 / 2 = g(eta), i.e. eta' = -sqrt(2 W / kappa0) eta (1 - eta), solved by

        eta(x) = 1 / (1 + exp(sqrt(2 W / kappa0) (x - x0))) = 0.5 (1 - tanh((x - x0) / w)),
        w = 2 / sqrt(2 W / kappa0) = sqrt(2 kappa0 / W).

    This w is what Scaling.interface_width holds ("the length of the tanh
    profile"), the length the initial nuclei use (0.5 (1 - tanh((r - R)/w))), and with
    docs/model.md's kappa0 = 1.8e-10 J/m and W = 3.6e6 J/m^3 it is 10 nm. The argument is x/w,
    with no extra sqrt(2), for this double well; eta falls from 0.88 to 0.12 over 2 w.

    Scaled: gradient = kappa0 / (W l0^2), so w / l0 = sqrt(2 gradient). The length unit here is
    l0 = 20 w: the strip [0, 1] x [0, 0.02] spans 20 widths, 10 cells per width in x.
    Starting from a sharp step (eta = 1 left of x = 0.5, 0 right, Dirichlet 1 / 0 at the ends),
    backward Euler with a growing dt runs to equilibrium (max |eta - eta_old| < 1e-10).
    The tanh is fitted by least squares (x0 and w free); w must match within 2 %. The
    integral estimate w = 2 int eta (1 - eta) dx / height (exact for the tanh) is printed.
    """
    from scipy.optimize import curve_fit

    cfg = Config()
    pf = cfg.phase_field
    width_si = Scaling(cfg).interface_width
    assert math.isclose(width_si, math.sqrt(2 * pf.gradient_coefficient / pf.barrier_height))
    l0 = 20.0 * width_si
    gradient = pf.gradient_coefficient / (pf.barrier_height * l0**2)
    width = width_si / l0  # 0.05
    length, height, nx = 1.0, 0.02, 200
    msh = dmesh.create_rectangle(COMM, [np.array([0.0, 0.0]), np.array([length, height])], [nx, 2])
    dx = measure(msh, Q_SOLVE)
    V = p1(msh)
    v = ufl.TestFunction(V)
    p = forms.AllenCahnParameters(mobility=1.0, gradient=gradient, reaction=0.0, alpha=0.5, electrons=ELECTRONS)
    eta, eta_old = fem.Function(V), fem.Function(V)
    mid = 0.5 * length
    eta.interpolate(lambda xx: np.where(np.isclose(xx[0], mid), 0.5, (xx[0] < mid).astype(float)))
    eta_old.x.array[:] = eta.x.array
    dt = fem.Constant(msh, 0.02)
    local_rate = forms.allen_cahn_local_rate(eta, 1.0, 0.0, 0.0, p)
    rate = forms.allen_cahn_rate(v, eta, local_rate, 1.0, p, dx)
    F = forms.allen_cahn_residual(eta, eta_old, dt, v, rate, dx)

    fdim = msh.topology.dim - 1
    left = dmesh.locate_entities_boundary(msh, fdim, lambda xx: np.isclose(xx[0], 0.0))
    right = dmesh.locate_entities_boundary(msh, fdim, lambda xx: np.isclose(xx[0], length))
    bcs = [
        fem.dirichletbc(1.0, fem.locate_dofs_topological(V, fdim, left), V),
        fem.dirichletbc(0.0, fem.locate_dofs_topological(V, fdim, right), V),
    ]
    problem = SNESProblem(F, eta, bcs, snes_options(snes_rtol=1e-12, snes_atol=1e-11))
    change, steps = math.inf, 0
    while change > 1e-10 or float(dt.value) < 100.0:
        report = problem.solve()
        assert report.converged, f"step {steps}, dt = {float(dt.value)}: {report}"
        local = float(np.max(np.abs(eta.x.array - eta_old.x.array), initial=0.0))
        change = COMM.allreduce(local, op=MPI.MAX)
        eta_old.x.array[:] = eta.x.array
        dt.value = min(2.0 * float(dt.value), 1.0e4)
        steps += 1
        assert steps < 60, "no equilibrium"
    problem.destroy()

    owned = V.dofmap.index_map.size_local
    xs = np.concatenate(COMM.allgather(V.tabulate_dof_coordinates()[:owned, 0]))
    values = np.concatenate(COMM.allgather(eta.x.array[:owned].copy()))

    def profile(xx, x0, w):
        return 0.5 * (1.0 - np.tanh((xx - x0) / w))

    (x0_fit, w_fit), _ = curve_fit(profile, xs, values, p0=(mid, 2.0 * width))
    local = fem.assemble_scalar(fem.form(eta * (1 - eta) * measure(msh, Q_ERROR)))
    w_integral = 2.0 * COMM.allreduce(local, op=MPI.SUM) / height
    misfit = float(np.max(np.abs(values - profile(xs, mid, width))))
    error = w_fit / width - 1.0
    if COMM.rank == 0:
        print(
            f"\nAllen-Cahn equilibrium: {steps} steps; analytic w = sqrt(2 kappa0/W) = "
            f"{width_si:.4e} m = {width:.5f} l0; fitted w = {w_fit:.5f} l0 (error {100 * error:+.3f} %), "
            f"x0 = {x0_fit:.5f}; integral w = {w_integral:.5f} l0 "
            f"(error {100 * (w_integral / width - 1):+.3f} %); max |eta - tanh| = {misfit:.2e}",
            flush=True,
        )
    assert abs(error) < 0.02
    assert abs(w_integral / width - 1.0) < 0.02
    assert abs(x0_fit - mid) < 0.01 * width
