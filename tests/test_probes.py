"""nzsp_fem.probes.ProbeEvaluator; serial and under ``mpirun -n 2`` (every test is collective)."""

from __future__ import annotations

import numpy as np
import pytest

from mpi4py import MPI

from dolfinx import fem, mesh

from nzsp_fem.io.probes import ProbeEvaluator

COMM = MPI.COMM_WORLD
N = 8  # cells per side; the DG0 test fields are constant on blocks of 2x2 squares


def unit_square(comm=COMM):
    return mesh.create_unit_square(comm, N, N, ghost_mode=mesh.GhostMode.shared_facet)


def linear(x):
    return 1.0 + 2.0 * x[0] - 3.0 * x[1]


def quadratic(x):
    return 0.5 + x[0] * x[0] - 2.0 * x[0] * x[1] + 0.25 * x[1] * x[1]


def block(x):
    """Index of the 2x2-square block (width 1/4) holding x: constant on every cell."""
    return np.minimum(np.floor(4.0 * x[0]), 3), np.minimum(np.floor(4.0 * x[1]), 3)


def block_scalar(x):
    i, j = block(x)
    return i + 10.0 * j


def block_vector(x):
    i, j = block(x)
    return np.vstack([i + 1.0, -2.0 * j])


def probe_points():
    """Every vertex of the N x N mesh, every facet midpoint, and a few interior points."""
    g = np.linspace(0.0, 1.0, N + 1)
    X, Y = np.meshgrid(g, g, indexing="ij")
    verts = np.column_stack([X.ravel(), Y.ravel()])
    h = 1.0 / N
    mids = [verts + [0.5 * h, 0.0], verts + [0.0, 0.5 * h], verts + [0.5 * h, 0.5 * h]]
    mids = np.vstack(mids)
    mids = mids[np.all(mids <= 1.0, axis=1)]
    rng = np.random.default_rng(7)
    inner = rng.uniform(0.0, 1.0, size=(25, 2))
    return np.vstack([verts, mids, inner])


def spaces(msh):
    P1 = fem.functionspace(msh, ("Lagrange", 1))
    P2 = fem.functionspace(msh, ("Lagrange", 2))
    D0 = fem.functionspace(msh, ("DG", 0))
    D0v = fem.functionspace(msh, ("DG", 0, (2,)))
    u1, u2, d, dv = fem.Function(P1), fem.Function(P2), fem.Function(D0), fem.Function(D0v)
    u1.interpolate(linear)
    u2.interpolate(quadratic)
    d.interpolate(block_scalar)
    dv.interpolate(block_vector)
    return u1, u2, d, dv


def test_linear_quadratic_exact_on_vertices_facets_and_interior():
    msh = unit_square()
    u1, u2, _, _ = spaces(msh)
    pts = probe_points()
    probes = ProbeEvaluator(msh, pts)
    v1 = probes.evaluate(u1)
    v2 = probes.evaluate(u2, root=None)
    assert v2.shape == (len(pts),)
    np.testing.assert_allclose(v2, quadratic(pts.T), rtol=0.0, atol=1e-12)
    if COMM.rank == 0:
        assert v1.shape == (len(pts),)
        np.testing.assert_allclose(v1, linear(pts.T), rtol=0.0, atol=1e-12)
    else:
        assert v1 is None


