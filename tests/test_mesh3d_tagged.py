"""Tagged 3D GB layers (issue 19, item 1): grains shrunk by w/2 from their Voronoi faces,
the rest of the box tagged GB_TAG, checked against the definition {d <= w/2}.

Every reference below is computed here from the seeds alone, without the code's Voronoi
geometry or its neighbour lists: grain i's interior is {x in box : (s_j - s_i).x <=
(s_j - s_i).(s_i + s_j)/2 - |s_j - s_i| w/2 for every j != i}, a convex polyhedron whose
volume scipy's HalfspaceIntersection + ConvexHull give.

Measured (4-grain 1 um cube of tests/test_3d.py, w = 80 nm, h_gb = w/2; flat slab of
tests/test_3d.py, h_gb = w/2), printed by the tests:
  GB volume / analytic slab volume - 1     4e-15 (GB volume fraction 0.1771; 0.959 A w)
  along a 100x conducting GB, G / exact - 1                          -1e-15
  across a 10x resistive GB, excess R / w (1/sigma_gb - 1/sigma_g) - 1  -2e-15

Collective: run serially and under ``mpirun -n 2 pytest``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, HalfspaceIntersection
from support import rprint

from mpi4py import MPI

import ufl
from dolfinx import fem
from dolfinx.fem.petsc import LinearProblem

from nzsp_fem.mesh import (
    BACK,
    BOTTOM,
    FRONT,
    GB_TAG,
    LEFT,
    RIGHT,
    TOP,
    MeshError,
    PolycrystalSpec,
    build_polycrystal,
    gb_indicator,
)

COMM = MPI.COMM_WORLD
UM = 1e-6
W = 80e-9
# The 4-grain 1 um cube of tests/test_3d.py, tagged instead of smooth.
CUBE = PolycrystalSpec(
    size=(1e-6, 1e-6, 1e-6),
    n_grains=4,
    seeds=None,
    rng_seed=3,
    gb_width=W,
    h_grain=250e-9,
    h_gb=40e-9,
    h_nucleus=250e-9,
    nuclei=(),
    nucleus_radius=50e-9,
    representation="tagged",
)
# tests/test_3d.py's flat slab: two grains, one GB on the plane y = 0.2 um.
SLAB = PolycrystalSpec(
    size=(0.4e-6, 0.4e-6, 0.2e-6),
    n_grains=2,
    seeds=((0.2e-6, 0.1e-6, 0.1e-6), (0.2e-6, 0.3e-6, 0.1e-6)),
    rng_seed=0,
    gb_width=W,
    h_grain=100e-9,
    h_gb=40e-9,
    h_nucleus=100e-9,
    nuclei=(),
    nucleus_radius=50e-9,
    representation="tagged",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("meshes3d") if COMM.rank == 0 else None
    return COMM.bcast(path, root=0)


@pytest.fixture(scope="module")
def cube(cache):
    return build_polycrystal(CUBE, COMM, cache_dir=cache)


def gsum(value) -> float:
    return COMM.allreduce(float(value), op=MPI.SUM)


def integrate(expr) -> float:
    return gsum(fem.assemble_scalar(fem.form(expr)))


def bisector_distances(seeds: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, d): the nearest seed of each point, and the distance to the nearest bisector
    plane between the owner and any other seed (all of them, not only neighbours: this
    only makes d smaller, so "d >= w/2" is the stronger check on grain cells)."""
    dist = np.linalg.norm(x[:, None, :] - seeds[None, :, :], axis=2)
    owner = dist.argmin(axis=1)
    d = np.full(len(x), np.inf)
    for i in range(len(seeds)):
        sel = owner == i
        for j in range(len(seeds)):
            if j != i:
                n = (seeds[j] - seeds[i]) / np.linalg.norm(seeds[j] - seeds[i])
                d[sel] = np.minimum(d[sel], (seeds[i] + seeds[j]) / 2 @ n - x[sel] @ n)
    return owner, d


def shrunk_volumes(seeds: np.ndarray, box: np.ndarray, w: float) -> np.ndarray:
    """Volume of each grain interior {x in cell i : d(x) >= w/2}, from the definition."""
    out = []
    for i, si in enumerate(seeds):
        rows = [(-np.eye(3)[a], 0.0) for a in range(3)] + [(np.eye(3)[a], box[a]) for a in range(3)]
        for j, sj in enumerate(seeds):
            if j != i:
                n = (sj - si) / np.linalg.norm(sj - si)
                rows.append((n, (si + sj) / 2 @ n - w / 2))
        A = np.array([r[0] for r in rows])
        b = np.array([r[1] for r in rows])
        lp = linprog([0, 0, 0, -1], A_ub=np.column_stack([A, np.ones(len(A))]), b_ub=b, bounds=[(None, None)] * 4)
        hs = HalfspaceIntersection(np.column_stack([A, -b]), lp.x[:3])
        out.append(ConvexHull(hs.intersections).volume)
    return np.array(out)


