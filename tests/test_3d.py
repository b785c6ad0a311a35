"""3D verification (issue 11, item 5): the smooth GB indicator against the tagged
definition, and a 3D coupled run on 1 and on 2 ranks.

Smooth GBs. In 3D, beta = gb_profile(d(x)) interpolated into P1, where d is the GB distance
(nzsp_fem.mesh.voronoi.gb_distance) and gb_profile(d) = 0.5 (1 - tanh((d - w/2) / (w/4))).
The tagged definition used in 2D is the set {d <= w/2} (strips of width w, mitred
junctions) with the same d. Three measurements, each at two or three GB mesh sizes
h_gb (the cells near a GB), printed:

  (a) GB volume int beta_h dx against |{d <= w/2}|, the latter from a regular grid of
      128^3 = 2.1e6 points over the box (independent of the mesh);
  (b) the L1 mismatch int |beta_h - chi_tagged| dx / |{d <= w/2}|: how wide the smoothing
      band is;
  (c) transport: the conductance of one flat GB slab, sigma = sigma_g + beta (sigma_gb -
      sigma_g), from a 3D Poisson solve, against the tagged slab's exact value; along the
      GB (parallel, the electron path along a conducting GB) and across it (series).

Each FE value is split into a continuous part (the exact profile of the exact d, no mesh)
and a P1 part (FE / continuous - 1). The continuous parts follow from the flat-GB profile
and one junction constant measured on the tagged volume (test docstrings derive them); the
P1 part has no closed form at h_gb ~ w/2 (far from the asymptotic h^2 regime), so it is
bounded from a 1D model, asserted to shrink under refinement, and printed.

Measured (h_gb = w/2 | w/2.86; slab also w/4):
  int beta_h / |tagged|       0.954 | 0.990   (continuous 0.995; P1 -4.2 % | -0.5 %)
  L1 / |tagged|               0.49  | 0.42    (continuous 0.33: the tanh band)
  mean beta_h over d < w/4    0.86  | 0.89    (continuous 0.946; tagged 1)
  slab, along the GB          G_h / G_tagged 0.977 | 1.002 | 1.004 (continuous 1.004)
  slab, across a 10x resistive GB: excess resistance FE / tagged 0.24 | 0.32 | 0.38
                              (continuous 0.47): the smooth GB underestimates it.

Coupled run. A 0.3 x 0.15 x 0.15 um box with two grains and a smooth GB plane, a Na
nucleus on it at the electrode, the default model (two potentials, bounded kinetics),
mechanics with J2 plasticity: 3 fixed steps of 0.1 ms through the CLI on 1 and on 2 ranks
(6080 DOFs, about 15-25 s each); its integrals and fields agree to solver tolerance.

The GB tests are collective (serial and under ``mpirun -n 2 pytest``); the coupled test
spawns its own runs and is marked ``serial``.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.integrate import quad
from support import REPO, child_environment, rprint

from mpi4py import MPI

import ufl
from dolfinx import fem
from dolfinx.fem.petsc import LinearProblem

from nzsp_fem.mesh import BOTTOM, LEFT, RIGHT, TOP, PolycrystalSpec, build_polycrystal, gb_distance, gb_indicator
from nzsp_fem.mesh.voronoi import gb_profile

COMM = MPI.COMM_WORLD
MESH_CACHE = str(REPO / "meshes")

W = 80e-9  # GB width (m)
# The polycrystal of tests/test_mesh.py test_3d_smooth: a 1 um cube, 4 random grains.
VORONOI = dict(
    size=(1e-6, 1e-6, 1e-6),
    n_grains=4,
    seeds=None,
    rng_seed=3,
    gb_width=W,
    h_grain=250e-9,
    h_nucleus=250e-9,
    nuclei=None,
    nucleus_radius=50e-9,
    representation="smooth",
)
VORONOI_H = (40e-9, 28e-9)  # w/2 (49.6k cells) and w/2.86 (133k cells)
# Two grains with one flat GB, the plane y = 0.2 um; no nuclei (no refinement but the GB's).
SLAB = dict(
    size=(0.4e-6, 0.4e-6, 0.2e-6),
    n_grains=2,
    seeds=((0.2e-6, 0.1e-6, 0.1e-6), (0.2e-6, 0.3e-6, 0.1e-6)),
    rng_seed=0,
    gb_width=W,
    h_grain=100e-9,
    h_nucleus=100e-9,
    nuclei=(),
    nucleus_radius=50e-9,
    representation="smooth",
)
SLAB_H = (40e-9, 28e-9, 20e-9)  # w/2, w/2.86, w/4 (1.7k, 4.3k, 10k cells)
GRID = 128  # regular grid points per axis for the tagged volume (2.1e6)
SUBDIVISION = 3  # sample points per tet: one in each of its 3^3 equal sub-tets


def gsum(value) -> float:
    return COMM.allreduce(float(value), op=MPI.SUM)


# -----------------------------------------------------------------------------------------
# The flat-GB profile and the junction model
# -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def flat_moments(w: float) -> dict:
    """int_0^inf f(t) dt and int_0^inf t f(t) dt on one side of a flat GB, for
    f = chi (tagged), beta (smooth profile) and |beta - chi| (the L1 integrand)."""
    beta = lambda t: float(gb_profile(t, w))
    chi = lambda t: 1.0 if t <= w / 2 else 0.0
    out = {}
    for name, f in (("chi", chi), ("beta", beta), ("l1", lambda t: abs(beta(t) - chi(t)))):
        # the integrands are below 1e-30 beyond 20 w; the kink of chi is a break point
        m0 = quad(f, 0, w / 2)[0] + quad(f, w / 2, 20 * w, limit=200)[0]
        m1 = quad(lambda t: t * f(t), 0, w / 2)[0] + quad(lambda t: t * f(t), w / 2, 20 * w, limit=200)[0]
        out[name] = (m0, m1)
    return out


def kuhn_subtets(k: int) -> np.ndarray:
    """Barycentric coordinates (k^3, 4 vertices, 4) of k^3 equal-volume sub-tetrahedra of a
    tetrahedron: the Kuhn simplices of the unit cubes of [0, k]^3 inside {0 <= s1 <= s2 <=
    s3 <= k}, mapped affinely onto the reference tet."""
    out = []
    for origin in itertools.product(range(k), repeat=3):
        for perm in itertools.permutations(range(3)):
            v = [np.asarray(origin, dtype=float)]
            for axis in perm:
                v.append(v[-1] + np.eye(3)[axis])
            centroid = np.mean(v, axis=0)
            if centroid[0] < centroid[1] < centroid[2]:
                s = np.asarray(v) / k
                out.append(np.column_stack([s[:, 0], s[:, 1] - s[:, 0], s[:, 2] - s[:, 1], 1.0 - s[:, 2]]))
    out = np.asarray(out)
    assert len(out) == k**3
    return out


def stratified_points(n_cells: int, k: int, rng) -> np.ndarray:
    """Barycentric coordinates (n_cells, k^3, 4): in every cell, one uniform random point in
    each of its k^3 equal sub-tets. With weights |T|/k^3 this is an unbiased estimate of any
    integral over the cell, also where a level set of d lies at a fixed height in the cells
    (the mesh conforms to the GB faces, so the first layer of cells has one): a fixed point
    set (the sub-tet centroids) gave the tagged volume 0.45 % high there."""
    mu = -np.log(rng.random((n_cells, k**3, 4)))  # Dirichlet(1, 1, 1, 1): uniform on a simplex
    mu /= mu.sum(axis=2, keepdims=True)
    return np.einsum("cqj,qjk->cqk", mu, kuhn_subtets(k))


# -----------------------------------------------------------------------------------------
# (a), (b) on the Voronoi polycrystal
# -----------------------------------------------------------------------------------------


def voronoi_spec(h_gb: float) -> PolycrystalSpec:
    return PolycrystalSpec(h_gb=h_gb, **VORONOI)


@functools.lru_cache(maxsize=None)
def grid_volumes() -> dict:
    """|{d <= w/2}| and int gb_profile(d) over the box, midpoint rule on a GRID^3 regular
    grid (split over the ranks). No mesh is involved: only the seeds and d."""
    poly = build_polycrystal(voronoi_spec(VORONOI_H[0]), COMM, cache_dir=MESH_CACHE)
    w, box = poly.gb_width, poly.box
    n = GRID
    tagged = smooth = 0.0
    ids = np.arange(COMM.rank, n**3, COMM.size)
    for chunk in np.array_split(ids, max(1, len(ids) // 2**18)):
        ijk = np.stack(np.unravel_index(chunk, (n, n, n)))
        x = (ijk + 0.5) / n * box[:, None]
        d = gb_distance(poly, x)
        tagged += np.count_nonzero(d <= w / 2)
        smooth += gb_profile(d, w).sum()
    cell = float(np.prod(box)) / n**3
    return {"tagged": gsum(tagged) * cell, "smooth": gsum(smooth) * cell, "nominal": poly.gb_length * w, "w": w}


@functools.lru_cache(maxsize=None)
def voronoi_measurement(h_gb: float) -> dict:
    """Integrals over the mesh: int beta_h (assembled, exact) and, by stratified sampling of
    the owned cells (27 points each), the tagged volume, the continuous smooth volume, the L1
    mismatches and the mean of beta over {d < w/4}; and the largest difference between
    beta_h at the cell vertices and gb_profile(d(vertex))."""
    poly = build_polycrystal(voronoi_spec(h_gb), COMM, cache_dir=MESH_CACHE)
    msh, w = poly.mesh, poly.gb_width
    beta = gb_indicator(poly)
    n_cells = msh.topology.index_map(3).size_local
    out = {"cells": msh.topology.index_map(3).size_global, "V_h": gsum(fem.assemble_scalar(fem.form(beta * ufl.dx)))}
    rng = np.random.default_rng(COMM.rank)
    keys = ("vol", "beta_h", "chi", "beta", "l1_h", "l1", "p1", "near", "near_beta_h", "near_beta")
    sums = dict.fromkeys(keys, 0.0)
    vertex_error = 0.0
    for cells in np.array_split(np.arange(n_cells), max(1, n_cells // 20000)):
        xc = msh.geometry.x[msh.geometry.dofmap[cells]]  # (c, 4, 3)
        # P1 on a P1 geometry: local dof k of a cell sits on its local geometry node k
        bc = beta.x.array[beta.function_space.dofmap.list[cells]]  # (c, 4)
        exact = gb_profile(gb_distance(poly, xc.reshape(-1, 3).T), w).reshape(bc.shape)
        vertex_error = max(vertex_error, float(np.abs(bc - exact).max(initial=0.0)))
        vol = np.abs(np.linalg.det(xc[:, 1:] - xc[:, :1])) / 6.0
        lam = stratified_points(len(cells), SUBDIVISION, rng)  # (c, q, 4)
        wq = np.repeat(vol / lam.shape[1], lam.shape[1])
        x = np.einsum("cqk,ckd->cqd", lam, xc).reshape(-1, 3)
        b_h = np.einsum("cqk,ck->cq", lam, bc).reshape(-1)
        d = gb_distance(poly, x.T)
        b = gb_profile(d, w)
        chi = (d <= w / 2).astype(float)
        near = (d < w / 4).astype(float)
        for key, f in (
            ("vol", 1.0),
            ("beta_h", b_h),
            ("chi", chi),
            ("beta", b),
            ("l1_h", np.abs(b_h - chi)),
            ("l1", np.abs(b - chi)),
            ("p1", np.abs(b_h - b)),
            ("near", near),
            ("near_beta_h", near * b_h),
            ("near_beta", near * b),
        ):
            sums[key] += float(np.sum(wq * f))
    out.update({k: gsum(v) for k, v in sums.items()})
    out["vertex_error"] = COMM.allreduce(float(vertex_error), op=MPI.MAX)
    return out


def test_smooth_gb_volume_and_l1_against_tagged():
    """(a) int beta_h against |{d <= w/2}|, (b) int |beta_h - chi| / |{d <= w/2}|, and the
    mean of beta_h over {d < w/4} (tagged: 1), on a 4-grain 1 um polycrystal (w = 80 nm) at
    h_gb = w/2 and w/2.86.

    Continuous part (exact profile of the exact d; grid and sample, no FE). Away from
    junctions a GB face of area A contributes 2 A M0[f] to int f(d) dx, for any profile f of
    d, with M0[f] = int_0^inf f(t) dt. At a triple line the mitred d makes each grain corner
    of angle 2a lose cot(a) M1[f] per unit length, M1[f] = int_0^inf t f(t) dt (integrate
    over the half-strip beyond the corner's bisector; tests/test_mesh.py junction_deficit is
    the case f = chi: (w/2)^2 cot a); where a GB meets a box face the two sides cancel. So
    int f(d) dx = 2 A M0[f] - J M1[f] + O(w^3) (quadruple points, box corners), with one
    geometric constant J, which the tagged grid volume gives (M1[chi] = w^2/8). Predicted:
    the smooth volume from M0[beta] = 1.0045 w/2 and M1[beta] = 1.2033 w^2/8 (Sommerfeld:
    1 + pi^2/48), so int beta / |tagged| = 0.995 here, not the flat GB's 1.0045; the L1
    mismatch from M0[|beta - chi|] = 0.342 w/2 and M1 = 0.695 w^2/8. Asserted to 0.5 % and
    0.01, the size of the O(w^3) terms; the mean over {d < w/4} to the flat value 0.9456
    within 0.005. They check the analysis behind the continuous ratio 0.995, and catch a d
    that is not the Euclidean distance to the GB planes (divided by sqrt|s_j - s_i| instead
    of |s_j - s_i|, the smooth volume misses its prediction by 5 %).

    P1 part (FE against the continuous value). The mesh conforms to the GB faces, so beta_h =
    beta(0) there, and the next layer of vertices sits at H ~ 0.5-0.6 w at h_gb = w/2 (gmsh's
    edges are ~1.25 h_gb, tet heights ~0.8 of that): P1 replaces the profile's concave top
    by a chord. A 1D model with nodes at 0, H, 2H, ... gives, for H = 0.50 / 0.56 / 0.62 w
    (coarse) and 0.35 / 0.45 w (fine): volume +0.5 / -1.9 / -4.9 % and +0.4 / +1.2 %;
    L1 excess over the continuous 0.342: 0.185 / 0.215 / 0.218 and 0.057 / 0.139; mean over
    {d < w/4}: 0.862 / 0.848 / 0.840 and 0.906 / 0.876. Asserted: |volume P1| <= 6 % and
    2 %, shrinking >= 2x (measured -4.15 %, -0.53 %: pre-asymptotic); L1 excess in [-0.01,
    0.22] and [-0.01, 0.14] (measured 0.165, 0.091); near mean in [0.82, 0.88] and [0.855,
    0.925] (measured 0.859, 0.893). Then int beta_h / |tagged| = 0.995 within 6 % / 2 %
    (measured 0.954, 0.990): a GB of twice or half the width gives 1.88 or 0.59, one
    centred at d = w instead of w/2 1.90 (all fail here), a tanh scale of w/2 instead of
    w/4 fails the L1 bound.

    Sampling checks: the vertex values of beta_h equal gb_profile(d(vertex)) to 1e-12
    (catches a dof / geometry ordering mismatch in the sample), the sampled |tagged| and
    int beta_h equal the grid's and the assembled value to 2e-3 (measured <= 5e-4).
    """
    grid = grid_volumes()
    w = grid["w"]
    mom = flat_moments(w)
    area2 = grid["nominal"] / w * 2  # 2 A: both sides of every GB face
    junction = (area2 * mom["chi"][0] - grid["tagged"]) / mom["chi"][1]  # J
    v_tag = grid["tagged"]
    smooth_pred = area2 * mom["beta"][0] - junction * mom["beta"][1]
    l1_pred = (area2 * mom["l1"][0] - junction * mom["l1"][1]) / v_tag
    near_flat = quad(lambda t: float(gb_profile(t, w)), 0, w / 4)[0] / (w / 4)
    rprint(
        f"\n[3D smooth GB, 1 um cube, 4 grains, w = {W * 1e9:.0f} nm] grid {GRID}^3: |d <= w/2| = {v_tag:.6f} um^3 "
        f"(A w = {grid['nominal']:.6f}, junction deficit {1 - v_tag / grid['nominal']:.2%}); int beta(d) = "
        f"{grid['smooth']:.6f}, predicted {smooth_pred:.6f} ({grid['smooth'] / smooth_pred - 1:+.2%}); "
        f"continuous ratio {grid['smooth'] / v_tag:.4f} (flat GB {mom['beta'][0] / mom['chi'][0]:.4f})"
    )
    assert grid["smooth"] == pytest.approx(smooth_pred, rel=5e-3)
    bounds = {  # h_gb: (|volume P1|, L1 excess, near mean range), from the 1D chord model
        VORONOI_H[0]: (0.06, 0.22, (0.82, 0.88)),
        VORONOI_H[1]: (0.02, 0.14, (0.855, 0.925)),
    }
    p1 = {}
    for h_gb, (p1_bound, l1_excess, near_range) in bounds.items():
        m = voronoi_measurement(h_gb)
        ratio = m["V_h"] / v_tag
        p1[h_gb] = m["V_h"] / m["beta"] - 1
        l1_h, l1 = m["l1_h"] / v_tag, m["l1"] / v_tag
        near_h, near = m["near_beta_h"] / m["near"], m["near_beta"] / m["near"]
        rprint(
            f"  h_gb = {h_gb * 1e9:.0f} nm ({m['cells']} cells): int beta_h / |tagged| = {ratio:.4f} "
            f"(continuous {m['beta'] / m['chi']:.4f}, P1 {p1[h_gb]:+.2%}); L1 |beta_h - chi| / |tagged| = "
            f"{l1_h:.3f} (continuous {l1:.3f}, predicted {l1_pred:.3f}; |beta_h - beta| {m['p1'] / v_tag:.3f}); "
            f"mean beta over d < w/4: {near_h:.3f} (continuous {near:.3f}, flat {near_flat:.4f}, tagged 1); "
            f"sampling error: |tagged| {m['chi'] / v_tag - 1:+.1e}, int beta_h {m['beta_h'] / m['V_h'] - 1:+.1e}"
        )
        assert m["vol"] == pytest.approx(1.0, rel=1e-10)
        assert m["vertex_error"] <= 1e-12
        assert m["beta_h"] == pytest.approx(m["V_h"], rel=2e-3)
        assert m["chi"] == pytest.approx(v_tag, rel=2e-3)
        assert m["beta"] == pytest.approx(grid["smooth"], rel=2e-3)
        assert l1 == pytest.approx(l1_pred, abs=0.01)
        assert near == pytest.approx(near_flat, abs=0.005)
        assert abs(ratio - grid["smooth"] / v_tag) <= p1_bound + 2e-3, f"int beta_h / |tagged| = {ratio:.4f}"
        assert abs(p1[h_gb]) <= p1_bound
        assert -0.01 <= l1_h - l1 <= l1_excess
        assert near_range[0] <= near_h <= near_range[1]
    coarse, fine = VORONOI_H
    assert abs(p1[fine]) <= 0.5 * abs(p1[coarse])


# -----------------------------------------------------------------------------------------
# (c) conductance of a flat GB slab
# -----------------------------------------------------------------------------------------


def conductance(poly, sigma, ground: int, terminal: int) -> float:
    """sigma-weighted Dirichlet energy of the P1 solution of div(sigma grad phi) = 0 with
    phi = 0 on ``ground`` and 1 on ``terminal`` (other faces insulated): the conductance
    between the two faces (scaled units)."""
    msh = poly.mesh
    V = fem.functionspace(msh, ("Lagrange", 1))
    bcs = [
        fem.dirichletbc(fem.Constant(msh, value), fem.locate_dofs_topological(V, 2, poly.facet_tags.find(tag)), V)
        for tag, value in ((ground, 0.0), (terminal, 1.0))
    ]
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    opts = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
    zero = fem.Constant(msh, 0.0)
    phi = LinearProblem(
        ufl.inner(sigma * ufl.grad(u), ufl.grad(v)) * ufl.dx, zero * v * ufl.dx, bcs=bcs, petsc_options=opts
    ).solve()
    return gsum(fem.assemble_scalar(fem.form(sigma * ufl.inner(ufl.grad(phi), ufl.grad(phi)) * ufl.dx)))


def test_smooth_gb_slab_conductance():
    """(c) One flat GB (plane y = Ly/2 of a 0.4 x 0.4 x 0.2 um box, w = 80 nm, so d = |y -
    Ly/2| exactly), sigma = sigma_g + beta_h (sigma_gb - sigma_g), at h_gb = w/2, w/2.86, w/4.

    Along the GB (sigma_gb = 100 sigma_g: the electronic path of a conducting GB), current
    from x = 0 to x = Lx. Tagged slab: G Lx = sigma_gb w Lz + sigma_g (Ly - w) Lz exactly.
    With the exact profile phi = x/Lx is exact and G Lx = sigma_g Ly Lz + (sigma_gb -
    sigma_g) Lz 2 M0[beta]: the continuous ratio is 1.0043 (M0[beta] = 1.0045 w/2). The
    FE value's P1 part is the chord error of (a) on a flat GB (no junctions), with the same
    1D bound: |FE / continuous - 1| <= 4 % at w/2, shrinking under refinement, <= 0.5 % at
    w/4. Then |G_h / G_tagged - 1| <= 4 %: a GB of twice (half) the width gives ~1.98
    (~0.5).

    Across the GB (sigma_gb = 0.1 sigma_g: a resistive GB), current from y = 0 to y = Ly.
    Excess resistance (R - Ly / sigma_g) Lx Lz: tagged w (1/sigma_gb - 1/sigma_g); with the
    exact profile int (1/sigma(beta(|y|)) - 1/sigma_g) dy, which is only 0.47 of the tagged
    value: beta peaks at 0.982, not 1, and 1/sigma weights the peak. The FE value is lower
    still: beta_h <= beta on the concave top of the profile (the chord), where 1/sigma is
    largest, and the P1 solution's energy overestimates the conductance for a given sigma_h
    (Dirichlet principle). Asserted: FE excess <= continuous excess at every
    h_gb, rising towards it under refinement (measured 0.24, 0.32, 0.38 of the tagged
    value: a documented limitation of the smooth 3D GB for a resistive GB crossed by the
    current).
    """
    Lx, Ly, Lz = (s / 1e-6 for s in SLAB["size"])
    w = W / 1e-6
    m0_beta = flat_moments(w)["beta"][0]
    par_k, ser_k = 100.0, 0.1
    par_tag = par_k * w * Lz + (Ly - w) * Lz
    par_cont = Ly * Lz + (par_k - 1) * Lz * 2 * m0_beta
    ser_tag = w * (1 / ser_k - 1)
    ser_cont = 2 * quad(lambda t: 1 / (1 + float(gb_profile(t, w)) * (ser_k - 1)) - 1, 0, 20 * w, points=[w / 2])[0]
    rprint(
        f"\n[flat GB slab, w = {W * 1e9:.0f} nm] parallel (sigma_gb/sigma_g = {par_k:g}): continuous/tagged "
        f"{par_cont / par_tag:.4f}; series (sigma_gb/sigma_g = {ser_k:g}) excess resistance continuous/tagged "
        f"{ser_cont / ser_tag:.4f}"
    )
    par_err, ser_fe = [], []
    for h_gb in SLAB_H:
        poly = build_polycrystal(PolycrystalSpec(h_gb=h_gb, **SLAB), COMM, cache_dir=MESH_CACHE)
        beta = gb_indicator(poly)
        g_par = conductance(poly, 1.0 + beta * (par_k - 1.0), LEFT, RIGHT) * Lx
        g_ser = conductance(poly, 1.0 + beta * (ser_k - 1.0), BOTTOM, TOP)
        ser_excess = Lx * Lz / g_ser - Ly
        par_err.append(g_par / par_cont - 1)
        ser_fe.append(ser_excess / ser_tag)
        rprint(
            f"  h_gb = {h_gb * 1e9:.0f} nm ({poly.mesh.topology.index_map(3).size_global} cells): parallel "
            f"G_h / G_tagged = {g_par / par_tag:.4f} (P1 {par_err[-1]:+.2%}); series excess FE/tagged "
            f"{ser_fe[-1]:.3f} (continuous {ser_cont / ser_tag:.3f})"
        )
        assert abs(par_err[-1]) <= 0.04
        assert g_par / par_tag == pytest.approx(1.0, abs=0.04)
        assert ser_fe[-1] <= ser_cont / ser_tag
    assert abs(par_err[-1]) <= 0.005
    assert all(abs(b) < abs(a) for a, b in zip(par_err, par_err[1:])), par_err
    assert all(b > a for a, b in zip(ser_fe, ser_fe[1:])), ser_fe


# -----------------------------------------------------------------------------------------
# A 3D coupled run on 1 and on 2 ranks
# -----------------------------------------------------------------------------------------

STEPS, DT = 3, 1e-4
CASE = {
    "name": "coupled3d",
    "domain": {"dim": 3, "size": ["0.3 um", "0.15 um", "0.15 um"]},
    "microstructure": {
        "grains": 2,
        "seeds": [["0.15 um", "0.075 um", "0.04 um"], ["0.15 um", "0.075 um", "0.11 um"]],
        "gb_width": "30 nm",
        "gb_representation": "smooth",
    },
    "mesh": {"size_grain": "40 nm", "size_gb": "20 nm", "size_nucleus": "20 nm", "cache_dir": MESH_CACHE},
    "nuclei": {"radius": "40 nm", "positions": [["0 um", "0.075 um", "0.075 um"]], "electrode_layer": "20 nm"},
    "materials": {"transport": "nernst-einstein"},
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m", "reaction_ramp_time": 0.0},
    "electrochemistry": {"reservoir": False, "electrode": {"mode": "potentiostatic", "potential": "-0.45 V"}},
    "mechanics": {"enabled": True, "plasticity": True},
    # fixed steps: no error control, no interface cap, dt_initial = dt_max
    "time": {
        "t_end": STEPS * DT,
        "dt_initial": DT,
        "dt_max": DT,
        "error_tolerance": None,
        "max_interface_change": None,
        "n_outputs": 1,
    },
    "solver": {"preset": "direct", "rtol": 1e-10, "atol": 1e-9, "stol": 0.0, "max_it": 15},
    "output": {
        "figures": False,
        "checkpoint_every_steps": 0,
        "checkpoint_every_minutes": 0,
        "checkpoint_at_output_times": False,
    },
}


def _cli_run(config: Path, outdir: Path, ranks: int) -> dict:
    import pyvista

    cmd = [sys.executable, "-m", "nzsp_fem", str(config), "-o", str(outdir)]
    if ranks > 1:
        mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
        if mpirun is None:
            pytest.skip("no mpirun")
        cmd = [mpirun, "-n", str(ranks)] + cmd
    r = subprocess.run(cmd, env=child_environment(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(outdir / "timeseries.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    grid = pyvista.read(outdir / "final_state.vtu")
    cells = np.asarray(grid.cells).reshape(-1, 5)[:, 1:]
    x = np.asarray(grid.points)[cells]
    vol = np.abs(np.linalg.det(x[:, 1:] - x[:, :1])) / 6.0
    integrals = {name: float(vol @ np.asarray(grid.point_data[name])[cells].mean(axis=1)) for name in POINT_FIELDS}
    integrals.update({name: float(vol @ np.asarray(grid.cell_data[name])) for name in CELL_FIELDS})
    return {
        "summary": json.loads((outdir / "summary.json").read_text()),
        "rows": rows,
        "grid": grid,
        "integrals": integrals,
    }


POINT_FIELDS = ("eta", "c", "phi_e_V", "phi_i_V")
CELL_FIELDS = ("hydrostatic_stress", "von_mises", "plastic_strain")
# per step, timeseries.csv: relative tolerance
SERIES_TOL = {
    "metal_fraction": 1e-8,
    "electrode_current_A": 1e-8,
    "reservoir_current_A": 1e-8,
    "deposition_current_A": 1e-8,
    "total_sodium_mol": 1e-8,
    "max_von_mises_Pa": 1e-6,
    "max_plastic_strain": 1e-5,
}
SUMMARY_KEYS = ("integral_eta", "integral_c", "integral_phi")


@pytest.mark.serial
def test_coupled_3d_one_and_two_ranks(tmp_path):
    """The 3D coupled case (6080 DOFs) through the CLI on 1 and on 2 ranks: 3 fixed steps.

    Both runs solve the same discrete problem (one .msh, read on rank 0 and distributed);
    assembly differs in summation order and MUMPS factorises serially or in parallel, so
    the Newton iterates differ by round-off. If both runs stop at the same iterate they agree
    to round-off; if one takes an extra iteration they differ by Newton's stopping error.
    With the default tolerances (rtol = atol = 1e-6) that error is up to ~1e-6 relative, so
    the solver is tightened to rtol 1e-10 and atol 1e-9: the round-off floor of this scaling
    (||F|| stalls at ~1e-11; atol 1e-12 ends step 3 in DIVERGED_LINE_SEARCH), where one
    Newton step from ||F|| = 1e-9 moves the state by ~1e-9 and the next error is quadratic.
    Compared: per step (timeseries.csv) metal fraction, electrode / reservoir / deposition
    currents and total Na; at the end the summary's integrals of eta, c, phi and, from
    final_state.vtu (gathered in the original node and cell order, so the two grids are
    identical), int eta, c, phi_e, phi_i (P1) and int of the hydrostatic stress, von Mises
    stress and plastic strain (cell fields), and the fields node by node. Asserted 1e-8
    relative for the integrals and currents (measured 1e-16 .. 3e-12) and 1e-8 of the
    maximum for the nodal fields. Plasticity amplifies round-off through the return map's
    yield test at quadrature points near the yield surface: the per-step maxima of von Mises
    stress and plastic strain (measured 9e-10, 1e-7) are asserted 1e-6 and 1e-5 as in
    tests/test_physics.py, the cell-field integrals (2e-9 .. 2e-8) 1e-6 and the cell fields
    1e-5 of their maximum (2e-7).

    Not vacuous: the metal grows every step (by ~3 %, 3e6 x the tolerance), the electrode
    current is ~1.7 nA, plastic strain is non-zero. Catches: a partition-dependent term
    (a ghost contribution counted twice or missed, an owned-only reduction, a rank-local
    boundary or GB indicator), and a 3D run that fails on more than one rank.
    """
    config = tmp_path / "coupled3d.yaml"
    config.write_text(yaml.safe_dump(CASE))
    runs = {n: _cli_run(config, tmp_path / f"ranks{n}", n) for n in (1, 2)}
    one, two = runs[1], runs[2]
    s1, s2 = one["summary"], two["summary"]
    print(
        f"\n[3D coupled, {s1['dofs']} DOFs] wall {s1['wall_time_s']:.1f} s (1 rank), {s2['wall_time_s']:.1f} s "
        f"(2 ranks); Newton {s1['newton_iterations']} / {s2['newton_iterations']}"
    )
    assert (s1["mpi_size"], s2["mpi_size"]) == (1, 2)
    assert s1["status"] == s2["status"] == "completed"
    assert s1["steps"] == s2["steps"] == STEPS and s1["dofs"] == s2["dofs"]
    assert len(one["rows"]) == len(two["rows"]) == STEPS

    def rel(a, b):
        return abs(a - b) / abs(a)

    for k, (a, b) in enumerate(zip(one["rows"], two["rows"])):
        assert a["t"] == pytest.approx(b["t"], rel=1e-14)
        diffs = {key: rel(a[key], b[key]) for key in SERIES_TOL}
        print(f"  step {k + 1}: " + ", ".join(f"{key} {a[key]:.10g} ({diffs[key]:.0e})" for key in SERIES_TOL))
        for key, tol in SERIES_TOL.items():
            assert diffs[key] <= tol, f"step {k + 1}: {key} differs by {diffs[key]:.2e} (1 vs 2 ranks)"
    final = {key: rel(s1[key], s2[key]) for key in SUMMARY_KEYS}
    final.update({key: rel(one["integrals"][key], two["integrals"][key]) for key in one["integrals"]})
    values = {**{key: s1[key] for key in SUMMARY_KEYS}, **one["integrals"]}
    print("  final: " + ", ".join(f"int {key} {values[key]:.10g} ({final[key]:.0e})" for key in final))
    for key, diff in final.items():
        tol = 1e-6 if key in CELL_FIELDS else 1e-8
        assert diff <= tol, f"{key} differs by {diff:.2e} (1 vs 2 ranks)"

    g1, g2 = one["grid"], two["grid"]
    assert np.array_equal(g1.points, g2.points) and np.array_equal(g1.cells, g2.cells)  # original input order
    for name in POINT_FIELDS:
        a, b = np.asarray(g1.point_data[name]), np.asarray(g2.point_data[name])
        assert np.max(np.abs(a - b)) <= 1e-8 * np.max(np.abs(a)), name
    for name in CELL_FIELDS:
        a, b = np.asarray(g1.cell_data[name]), np.asarray(g2.cell_data[name])
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(a)), name

    metal = [row["metal_fraction"] for row in one["rows"]]
    assert all(b > a * (1 + 1e-2) for a, b in zip(metal, metal[1:])), metal
    assert min(row["electrode_current_A"] for row in one["rows"]) > 1e-10
    assert s1["max_plastic_strain"] > 0 and abs(one["integrals"]["phi_e_V"]) > 0