def test_each_point_owned_once_including_partition_boundary():
    msh = unit_square()
    pts = probe_points()
    probes = ProbeEvaluator(msh, pts)
    count = np.zeros(len(pts), dtype=np.int64)
    count[probes.local_points] = 1
    total = np.empty_like(count)
    COMM.Allreduce(count, total, op=MPI.SUM)
    assert np.all(total == 1)
    assert np.all(probes.owner_rank[probes.local_points] == COMM.rank)

    # Vertices shared between ranks (ghosts somewhere) are among the probe points.
    imap = msh.topology.index_map(0)
    ghost_vertices = np.arange(imap.size_local, imap.size_local + imap.num_ghosts, dtype=np.int32)
    gx = np.zeros((0, 2))
    if ghost_vertices.size:  # (entities_to_geometry raises SIGFPE on an empty list)
        msh.topology.create_connectivity(0, msh.topology.dim)
        nodes = mesh.entities_to_geometry(msh, 0, ghost_vertices).ravel()
        gx = msh.geometry.x[nodes, :2]
    shared = np.vstack(COMM.allgather(gx))
    if COMM.size > 1:
        assert len(shared) > 0
        dist = np.min(np.linalg.norm(shared[:, None, :] - pts[None, :, :], axis=2), axis=1)
        assert np.all(dist < 1e-14)

    # Values at the shared vertices are those of a direct Function.eval.
    u1, _, _, _ = spaces(msh)
    got = ProbeEvaluator(msh, shared).evaluate(u1, root=None) if len(shared) else np.zeros(0)
    np.testing.assert_allclose(got, linear(shared.T), rtol=0.0, atol=1e-12)


def test_dg0_scalar_and_vector_magnitude():
    msh = unit_square()
    _, _, d, dv = spaces(msh)
    pts = probe_points()
    probes = ProbeEvaluator(msh, pts)
    out = probes.evaluate_all({"d": d, "dv": dv, "dvm": dv}, magnitude={"dvm"}, root=None)
    assert out["dv"].shape == (len(pts), 2)
    # Interior points of a block (not on a block edge): the block value, exactly.
    b = 4.0 * pts
    off_edges = np.all(np.abs(b - np.round(b)) > 1e-9, axis=1)
    assert off_edges.sum() > 20
    np.testing.assert_array_equal(out["d"][off_edges], block_scalar(pts[off_edges].T))
    np.testing.assert_array_equal(out["dv"][off_edges], block_vector(pts[off_edges].T).T)
    np.testing.assert_allclose(out["dvm"], np.linalg.norm(out["dv"], axis=1), rtol=1e-15)
    # Every value, including points on block edges, is that of the chosen cell: compare
    # against Function.eval in that same cell (on the owning rank).
    loc = probes.local_points
    if loc.size:
        direct = d.eval(pts_3d(pts[loc]), probes._local_cells, np.zeros((loc.size, 1)))
        np.testing.assert_array_equal(out["d"][loc], direct[:, 0])


def pts_3d(p):
    return np.column_stack([p, np.zeros(len(p))])


def test_choice_of_cell_is_partition_independent():
    """DG0 values on block edges (ambiguous cell) match a serial mesh on every rank."""
    msh = unit_square()
    _, _, d, dv = spaces(msh)
    pts = probe_points()
    par = ProbeEvaluator(msh, pts).evaluate(d, root=None)
    ser_mesh = unit_square(MPI.COMM_SELF)
    _, _, d_s, _ = spaces(ser_mesh)
    ser = ProbeEvaluator(ser_mesh, pts).evaluate(d_s, root=None)
    np.testing.assert_array_equal(par, ser)


def test_points_in_3d_form_and_single_point():
    msh = unit_square()
    u1, _, _, _ = spaces(msh)
    p = np.array([[0.3, 0.7, 0.0]])
    val = ProbeEvaluator(msh, p).evaluate(u1, root=None)
    np.testing.assert_allclose(val, [linear(p[0])], atol=1e-12)
    val = ProbeEvaluator(msh, [0.3, 0.7]).evaluate(u1, root=None)
    np.testing.assert_allclose(val, [linear(p[0])], atol=1e-12)


def test_point_outside_raises_naming_it():
    msh = unit_square()
    with pytest.raises(ValueError, match=r"point 1 at \(1\.5, 0\.5\)"):
        ProbeEvaluator(msh, np.array([[0.5, 0.5], [1.5, 0.5]]))
    # Just outside beyond the tolerance, and on the boundary (accepted).
    with pytest.raises(ValueError, match="outside the mesh"):
        ProbeEvaluator(msh, np.array([[1.0 + 1e-6, 0.5]]))
    ProbeEvaluator(msh, np.array([[1.0, 1.0], [0.0, 0.0], [1.0 + 1e-13, 0.5]]))