def test_gb_volume_against_shrunk_polyhedra(cube):
    """The GB cells' volume equals the box minus the shrunk polyhedra (computed here), and
    each grain tag's volume equals its polyhedron's. Asserted to 1e-8 (the issue asks for
    2 %: the mesh is exact for polyhedra, so any difference is a geometry error). Catches
    a shift by w instead of w/2 (GB volume ~2x), box faces shifted like GB faces (the
    grains lose a w/2 layer at the box), a neighbour's plane left out or a grain tagged
    with another grain's id."""
    dx = ufl.Measure("dx", domain=cube.mesh, subdomain_data=cube.cell_tags)
    one = fem.Constant(cube.mesh, 1.0)
    box, w = cube.box, cube.gb_width
    assert integrate(one * dx) == pytest.approx(float(np.prod(box)), rel=1e-10)
    grains = shrunk_volumes(np.asarray(cube.seeds), box, w)
    v_gb = integrate(one * dx(GB_TAG))
    exact = float(np.prod(box)) - grains.sum()
    nominal = cube.gb_length * w
    rprint(
        f"\n[tagged 3D, 1 um cube, 4 grains, w = {W * 1e9:.0f} nm, h_gb = {CUBE.h_gb * 1e9:.0f} nm, "
        f"{cube.mesh.topology.index_map(3).size_global} cells] GB volume {v_gb:.8f} um^3, analytic {exact:.8f} "
        f"({v_gb / exact - 1:+.1e}); fraction {v_gb / np.prod(box):.4f}; vs A w {v_gb / nominal:.4f} (junctions)"
    )
    assert v_gb == pytest.approx(exact, rel=1e-8)
    for g, v in zip(cube.grain_ids, grains):
        assert integrate(one * dx(g)) == pytest.approx(v, rel=1e-8)
    # beta of the problem: 1 on exactly these cells
    beta = gb_indicator(cube)
    assert integrate(beta * ufl.dx(domain=cube.mesh)) == pytest.approx(v_gb, rel=1e-12)


def test_cells_tagged_by_distance(cube):
    """Every cell carries one tag; grain cells lie in their own Voronoi cell at d >= w/2
    from every bisector plane (all vertices), GB cells within the band (centroid d < w/2,
    vertices d <= w/2). Up to 1e-9 um. Catches a GB layer on one side of a face only, a
    mis-tagged volume, GB cells left untagged; the box faces carry LEFT..BACK."""
    msh, tags = cube.mesh, cube.cell_tags
    w, tol = cube.gb_width, 1e-9
    n_local = msh.topology.index_map(3).size_local
    owned = tags.indices < n_local
    assert gsum(owned.sum()) == msh.topology.index_map(3).size_global
    assert np.array_equal(np.sort(tags.indices[owned]), np.arange(n_local))
    found = set().union(*COMM.allgather(set(np.unique(tags.values).tolist())))
    assert found == {1, 2, 3, 4, GB_TAG}
    seeds = np.asarray(cube.seeds)
    xc = msh.geometry.x[msh.geometry.dofmap[tags.indices[owned]]]  # (c, 4, 3)
    values = tags.values[owned]
    owner, d = bisector_distances(seeds, xc.reshape(-1, 3))
    owner, d = owner.reshape(-1, 4), d.reshape(-1, 4)
    _, d_mid = bisector_distances(seeds, xc.mean(axis=1))
    grain = values != GB_TAG
    assert np.all(owner[grain] == values[grain, None] - 1)
    worst_grain = COMM.allreduce(float(np.min(d[grain], initial=np.inf)), op=MPI.MIN)
    worst_gb = COMM.allreduce(float(np.max(d[~grain], initial=-np.inf)), op=MPI.MAX)
    rprint(
        f"\nmin d over grain-cell vertices {worst_grain / w:.6f} w; max d over GB-cell vertices {worst_gb / w:.6f} w"
    )
    assert worst_grain >= w / 2 - tol
    assert worst_gb <= w / 2 + tol
    assert np.all(d_mid[~grain] < w / 2)
    ds = ufl.Measure("ds", domain=msh, subdomain_data=cube.facet_tags)
    one = fem.Constant(msh, 1.0)
    x = ufl.SpatialCoordinate(msh)
    for tag, axis, value in ((LEFT, 0, 0.0), (RIGHT, 0, 1.0), (BOTTOM, 1, 0.0), (TOP, 1, 1.0), (FRONT, 2, 0.0)):
        assert integrate(one * ds(tag)) == pytest.approx(1.0, rel=1e-10)
        assert integrate(x[axis] * ds(tag)) == pytest.approx(value, abs=1e-10)
    assert integrate(one * ds(BACK)) == pytest.approx(1.0, rel=1e-10)


