"""Weak forms in scaled units, one function per equation of docs/model.md.

Every function takes UFL expressions (unknowns or given fields), so the coupled solver,
the MMS tests and the start-up solves share the same physics. Residuals are written as
"storage + flux + source = 0", each tested with ``v``, all per unit scaled volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import ufl

from .elasticity import strain3
from .materials import dh, double_well_slope, h

# Anisotropic gradient coefficient (eq. 10) ----------------------------------------------


def regularised_normal(grad_eta, floor: float):
    """grad(eta)/sqrt(|grad eta|^2 + floor^2): a unit normal in the interface, -> 0 in bulk.

    The floor keeps the Jacobian finite where eta is flat; the anisotropy below is
    homogeneous in this vector, so it fades to the isotropic kappa0 where |grad eta| << floor.
    """
    return grad_eta / ufl.sqrt(ufl.dot(grad_eta, grad_eta) + floor**2)


def anisotropy_factor(grad_eta, dim: int, strength: float, mode: int, angle: float, floor: float):
    """kappa/kappa0 = 1 + delta cos(omega (theta - theta0)) in 2D, 1 + delta (4 sum n_i^4 - 3) in 3D.

    2D: cos(omega (theta - theta0)) = Re[(n_x + i n_y)^omega e^{-i omega theta0}] for the unit
    normal; raising the regularised normal to the power omega avoids atan2 (singular at 0).
    3D: 4 sum n_i^4 - 3 |n|^4, equal to the cubic form for |n| = 1 and 0 in the bulk.
    """
    if strength == 0.0 or (dim == 2 and mode == 0):
        return 1.0
    n = regularised_normal(grad_eta, floor)
    if dim == 2:
        re, im = n[0], n[1]
        pr, pi = 1.0, 0.0
        for _ in range(mode):
            pr, pi = pr * re - pi * im, pr * im + pi * re
        c, s = math.cos(mode * angle), math.sin(mode * angle)
        return 1.0 + strength * (pr * c + pi * s)
    n2 = ufl.dot(n, n)
    return 1.0 + strength * (4 * sum(n[i] ** 4 for i in range(dim)) - 3 * n2**2)


# 1. Allen-Cahn with Butler-Volmer kinetics ---------------------------------------------


@dataclass(frozen=True)
class AllenCahnParameters:
    """Scaled: mobility = L W t0, gradient = kappa0/(W l0^2), reaction = L_eta t0 (ramped),
    alpha_n = alpha n, electrons n; potentials in units of RT/F."""

    mobility: object
    gradient: float
    reaction: object
    alpha: float
    electrons: int
    equilibrium_potential: float = 0.0


def butler_volmer(eta, c, phi, p: AllenCahnParameters):
    """I_BV / (L_eta h'(eta)) = exp((1-alpha) n eta_a) - c exp(-alpha n eta_a), eta_a = phi - E_eq."""
    overpotential = phi - p.equilibrium_potential
    return ufl.exp((1 - p.alpha) * p.electrons * overpotential) - c * ufl.exp(-p.alpha * p.electrons * overpotential)


def allen_cahn_local_rate(eta, c, phi, mechanical_force, p: AllenCahnParameters):
    """The pointwise part of d eta/dt: -L [g'(eta) + dpsi_e/deta] - L_eta h'(eta) BV.

    ``mechanical_force`` is dpsi_e/deta / W (0 without mechanics).
    """
    return -p.mobility * (double_well_slope(eta) + mechanical_force) - p.reaction * dh(eta) * butler_volmer(
        eta, c, phi, p
    )


def nucleation_forcing(activity, c, phi, p: AllenCahnParameters):
    """Discrete nucleation (issue 21): -a BV(c, phi), the Butler-Volmer reaction with the
    activity ``a`` (DG0, set between steps) in place of L_eta h'(eta), which vanishes at
    eta = 0 where a nucleus starts. Being the growth reaction, it stops where no electrons
    arrive (eta_a -> 0) instead of demanding them."""
    return -activity * butler_volmer(None, c, phi, p)


def allen_cahn_rate(v, eta, local_rate, kappa_factor, p: AllenCahnParameters, dx, dx_local=None):
    """d eta/dt tested with v: int(local_rate v) - int(L kappa grad eta . grad v).

    ``dx_local``: the measure of the pointwise part (default ``dx``); the solver passes the
    lumped (vertex) one with ``solver.lumped_rate``, see problem/coupled.py.

    This weak rate is the deposition sink of the c and phi equations. At convergence it
    equals int((eta - eta_n)/dt v) for every P1 test function, so Na and charge balance
    hold exactly, but it carries no 1/dt: with (eta - eta_n)/dt in the sink, a small
    Newton update of eta became a huge current and Newton diverged (docs/model.md).
    Keeping the gradient term matters: without it, the balance of g'(eta) against
    kappa lap(eta) inside a resting interface leaves a spurious source/sink dipole.
    """
    gradient = p.mobility * p.gradient * kappa_factor * ufl.dot(ufl.grad(eta), ufl.grad(v))
    if dx_local is None:
        return (local_rate * v - gradient) * dx
    return local_rate * v * dx_local - gradient * dx


def allen_cahn_residual(eta, eta_old, dt, v, rate, dx):
    """(eta - eta_n)/dt = d eta/dt (weak ``rate`` from allen_cahn_rate), backward Euler."""
    return (eta - eta_old) / dt * v * dx - rate


# 1b. Bounded (Na-supply-limited) kinetics: our consistent extension, docs/model.md ----------


def driving_force_residual(mu, eta, mechanical_force, v, p: AllenCahnParameters, kappa_factor, dx, dx_lumped):
    """mu = g'(eta)/W + dpsi_e/deta/W - div(kappa grad eta)/W, tested with v (mu in units of W).

    The bounded kinetics need the driving force pointwise (behind a supply limiter), which a
    weak gradient term cannot give, so it is an unknown of its own. Pointwise terms are
    lumped (vertex quadrature) like the rate; the mechanical force lives at the quadrature
    points of the plastic state, so it keeps ``dx``.
    """
    form = (mu - double_well_slope(eta)) * v * dx_lumped - p.gradient * kappa_factor * ufl.dot(
        ufl.grad(eta), ufl.grad(v)
    ) * dx
    if isinstance(mechanical_force, (int, float)) and mechanical_force == 0:
        return form
    return form - mechanical_force * v * dx


def supply_limited_rate(eta, mu, c, phi, p: AllenCahnParameters, smoothing: float = 1e-3):
    """d eta/dt = -L [mu^+ + c mu^-] - L_eta h'(eta) BV(c, phi): eq. 1 with growth limited by c.

    Relaxation that grows the metal (mu < 0) takes Na+ from the electrolyte, so it is
    multiplied by c, like the cathodic Butler-Volmer branch; relaxation that shrinks it
    (mu > 0) releases Na+ and is unlimited. Hence every positive rate vanishes at c = 0 and
    c >= 0 holds with exact Na balance; while c = 1 the rate is the printed one.
    |mu| is smoothed as mu^2 / sqrt(mu^2 + w^2) (0 at mu = 0: flat eta stays put).
    """
    mu_abs = mu**2 / ufl.sqrt(mu**2 + smoothing**2)
    relaxation = 0.5 * (mu * (1 + c) + mu_abs * (1 - c))
    return -p.mobility * relaxation - p.reaction * dh(eta) * butler_volmer(eta, c, phi, p)


def lumped_phase_residual(eta, eta_old, dt, v, rate, dx_lumped):
    """(eta - eta_n)/dt = rate, lumped: each node's eta sees its own rate (nodal bounds), and
    the same lumped rate is the sink of the c and charge equations (exact balances)."""
    return ((eta - eta_old) / dt - rate) * v * dx_lumped


def electronic_anchor(overpotential, eta, v, strength, dx_lumped):
    """eps (1 - h(eta))^2 eta_a, tested with v: defines phi_e where nothing conducts electrons.

    With zero electronic conductivity of the electrolyte, phi_e has no equation away from
    the metal (singular Jacobian). This lumped term pins it to local equilibrium there
    (eta_a = 0: no driving force without electrons) and vanishes in the metal; unlike a
    conductivity floor it carries no current between distant points (measured, docs/model.md).
    """
    return strength * (1 - h(eta)) ** 2 * overpotential * v * dx_lumped


# 2. Mechanical driving force ---------------------------------------------------------------


def mechanical_driving_force(sigma, eps_e, eta, volume_expansion, modulus, modulus_slope, stress_over_energy):
    """dpsi_e/deta / W = (E_SE/W) [-Omega h'(eta) sigma_m + 1/2 eps_e : dC/deta : eps_e].

    With nu fixed, dC/deta = (dE/deta / E) C, so the second term is (E'/2E) sigma : eps_e.
    """
    sigma_m = ufl.tr(sigma) / 3
    return stress_over_energy * (
        -volume_expansion * dh(eta) * sigma_m + 0.5 * modulus_slope / modulus * ufl.inner(sigma, eps_e)
    )


def eigenstrain(eta, volume_expansion):
    """(Omega/3) h(eta) I: isotropic expansion of the deposited metal, 3x3."""
    return volume_expansion / 3 * h(eta) * ufl.Identity(3)


# 4. Nernst-Planck ----------------------------------------------------------------------------


def nernst_planck_flux(c, grad_c, grad_phi, diffusivity, electrons):
    """-(flux) = D grad c + D c n grad phi (phi in RT/F); grad_c may be c grad(ln c)."""
    return diffusivity * (grad_c + electrons * c * grad_phi)


def _x_coth_x(x, small: float = 1e-3):
    """x coth(x), with its series below |x| = small (0/0 at x = 0; error < small^6 / 945)."""
    return ufl.conditional(ufl.lt(abs(x), small), 1 + x**2 / 3 - x**4 / 45, x / ufl.tanh(x))


def cell_origins(mesh):
    """DG0 vector field: each cell's first geometry node, x(X = 0) of its affine map
    (UFL's CellOrigin, which the form compiler does not support)."""
    from dolfinx import fem

    gdim = mesh.geometry.dim
    V = fem.functionspace(mesh, ("DG", 0, (gdim,)))
    origin = fem.Function(V, name="cell_origin")
    cells = np.arange(
        mesh.topology.index_map(mesh.topology.dim).size_local + mesh.topology.index_map(mesh.topology.dim).num_ghosts
    )
    dofs = np.array([V.dofmap.cell_dofs(k)[0] for k in cells]) if len(cells) else np.zeros(0, dtype=np.int32)
    values = origin.x.array.reshape(-1, gdim)
    values[dofs] = mesh.geometry.x[mesh.geometry.dofmap[cells, 0], :gdim]
    return origin


def edge_averaged_flux_term(c, phi, diffusivity, electrons, v, origin, dx):
    """int (D grad c + D c n grad phi) . grad v for P1 c, phi, v by exponential fitting
    along the edges (EAFE, Xu & Zikatanov 1999, with D constant in each cell).

    On a simplex T, int_T grad c . grad v = sum over edges E = (i, j) of w_E d_E c d_E v
    with w_E = -|T| grad lambda_i . grad lambda_j and d_E f = f_j - f_i (exact for P1).
    EAFE replaces d_E c by the 1D Scharfetter-Gummel flux of the edge, the exact flux of
    c' + c psi' = const for linear psi = n phi:

        d_E c -> B(-dpsi) c_j - B(dpsi) c_i = dpsi c_mid + (dpsi/2) coth(dpsi/2) d_E c,

    B(x) = x / (e^x - 1), c_mid = (c_i + c_j)/2, dpsi = n d_E phi. Why: the Galerkin drift
    term couples node i to j with the sign of grad phi . grad lambda_i, which makes positive
    off-diagonal entries (c < 0 reachable) once the cell Peclet number n |grad phi| h
    exceeds about 2, as it does where phi_i is steep inside the 3D nucleus. Here the
    coupling of c_j into row i is -w_E D B(-dpsi) <= 0 wherever the D-weighted stiffness
    has w_E >= 0, at any Peclet number, and every column sums to zero, so Na balance is
    exact (a discrete divergence). At c = const the flux is D int grad psi . grad v exactly.

    Written as a cell constant: c_mid = c(x) + grad c . (x_mid - x) at any point x of the
    cell (P1), x_mid, edge vectors and barycentric gradients from the affine map
    (``origin``: cell_origins; Jacobian). So any rule ``dx`` integrates it exactly, D
    being averaged by its weights. (A one-point rule with c taken at "the centroid" was
    merged by the form compiler with the vertex rule of the lumped terms, of equal degree:
    residual and Jacobian disagreed and Newton fell to a linear rate.)
    """
    mesh = origin.function_space.mesh
    d, gdim = mesh.topology.dim, mesh.geometry.dim
    J, K = ufl.Jacobian(mesh), ufl.JacobianInverse(mesh)
    # Barycentric gradients: lambda_k = X_{k-1} (k >= 1), lambda_0 = 1 - sum X.
    grads = [ufl.as_vector([K[k, m] for m in range(gdim)]) for k in range(d)]
    grads.insert(0, -sum(grads[1:], grads[0]))
    # Reference vertices: X_0 = 0, X_k = e_{k-1}.
    ref = [[0.0] * d] + [[1.0 if m == k else 0.0 for m in range(d)] for k in range(d)]
    x = ufl.SpatialCoordinate(mesh)

    def physical(offset):  # x(X) - x(0) for a reference offset X
        return J * ufl.as_vector(offset)

    gc, gv, gpsi = ufl.grad(c), ufl.grad(v), electrons * ufl.grad(phi)
    total = 0
    for i in range(d + 1):
        for j in range(i + 1, d + 1):
            edge = physical([ref[j][m] - ref[i][m] for m in range(d)])
            mid = origin + physical([0.5 * (ref[i][m] + ref[j][m]) for m in range(d)])
            weight = -ufl.dot(grads[i], grads[j])
            dpsi = ufl.dot(gpsi, edge)
            c_mid = c + ufl.dot(gc, mid - x)
            flux = dpsi * c_mid + _x_coth_x(dpsi / 2) * ufl.dot(gc, edge)
            total += weight * flux * ufl.dot(gv, edge)
    return diffusivity * total * dx


def _tested(source, v, dx):
    """A source given as a weak form (already tested with v) or as a field."""
    if isinstance(source, ufl.Form):
        return source
    return source * v * dx


def nernst_planck_residual(c, c_old, dt, flux, v, deposition_rate, site_ratio, dx, storage_dx=None):
    """dc/dt = div(D grad c + D c n grad phi) - (c_m/c0) d eta/dt.

    ``deposition_rate`` is d eta/dt as a field or, in the solver, the weak rate (tested).
    ``storage_dx``: the measure of dc/dt (the lumped one with the bounded kinetics).
    ``flux``: the flux vector, or its term already tested (edge_averaged_flux_term).
    """
    flux_term = flux if isinstance(flux, ufl.Form) else ufl.dot(flux, ufl.grad(v)) * dx
    storage = (c - c_old) / dt * v * (dx if storage_dx is None else storage_dx)
    return storage + flux_term + site_ratio * _tested(deposition_rate, v, dx)


# 5. Charge conservation ---------------------------------------------------------------------


def charge_residual(phi, conductivity, v, deposition_rate, charge_source, dx):
    """div(sigma grad phi) = n F c_m d eta/dt, scaled by sigma_SE (RT/F)/l0^2.

    ``deposition_rate``: d eta/dt as a field or weak form (see nernst_planck_residual).
    """
    form = conductivity * ufl.dot(ufl.grad(phi), ufl.grad(v)) * dx
    if isinstance(deposition_rate, (int, float)) and deposition_rate == 0:
        return form
    return form + charge_source * _tested(deposition_rate, v, dx)


def galvanostatic_term(current_density, v, ds_electrode):
    """-sigma grad phi . n = i_app on the electrode (outward normal): positive i_app plates Na."""
    return current_density * v * ds_electrode


# 6. Mechanical equilibrium -------------------------------------------------------------------


def equilibrium_residual(sigma3, v, dx):
    """div sigma = 0, tested with v (sigma is 3x3)."""
    return ufl.inner(sigma3, strain3(v)) * dx


def traction_term(pressure, v, normal, ds_boundary):
    """A compressive normal traction -p n on a boundary (stack pressure)."""
    return pressure * ufl.dot(normal, v) * ds_boundary
