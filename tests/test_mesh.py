"""Tests of nzsp_fem.mesh; run serially and under ``mpirun -n 2`` (every test is collective)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from mpi4py import MPI

import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh

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
    gb_distance,
    gb_indicator,
    spec_key,
    validate,
)

COMM = MPI.COMM_WORLD

# 2 um x 1 um, 5 grains, 40 nm GBs resolved by 20 nm elements
SPEC2D = PolycrystalSpec(
    size=(2e-6, 1e-6),
    n_grains=5,
    seeds=None,
    rng_seed=1,
    gb_width=40e-9,
    h_grain=150e-9,
    h_gb=20e-9,
    h_nucleus=50e-9,
    nuclei=None,
    nucleus_radius=50e-9,
    length_scale=1e-6,
    representation="tagged",
)


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    """One cache directory for all ranks: rank 0's tmp dir, broadcast."""
    path = tmp_path_factory.mktemp("meshes") if COMM.rank == 0 else None
    return COMM.bcast(path, root=0)


@pytest.fixture(scope="module")
def poly2d(cache_root):
    return build_polycrystal(SPEC2D, COMM, cache_dir=cache_root / "2d")


def integrate(form_expr) -> float:
    return COMM.allreduce(fem.assemble_scalar(fem.form(form_expr)), op=MPI.SUM)


def cell_measure(poly):
    return ufl.Measure("dx", domain=poly.mesh, subdomain_data=poly.cell_tags)


def junction_deficit(segments: np.ndarray, w: float) -> float:
    """GB area missing from gb_length * w at junctions, from the centre lines alone.

    Offsetting the edges of a convex cell inward by w/2 (mitred corners) removes
    (w/2)^2 cot(theta/2) per corner of angle theta, relative to length * w/2 per side.
    Where a GB meets the box, the two sides' terms cancel (cot(phi) = -cot(pi - phi)).
    """
    ends: dict[tuple, list] = {}
    for s in segments:
        for a, b in ((0, 1), (1, 0)):
            ends.setdefault(tuple(np.round(s[a], 9)), []).append(s[b] - s[a])
    deficit = 0.0
    for dirs in ends.values():
        if len(dirs) < 3:
            continue
        ang = np.sort([np.arctan2(d[1], d[0]) for d in dirs])
        theta = np.diff(np.r_[ang, ang[0] + 2 * np.pi])
        deficit += (w / 2) ** 2 * np.sum(1.0 / np.tan(theta / 2))
    return deficit


def voronoi_edges_by_definition(seeds: np.ndarray, box) -> np.ndarray:
    """The 2D Voronoi edges inside the box, straight from the definition (no Voronoi
    library, no mirror seeds): the edge between seeds i and j is the part of their
    bisector inside the box where no other seed is closer, an interval of the line's
    parameter t cut by linear inequalities. Returns (n, 2, 2) segments."""
    box = np.asarray(box, dtype=float)
    out = []
    for i in range(len(seeds)):
        for j in range(i + 1, len(seeds)):
            m = 0.5 * (seeds[i] + seeds[j])
            d = seeds[j] - seeds[i]
            d = np.array([-d[1], d[0]]) / np.linalg.norm(d)
            # Constraints a t <= b: inside the box, and closer to i (= j) than to any k.
            rows = [(-d[a], m[a]) for a in range(2)] + [(d[a], box[a] - m[a]) for a in range(2)]
            for k in range(len(seeds)):
                if k not in (i, j):
                    n = 2.0 * (seeds[k] - seeds[i])
                    rows.append((n @ d, seeds[k] @ seeds[k] - seeds[i] @ seeds[i] - n @ m))
            lo, hi = -np.inf, np.inf
            for a, b in rows:
                if abs(a) < 1e-14:
                    if b < 0:
                        lo, hi = 1.0, 0.0
                elif a > 0:
                    hi = min(hi, b / a)
                else:
                    lo = max(lo, b / a)
            if hi - lo > 1e-9:
                out.append([m + lo * d, m + hi * d])
    return np.array(out)