def conductance(poly, sigma, ground: int, terminal: int) -> float:
    """Conductance between two faces (scaled units): the sigma-weighted Dirichlet energy of
    the P1 solution of div(sigma grad phi) = 0, phi = 0 / 1 there, other faces insulated."""
    msh = poly.mesh
    V = fem.functionspace(msh, ("Lagrange", 1))
    bcs = [
        fem.dirichletbc(fem.Constant(msh, value), fem.locate_dofs_topological(V, 2, poly.facet_tags.find(tag)), V)
        for tag, value in ((ground, 0.0), (terminal, 1.0))
    ]
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    opts = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
    phi = LinearProblem(
        ufl.inner(sigma * ufl.grad(u), ufl.grad(v)) * ufl.dx,
        fem.Constant(msh, 0.0) * v * ufl.dx,
        bcs=bcs,
        petsc_options=opts,
    ).solve()
    return integrate(sigma * ufl.inner(ufl.grad(phi), ufl.grad(phi)) * ufl.dx)


def test_slab_conductance_along_and_across(cache):
    """One flat tagged GB (plane y = 0.2 um, w = 80 nm), sigma = 1 + beta (k - 1).

    Along it (k = 100, current from x = 0 to x = Lx): G Lx = k w Lz + (Ly - w) Lz. Across it
    (k = 0.1, from y = 0 to y = Ly): R Lx Lz = Ly - w + w / k. Both P1 solutions are exact
    (phi linear in x; piecewise linear in y with kinks on the slab faces, which the mesh
    conforms to), so both are asserted to 1e-8 (the issue asks for 5 %). A slab of the
    wrong width, shifted off the plane (cut by the box face) or a beta that misses GB cells
    fails; the smooth GB keeps 0.24-0.38 of this excess resistance (tests/test_3d.py)."""
    poly = build_polycrystal(SLAB, COMM, cache_dir=cache)
    Lx, Ly, Lz = poly.box
    w = poly.gb_width
    beta = gb_indicator(poly)
    along, across = 100.0, 0.1
    g_along = conductance(poly, 1.0 + beta * (along - 1.0), LEFT, RIGHT) * Lx
    g_across = conductance(poly, 1.0 + beta * (across - 1.0), BOTTOM, TOP)
    exact_along = along * w * Lz + (Ly - w) * Lz
    excess = Lx * Lz / g_across - Ly
    exact_excess = w * (1.0 / across - 1.0)
    rprint(
        f"\n[tagged flat GB slab, w = {W * 1e9:.0f} nm, h_gb = {SLAB.h_gb * 1e9:.0f} nm, "
        f"{poly.mesh.topology.index_map(3).size_global} cells] along (x{along:g}): G / exact - 1 = "
        f"{g_along / exact_along - 1:+.1e}; across (x{across:g}): excess resistance / exact - 1 = "
        f"{excess / exact_excess - 1:+.1e}; total R / exact - 1 = {Lx * Lz / g_across / (Ly + exact_excess) - 1:+.1e}"
    )
    assert g_along == pytest.approx(exact_along, rel=1e-8)
    assert excess == pytest.approx(exact_excess, rel=1e-8)


def test_single_grain_and_vanishing_grain(cache):
    """One grain: the whole box, no GB cells. A grain thinner than w: a one-line MeshError
    on every rank (raised while building on rank 0)."""
    single = build_polycrystal(dataclasses.replace(SLAB, seeds=None, n_grains=1), COMM, cache_dir=cache)
    assert single.grain_ids == [1]
    assert integrate(gb_indicator(single) * ufl.dx(domain=single.mesh)) == 0.0
    assert integrate(fem.Constant(single.mesh, 1.0) * ufl.dx(domain=single.mesh)) == pytest.approx(0.032, rel=1e-10)
    seeds = ((0.1e-6, 0.2e-6, 0.1e-6), (0.2e-6, 0.2e-6, 0.1e-6), (0.26e-6, 0.2e-6, 0.1e-6), (0.35e-6, 0.2e-6, 0.1e-6))
    with pytest.raises(MeshError, match=r"grain 2 .* vanishes .*microstructure\.gb_width \(80 nm\)"):
        build_polycrystal(dataclasses.replace(SLAB, seeds=seeds, n_grains=4), COMM, cache_dir=cache)
