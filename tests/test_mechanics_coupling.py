"""Mechanics coupled to the phase field, at the level of the weak forms (issue 12, item 3).

Linear elasticity only (no plasticity), with the package's pieces as the solver combines
them: sigma = elastic_stress(strain3(u) - eigenstrain(eta, Omega), lame(E(eta, beta), nu)),
forms.equilibrium_residual, forms.traction_term, forms.mechanical_driving_force. Every
expected value is a closed form written in this file (hand Lame constants, hand h(eta),
hand mixing), never the code's own output. 2D is plane strain (eps_zz = 0).

Tests
    1. Constrained uniform expansion: eta = 0.7 everywhere, normal displacement 0 on every
       face (so u = 0 is the solution) -> sigma = -K Omega h(eta) I, i.e.
       sigma_m = -E Omega h / (3 (1 - 2 nu)), in 3D and in plane strain (same state),
       P1 and P2 displacement.
    2. Free expansion (plane strain and 3D): stress-free in 3D with u = (Omega/3) h x;
       in plane strain sigma_xx = sigma_yy = 0, sigma_zz = -E Omega h / 3 and
       u_x = (1 + nu)(Omega/3) h x. P1 and P2.
    3. Stack pressure on a block with rollers: sigma_yy = -p, sigma_xx = sigma_zz =
       -p nu / (1 - nu) (uniaxial strain), with and without a uniform expansion, P1 and P2,
       2D and 3D.
    4. forms.mechanical_driving_force (divided by its scale) = d psi/d eta by a central
       difference of psi(eta) = 1/2 sigma : eps_e at fixed total strain, E(eta, beta) by
       either mixing rule.

Meshes on MPI.COMM_WORLD, all integrals allreduce'd: collective-safe under mpirun.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi4py import MPI

import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.physics import forms
from nzsp_fem.physics.elasticity import elastic_stress, lame, strain3
from nzsp_fem.physics.materials import PhaseValues, mix, mix_slope_eta
from nzsp_fem.solver.snes import SNESProblem

COMM = MPI.COMM_WORLD
NU = 0.3
OMEGA = 0.05
# Young's moduli scaled by E_SE: metal 5 GPa, grain 50 GPa, GB 20 GPa (docs/model.md values / 50 GPa)
MODULI = PhaseValues(metal=0.1, grain=1.0, grain_boundary=0.4)
ETA, BETA = 0.7, 0.3


# Hand formulas ------------------------------------------------------------------------------


def h_hand(x):
    return x**3 * (6 * x**2 - 15 * x + 10)


def dh_hand(x):
    return 30 * x**2 * (1 - x) ** 2


def modulus_hand(eta, beta, rule="paper"):
    he, hb = h_hand(eta), h_hand(beta)
    if rule == "paper":
        return hb * 0.4 + (1 - hb) * (he * 0.1 + (1 - he) * 1.0)
    return he * 0.1 + (1 - he) * (hb * 0.4 + (1 - hb) * 1.0)


def lame_hand(E, nu=NU):
    return E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))


# h(0.7) = 0.343 (2.94 - 10.5 + 10) = 0.343 * 2.44 = 0.83692; h(0.3) = 0.027 * 6.04 = 0.16308;
# E = 0.16308 * 0.4 + 0.83692 (0.83692 * 0.1 + 0.16308) = 0.065232 + 0.206528 = 0.27176.
H_ETA = 0.83692
E_ETA = 0.16308 * 0.4 + (1 - 0.16308) * (H_ETA * 0.1 + (1 - H_ETA) * 1.0)


# FE helpers -----------------------------------------------------------------------------------


def snes_options():
    return {
        "snes_type": "newtonls",
        "snes_linesearch_type": "basic",
        "ksp_type": "preonly",
        "pc_type": "lu",
        "pc_factor_mat_solver_type": "mumps",
        "snes_rtol": 1e-12,
        "snes_atol": 1e-14,
        "snes_stol": 0.0,
        "snes_max_it": 5,
    }


def make_mesh(dim, size):
    """Box [0, size[0]] x [0, size[1]] (x [0, size[2]]) with a few cells."""
    if dim == 2:
        return dmesh.create_rectangle(COMM, [np.zeros(2), np.array(size)], [4, 3])
    return dmesh.create_box(COMM, [np.zeros(3), np.array(size)], [2, 2, 2])


def scalar_field(msh, value):
    """A P1 Function with a uniform value (eta, beta are Functions in the solver)."""
    f = fem.Function(fem.functionspace(msh, ("Lagrange", 1)))
    f.x.array[:] = value
    return f


def rollers(V, msh, faces):
    """u . e_c = 0 on the faces x_c = value, faces = [(c, value), ...]."""
    fdim = msh.topology.dim - 1
    bcs = []
    for comp, value in faces:
        facets = dmesh.locate_entities_boundary(msh, fdim, lambda x, c=comp, s=value: np.isclose(x[c], s))
        dofs = fem.locate_dofs_topological(V.sub(comp), fdim, facets)
        bcs.append(fem.dirichletbc(0.0, dofs, V.sub(comp)))
    return bcs


def solve_elastic(msh, degree, eta, beta, bcs_of, pressure=None, top=None):
    """Solve div sigma = 0 with sigma = C(E(eta, beta)) : (eps(u) - (Omega/3) h(eta) I), an
    optional traction_term(pressure) on the face x_1 = top. Returns (u, sigma3)."""
    dim = msh.topology.dim
    V = fem.functionspace(msh, ("Lagrange", degree, (dim,)))
    u, v = fem.Function(V), ufl.TestFunction(V)
    E = mix(MODULI, eta, beta)
    lam, mu = lame(E, NU)
    sigma = elastic_stress(strain3(u) - forms.eigenstrain(eta, OMEGA), lam, mu)
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 4})
    F = forms.equilibrium_residual(sigma, v, dx)
    if pressure is not None:
        fdim = dim - 1
        facets = dmesh.locate_entities_boundary(msh, fdim, lambda x: np.isclose(x[1], top))
        tags = dmesh.meshtags(msh, fdim, facets, np.full(len(facets), 7, dtype=np.int32))
        ds = ufl.Measure("ds", domain=msh, subdomain_data=tags)
        F += forms.traction_term(pressure, v, ufl.FacetNormal(msh), ds(7))
    problem = SNESProblem(F, u, bcs_of(V), snes_options())
    report = problem.solve()
    problem.destroy()
    assert report.converged, report
    return u, sigma


def integrate(expr, msh):
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 4})
    return COMM.allreduce(fem.assemble_scalar(fem.form(expr * dx)), op=MPI.SUM)


def relative_l2(expr, exact, msh):
    """||expr - exact||_L2 / ||exact||_L2 for tensors (Frobenius) or vectors."""
    diff = expr - exact
    return math.sqrt(integrate(ufl.inner(diff, diff), msh) / integrate(ufl.inner(exact, exact), msh))


def as3(diag):
    return ufl.as_tensor([[diag[0], 0.0, 0.0], [0.0, diag[1], 0.0], [0.0, 0.0, diag[2]]])


# 1. Constrained uniform expansion -------------------------------------------------------------


@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("dim", [2, 3])
def test_constrained_expansion(dim, degree):
    """eta = 0.7, beta = 0.3 uniform; normal displacement 0 on every face (3D) / edge
    (plane strain, where eps_zz = 0 too): the total strain is 0 and
        sigma = C : (-(Omega/3) h I) = -(3 lam + 2 mu)(Omega/3) h I = -K Omega h I,
        sigma_m = -E Omega h / (3 (1 - 2 nu)) = -0.27176 * 0.05 * 0.83692 / 1.2 = -9.4769e-3
    with E = mix(0.7, 0.3) = 0.27176 (hand value). Checked: the assembled stress tensor in
    L2 (relative 1e-10) and the mean stress sigma_m = int tr(sigma)/3 / |domain|, and u = 0.

    Catches: eigenstrain Omega h I (not /3; sigma_m 3x too large), eta in place of h(eta)
    (0.7 vs 0.837), a sign error (tension), an expansion missing from sigma_zz in plane
    strain (2D eigenstrain 2x2: sigma_m changes), lam/mu miscoded, E not mixed from eta.
    """
    size = [1.0, 0.8] if dim == 2 else [1.0, 0.8, 0.6]
    msh = make_mesh(dim, size)
    eta, beta = scalar_field(msh, ETA), scalar_field(msh, BETA)

    def bcs_of(V):
        return rollers(V, msh, [(c, s) for c in range(dim) for s in (0.0, size[c])])

    u, sigma = solve_elastic(msh, degree, eta, beta, bcs_of)

    assert abs(h_hand(ETA) - H_ETA) < 1e-14 and abs(E_ETA - 0.27176) < 1e-5
    sigma_m_exact = -E_ETA * OMEGA * H_ETA / (3 * (1 - 2 * NU))
    volume = float(np.prod(size))
    sigma_m = integrate(ufl.tr(sigma) / 3, msh) / volume
    err = relative_l2(sigma, sigma_m_exact * ufl.Identity(3), msh)
    u_norm = math.sqrt(integrate(ufl.inner(u, u), msh))
    if COMM.rank == 0:
        print(
            f"\nconstrained expansion {dim}D P{degree}: sigma_m = {sigma_m:.6e}, closed form "
            f"{sigma_m_exact:.6e}; rel. L2 stress error {err:.1e}; ||u|| = {u_norm:.1e}",
            flush=True,
        )
    assert math.isclose(sigma_m, sigma_m_exact, rel_tol=1e-10)
    assert err < 1e-10
    assert u_norm < 1e-12


# 2. Free expansion ------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("dim", [2, 3])
def test_free_expansion(dim, degree):
    """Same eta, beta; rollers only on x_c = 0 faces, the rest traction-free. a = (Omega/3) h.
    3D: stress-free, u = a x. Plane strain: eps_e = (e - a, e - a, -a) with sigma_xx = 0 gives
    e (2 lam + 2 mu) = a (3 lam + 2 mu), so e = (1 + nu) a and u = (1 + nu) a (x, y); then
    sigma_zz = lam (2e - 3a) - 2 mu a = -E a (Hooke: 0 = eps_zz = sigma_zz / E + a, as the
    in-plane stresses vanish). Here E a = 0.27176 * 0.05 / 3 * 0.83692 = 3.7907e-3.

    Catches: the plane-strain zz eigenstrain missing (then u = a x and sigma_zz = 0),
    a 2D Lame constant (plane stress) in place of plane strain, an expansion of Omega h
    (not /3) in displacement, a sign error of the expansion.
    """
    size = [1.0, 0.8] if dim == 2 else [1.0, 0.8, 0.6]
    msh = make_mesh(dim, size)
    eta, beta = scalar_field(msh, ETA), scalar_field(msh, BETA)

    def bcs_of(V):
        return rollers(V, msh, [(c, 0.0) for c in range(dim)])

    u, sigma = solve_elastic(msh, degree, eta, beta, bcs_of)

    a = OMEGA / 3 * H_ETA
    x = ufl.SpatialCoordinate(msh)
    if dim == 3:
        u_exact = a * x
        stress_scale = E_ETA * a
        stress_err = math.sqrt(integrate(ufl.inner(sigma, sigma), msh) / float(np.prod(size))) / stress_scale
        sigma_zz = 0.0
    else:
        u_exact = (1 + NU) * a * x
        sigma_exact = as3((0.0, 0.0, -E_ETA * a))
        stress_err = relative_l2(sigma, sigma_exact, msh)
        sigma_zz = integrate(sigma[2, 2], msh) / float(np.prod(size))
    u_err = relative_l2(u, u_exact, msh)
    if COMM.rank == 0:
        print(
            f"\nfree expansion {dim}D P{degree}: rel. L2 error u {u_err:.1e}, stress {stress_err:.1e}; "
            f"mean sigma_zz = {sigma_zz:.6e} (closed form {-E_ETA * a if dim == 2 else 0.0:.6e})",
            flush=True,
        )
    assert u_err < 1e-10
    assert stress_err < 1e-10


# 3. Stack pressure ------------------------------------------------------------------------------


@pytest.mark.parametrize("eta_value", [0.0, ETA], ids=["no-expansion", "with-expansion"])
@pytest.mark.parametrize("degree", [1, 2])
@pytest.mark.parametrize("dim", [2, 3])
def test_stack_pressure(dim, degree, eta_value):
    """Block with rollers on x = 0, x = Lx (and z = 0, z = Lz in 3D) and y = 0; stack
    pressure p = 0.02 through forms.traction_term on y = Ly. Uniaxial strain in y: with
    a = (Omega/3) h(eta) (0 without expansion) and M = lam + 2 mu,
        sigma_yy = -p                         (the traction, whatever the expansion)
        eps_yy   = (-p + (3 lam + 2 mu) a) / M
        sigma_xx = sigma_zz = lam (eps_yy - 3 a) - 2 mu a  (= -p nu / (1 - nu) for a = 0).
    E = mix(eta, beta = 0.3): 0.27176 at eta = 0.7, and at eta = 0 h(0.3) 0.4 + (1 - h(0.3))
    = 0.902152. Checks the whole stress tensor (relative L2 1e-10) and u_y = eps_yy y.

    Catches: traction_term with the wrong sign (sigma_yy = +p, a tensile stack), p n
    applied as -p (same), a missing normal, a lateral stress not from plane strain
    (p nu/(1 - nu) = 0.4286 p), and the expansion and pressure combined with a wrong sign.
    """
    p = 0.02
    size = [1.0, 0.8] if dim == 2 else [1.0, 0.8, 0.6]
    msh = make_mesh(dim, size)
    eta, beta = scalar_field(msh, eta_value), scalar_field(msh, BETA)
    faces = [(0, 0.0), (0, size[0]), (1, 0.0)] + ([(2, 0.0), (2, size[2])] if dim == 3 else [])

    def bcs_of(V):
        return rollers(V, msh, faces)

    u, sigma = solve_elastic(msh, degree, eta, beta, bcs_of, pressure=p, top=size[1])

    E = modulus_hand(eta_value, BETA)
    lam, mu = lame_hand(E)
    a = OMEGA / 3 * h_hand(eta_value)
    eps_yy = (-p + (3 * lam + 2 * mu) * a) / (lam + 2 * mu)
    lateral = lam * (eps_yy - 3 * a) - 2 * mu * a
    if eta_value == 0.0:
        assert abs(E - 0.902152) < 1e-6
        assert math.isclose(lateral, -p * NU / (1 - NU), rel_tol=1e-12)
    sigma_exact = as3((lateral, -p, lateral))
    stress_err = relative_l2(sigma, sigma_exact, msh)
    x = ufl.SpatialCoordinate(msh)
    u_exact = ufl.as_vector([0.0, eps_yy * x[1]] + ([0.0] if dim == 3 else []))
    u_err = relative_l2(u, u_exact, msh)
    mean_yy = integrate(sigma[1, 1], msh) / float(np.prod(size))
    if COMM.rank == 0:
        print(
            f"\nstack pressure {dim}D P{degree} eta={eta_value}: mean sigma_yy = {mean_yy:.6e} "
            f"(-p = {-p}); sigma_xx closed form {lateral:.6e}; rel. L2 errors stress "
            f"{stress_err:.1e}, u {u_err:.1e}",
            flush=True,
        )
    assert stress_err < 1e-10
    assert u_err < 1e-10
    assert math.isclose(mean_yy, -p, rel_tol=1e-10)


# 4. Mechanical driving force vs finite difference of the elastic energy -----------------------

STRAIN_3D = np.array([[0.012, 0.004, -0.003], [0.004, -0.006, 0.005], [-0.003, 0.005, 0.009]])
STRAIN_PLANE = np.array([[0.012, 0.004, 0.0], [0.004, -0.006, 0.0], [0.0, 0.0, 0.0]])


def psi_hand(eta, beta, strain, rule):
    """1/2 sigma : eps_e with eps_e = strain - (Omega/3) h(eta) I and isotropic C(E(eta, beta))."""
    lam, mu = lame_hand(modulus_hand(eta, beta, rule))
    eps_e = strain - OMEGA / 3 * h_hand(eta) * np.eye(3)
    sigma = lam * np.trace(eps_e) * np.eye(3) + 2 * mu * eps_e
    return 0.5 * np.sum(sigma * eps_e)


@pytest.mark.parametrize("rule", ["paper", "metal-first"])
@pytest.mark.parametrize("strain_name", ["3d", "plane-strain"])
def test_mechanical_driving_force_is_energy_derivative(strain_name, rule):
    """forms.mechanical_driving_force(sigma, eps_e, eta, Omega, E, dE/deta, S) / S equals
    (psi(eta + d) - psi(eta - d)) / (2 d), d = 1e-5, of the hand-computed energy density at
    fixed total strain (rel. 1e-6; the FD error, truncation + round-off, is < 1e-7), at eta in {0.3, 0.55, 0.8} and
    beta in {0, 0.4}, with S = 2.5 (the stress/energy scale). The two terms, -Omega h'
    sigma_m and 1/2 (E'/E) sigma : eps_e, are each > 5 % of the total at some point, so
    dropping either fails.

    Catches: the sign of the expansion term (compression must slow growth), Omega/3 in place
    of Omega (or h in place of h'), the 1/2 missing, E' in place of E'/E, the stiffness term
    dropped, the scale S not applied, the eigenstrain with the wrong h. (E' comes from
    materials.mix_slope_eta, itself checked against ufl.diff in test_materials.py.)
    """
    strain = STRAIN_3D if strain_name == "3d" else STRAIN_PLANE
    S = 2.5
    msh = dmesh.create_unit_square(COMM, 2, 2)
    eta, beta = fem.Constant(msh, 0.0), fem.Constant(msh, 0.0)
    eps_total = ufl.as_tensor(strain.tolist())
    E = mix(MODULI, eta, beta, rule)
    Ep = mix_slope_eta(MODULI, eta, beta, rule)
    lam, mu = lame(E, NU)
    eps_e = eps_total - forms.eigenstrain(eta, OMEGA)
    sigma = elastic_stress(eps_e, lam, mu)
    force = forms.mechanical_driving_force(sigma, eps_e, eta, OMEGA, E, Ep, S)
    expansion_term = -OMEGA * dh_hand(eta) * ufl.tr(sigma) / 3  # for the size check only
    f_form = fem.form(force * ufl.dx(domain=msh))
    x_form = fem.form(expansion_term * ufl.dx(domain=msh))

    d = 1e-5
    worst, shares = 0.0, []
    for e in (0.3, 0.55, 0.8):
        for b in (0.0, 0.4):
            eta.value, beta.value = e, b
            value = COMM.allreduce(fem.assemble_scalar(f_form), op=MPI.SUM) / S
            fd = (psi_hand(e + d, b, strain, rule) - psi_hand(e - d, b, strain, rule)) / (2 * d)
            worst = max(worst, abs(value - fd) / abs(fd))
            assert math.isclose(value, fd, rel_tol=1e-6), (e, b, value, fd)
            expansion = COMM.allreduce(fem.assemble_scalar(x_form), op=MPI.SUM)
            shares.append(abs(expansion) / (abs(expansion) + abs(fd - expansion)))
    if COMM.rank == 0:
        print(
            f"\ndriving force {strain_name} {rule}: worst rel. deviation from FD {worst:.1e}; "
            f"share of the expansion term {min(shares):.2f} .. {max(shares):.2f}",
            flush=True,
        )
    assert max(shares) < 0.95 and min(shares) > 0.05, shares