def _same_segments(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Equal as unordered sets of unoriented segments."""
    if len(a) != len(b):
        return False
    unused = list(range(len(b)))
    for s in a:
        hit = [k for k in unused if min(np.abs(s - b[k]).max(), np.abs(s[::-1] - b[k]).max()) < tol]
        if not hit:
            return False
        unused.remove(hit[0])
    return True


def test_gb_area_fraction(poly2d):
    """The GB cells' area against the Voronoi edges of the seeds, computed here from the
    definition of a Voronoi edge (not from the code's segments, which come from
    scipy.spatial.Voronoi of mirrored seeds). Catches wrong GB segments (a lost or extra
    edge, a mirror seed leaking an edge into the box, a mis-snapped vertex: segments or
    gb_length differ from the definition) and GB strips of the wrong width or offset
    (the area differs from the mitred-offset prediction, which is exact to round-off)."""
    dx = cell_measure(poly2d)
    one = fem.Constant(poly2d.mesh, 1.0)
    assert integrate(one * dx) == pytest.approx(2.0, rel=1e-10)
    a_gb = integrate(one * dx(GB_TAG))
    w = poly2d.gb_width
    segments = voronoi_edges_by_definition(np.asarray(poly2d.seeds), poly2d.box)
    length = float(np.sum(np.linalg.norm(segments[:, 1] - segments[:, 0], axis=1)))
    assert _same_segments(segments, np.asarray(poly2d.gb_segments), tol=1e-9), (segments, poly2d.gb_segments)
    assert poly2d.gb_length == pytest.approx(length, rel=1e-12)
    nominal = length * w
    # The strips are the mitred offsets of the Voronoi edges, so the GB area falls short of
    # length * w by (w/2)^2 * sum cot(theta/2) per triple junction (~0.43 w^2 for 120
    # degree junctions: 3 junctions here, ~0.5 % each). Straight edges are meshed exactly,
    # so the area equals that prediction to round-off, and the nominal one within 3 %.
    expected = nominal - junction_deficit(segments, w)
    assert a_gb == pytest.approx(expected, rel=1e-9)
    assert a_gb == pytest.approx(nominal, rel=0.03)
    if COMM.rank == 0:
        print(f"\nGB area {a_gb:.6g} vs gb_length*gb_width {nominal:.6g}: {a_gb / nominal - 1:+.3%}")


def test_every_grain_tagged(poly2d):
    local = set(np.unique(poly2d.cell_tags.values).tolist())
    tags = set().union(*COMM.allgather(local))
    assert tags == set(poly2d.grain_ids) | {GB_TAG}
    assert poly2d.grain_ids == [1, 2, 3, 4, 5]
    dx = cell_measure(poly2d)
    one = fem.Constant(poly2d.mesh, 1.0)
    for g in poly2d.grain_ids:
        assert integrate(one * dx(g)) > 0.01  # every grain is a sizeable part of the 2 um^2
    tdim = poly2d.mesh.topology.dim
    # every cell has exactly one tag
    n_tagged = COMM.allreduce(int(np.sum(poly2d.cell_tags.indices < poly2d.mesh.topology.index_map(tdim).size_local)))
    assert n_tagged == poly2d.mesh.topology.index_map(tdim).size_global


def test_electrode_facets(poly2d):
    msh, ft = poly2d.mesh, poly2d.facet_tags
    Lx, Ly = poly2d.box
    ds = ufl.Measure("ds", domain=msh, subdomain_data=ft)
    one = fem.Constant(msh, 1.0)
    for tag, length in ((LEFT, Ly), (RIGHT, Ly), (BOTTOM, Lx), (TOP, Lx)):
        assert integrate(one * ds(tag)) == pytest.approx(length, rel=1e-10)
    fdim = msh.topology.dim - 1
    n_owned = msh.topology.index_map(fdim).size_local
    for tag, axis, value in ((LEFT, 0, 0.0), (RIGHT, 0, Lx)):
        on_edge = dmesh.locate_entities_boundary(msh, fdim, lambda x: np.isclose(x[axis], value, atol=1e-12))
        tagged = ft.find(tag)
        # same facets, and the same number summed over ranks (owned ones only)
        assert set(on_edge[on_edge < n_owned]) == set(tagged[tagged < n_owned])
        n_edge = COMM.allreduce(int(np.sum(on_edge < n_owned)))
        n_tag = COMM.allreduce(int(np.sum(tagged < n_owned)))
        assert n_edge == n_tag > 0


def test_key_and_bytes_reproducible(cache_root):
    a = build_polycrystal(SPEC2D, COMM, cache_dir=cache_root / "a")
    b = build_polycrystal(SPEC2D, COMM, cache_dir=cache_root / "b")
    assert a.key == b.key == spec_key(SPEC2D)
    assert a.msh_path.name == f"{a.key}.msh"
    if COMM.rank == 0:
        digests = [hashlib.sha256(p.msh_path.read_bytes()).hexdigest() for p in (a, b)]
        mtime = a.msh_path.stat().st_mtime_ns
    else:
        digests, mtime = None, None
    digests = COMM.bcast(digests, root=0)
    assert digests[0] == digests[1]
    # a second build in the same directory reuses the file
    c = build_polycrystal(SPEC2D, COMM, cache_dir=cache_root / "a")
    if COMM.rank == 0:
        assert c.msh_path.stat().st_mtime_ns == mtime
        assert not [p for p in c.msh_path.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    assert c.mesh.topology.index_map(2).size_global == a.mesh.topology.index_map(2).size_global
    assert spec_key(dataclasses.replace(SPEC2D, rng_seed=2)) != a.key
    assert spec_key(dataclasses.replace(SPEC2D, h_gb=19e-9)) != a.key
    # explicit seeds make n_grains and rng_seed irrelevant
    seeded = dataclasses.replace(SPEC2D, seeds=((0.5e-6, 0.5e-6), (1.5e-6, 0.5e-6)))
    assert spec_key(seeded) == spec_key(dataclasses.replace(seeded, n_grains=9, rng_seed=7))


def test_bad_geometry_raises(cache_root):
    cases = [
        (dict(gb_width=0.8e-6), r"microstructure\.gb_width \(800 nm\) is not smaller than the typical grain size"),
        (dict(nuclei=((2.5e-6, 0.5e-6),)), r"nuclei\.positions.*outside the domain"),
        (dict(h_gb=50e-9), r"mesh\.size_gb \(50 nm\) is larger than microstructure\.gb_width \(40 nm\)"),
        (dict(seeds=((0.5e-6, 0.5e-6), (2.1e-6, 0.5e-6))), r"microstructure\.seeds"),
        (dict(n_grains=0), r"microstructure\.grains"),
        (dict(h_grain=-1e-9), r"mesh\.size_grain must be positive"),
        (dict(representation="diffuse"), r"microstructure\.gb_representation must be 'tagged' or 'smooth'"),
    ]
    for change, pattern in cases:
        spec = dataclasses.replace(SPEC2D, **change)
        with pytest.raises(MeshError, match=pattern):
            validate(spec)
        with pytest.raises(MeshError, match=pattern):
            build_polycrystal(spec, COMM, cache_dir=cache_root / "bad")
    # passes validate() but grain 2 is only 30 nm wide: fails inside the rank-0 build, and
    # every rank must get the error (no rank left waiting in a collective)
    seeds = ((0.5e-6, 0.5e-6), (0.53e-6, 0.5e-6), (0.56e-6, 0.5e-6), (1.5e-6, 0.5e-6))
    with pytest.raises(MeshError, match=r"grain 2 .* vanishes .*microstructure\.gb_width \(40 nm\)"):
        build_polycrystal(dataclasses.replace(SPEC2D, seeds=seeds), COMM, cache_dir=cache_root / "bad")


def test_gb_indicator_tagged(poly2d):
    beta = gb_indicator(poly2d)
    assert beta.function_space.ufl_element().embedded_superdegree == 0
    assert set(np.unique(beta.x.array)) <= {0.0, 1.0}
    one = fem.Constant(poly2d.mesh, 1.0)
    a_gb = integrate(one * cell_measure(poly2d)(GB_TAG))
    assert integrate(beta * ufl.dx(domain=poly2d.mesh)) == pytest.approx(a_gb, rel=1e-12)


def test_symmetric_seeds_and_single_grain(cache_root):
    # Two seeds mirrored into a regular lattice: every Voronoi vertex is degenerate
    # (4 cocircular points). One straight GB at x = 1 um: GB area exactly w * Ly.
    spec = dataclasses.replace(SPEC2D, seeds=((0.5e-6, 0.5e-6), (1.5e-6, 0.5e-6)), h_grain=250e-9)
    poly = build_polycrystal(spec, COMM, cache_dir=cache_root / "sym")
    assert poly.gb_length == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(poly.gb_segments[0][:, 0], [1.0, 1.0], atol=1e-12)
    one = fem.Constant(poly.mesh, 1.0)
    assert integrate(one * cell_measure(poly)(GB_TAG)) == pytest.approx(0.04, rel=1e-10)
    x = np.array([[0.2, 0.99, 1.0, 1.3], [0.5, 0.1, 0.7, 0.9], [0, 0, 0, 0]])
    np.testing.assert_allclose(gb_distance(poly, x), [0.8, 0.01, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(poly.nuclei, [[0.5, 0.5], [1.5, 0.5]], atol=1e-12)

    single = build_polycrystal(
        dataclasses.replace(SPEC2D, n_grains=1, h_grain=250e-9), COMM, cache_dir=cache_root / "one"
    )
    assert single.gb_length == 0.0 and single.grain_ids == [1]
    assert integrate(one * ufl.dx(domain=single.mesh)) == pytest.approx(2.0, rel=1e-10)
    assert integrate(gb_indicator(single) * ufl.dx(domain=single.mesh)) == 0.0


def test_smooth_2d(cache_root):
    poly = build_polycrystal(dataclasses.replace(SPEC2D, representation="smooth"), COMM, cache_dir=cache_root / "s2")
    dx = cell_measure(poly)
    one = fem.Constant(poly.mesh, 1.0)
    assert integrate(one * dx) == pytest.approx(2.0, rel=1e-10)
    for g in poly.grain_ids:
        assert integrate(one * dx(g)) > 0.01
    beta = gb_indicator(poly)
    assert beta.x.array.min() >= 0.0 and beta.x.array.max() <= 1.0
    # junction deficit (-1.4 % here) and P1 interpolation at h = w/2 (about +1.4 %)
    nominal = poly.gb_length * poly.gb_width
    assert integrate(beta * ufl.dx(domain=poly.mesh)) == pytest.approx(nominal, rel=0.05)


def test_3d_smooth(cache_root):
    spec = PolycrystalSpec(
        size=(1e-6, 1e-6, 1e-6),
        n_grains=4,
        seeds=None,
        rng_seed=3,
        gb_width=80e-9,
        h_grain=250e-9,
        h_gb=40e-9,
        h_nucleus=250e-9,
        nuclei=None,
        nucleus_radius=50e-9,
        representation="smooth",
    )
    poly = build_polycrystal(spec, COMM, cache_dir=cache_root / "3d")
    msh = poly.mesh
    assert msh.geometry.dim == 3 and len(poly.gb_segments) > 0
    one = fem.Constant(msh, 1.0)
    assert integrate(one * ufl.dx(domain=msh)) == pytest.approx(1.0, rel=1e-10)
    ds = ufl.Measure("ds", domain=msh, subdomain_data=poly.facet_tags)
    x = ufl.SpatialCoordinate(msh)
    for tag, axis, value in (
        (LEFT, 0, 0.0),
        (RIGHT, 0, 1.0),
        (BOTTOM, 1, 0.0),
        (TOP, 1, 1.0),
        (FRONT, 2, 0.0),
        (BACK, 2, 1.0),
    ):
        assert integrate(one * ds(tag)) == pytest.approx(1.0, rel=1e-10)
        assert integrate(x[axis] * ds(tag)) == pytest.approx(value, abs=1e-10)  # on the right face
    dx = cell_measure(poly)
    for g in poly.grain_ids:
        assert integrate(one * dx(g)) > 0.01
    beta = gb_indicator(poly)
    integral = integrate(beta * ufl.dx(domain=msh))
    nominal = poly.gb_length * poly.gb_width
    # Two systematic shortfalls, both measured for this case: mitred triple lines remove
    # ~0.43 w^2 per unit triple-line length (-4.5 %, from a fine-grid quadrature of the
    # exact profile), and P1 interpolation of the tanh profile on tets with h = w/2 (-4 %).
    # Total -8.5 %; 15 % leaves room for other seeds without hiding a wrong width (2x).
    assert integral == pytest.approx(nominal, rel=0.15)
    if COMM.rank == 0:
        print(f"\n3D: int beta {integral:.5g} vs gb_area*gb_width {nominal:.5g}: {integral / nominal - 1:+.2%}")
