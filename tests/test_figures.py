"""Tests of nzsp_fem.figures; run serially and under ``mpirun -n 2``.

Gathering is collective (every rank calls it); drawing happens on rank 0, where the
gathered grid lives, and the plot functions return None on the other ranks.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpi4py import MPI

from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.io import drawing
from nzsp_fem.io.figures import (
    Panel,
    gather_cell_field,
    gather_grid,
    nice_length,
    plot_comparison,
    plot_fields,
    plot_initial_state,
    plot_probes,
)
from nzsp_fem.mesh import GB_TAG

COMM = MPI.COMM_WORLD
N = 8  # unit square, N x N x 2 triangles


def _u(x):
    return 1.0 + x[0] + 2.0 * x[1]


def _c(x):
    return x[0] * x[1]


def _v(x):
    return np.vstack([x[0], -2.0 * x[1]])


def _eta(x):  # a nucleus of radius 0.15 at (0.3, 0.5)
    return 0.5 * (1.0 - np.tanh((np.hypot(x[0] - 0.3, x[1] - 0.5) - 0.15) / 0.03))


def _beta(x):  # a GB strip along x = 0.6
    return (np.abs(x[0] - 0.6) < 0.08).astype(float)


def _functions(msh):
    V = fem.functionspace(msh, ("Lagrange", 1))
    V2 = fem.functionspace(msh, ("Lagrange", 2))
    Q = fem.functionspace(msh, ("DG", 0))
    Qv = fem.functionspace(msh, ("DG", 0, (2,)))
    out = {}
    for name, space, f in (
        ("u", V, _u),
        ("eta", V, _eta),
        ("u2", V2, _u),
        ("c", Q, _c),
        ("beta", Q, _beta),
        ("v", Qv, _v),
    ):
        out[name] = fem.Function(space, name=name)
        out[name].interpolate(f)
        out[name].x.scatter_forward()
    return out


def _grain_tags(msh):
    """Grain 1 left of the strip, 2 right of it, GB_TAG in it (cell midpoints)."""
    tdim = msh.topology.dim
    n = msh.topology.index_map(tdim).size_local + msh.topology.index_map(tdim).num_ghosts
    cells = np.arange(n, dtype=np.int32)
    mid = dmesh.compute_midpoints(msh, tdim, cells)
    values = np.where(_beta(mid.T) > 0.5, GB_TAG, np.where(mid[:, 0] < 0.6, 1, 2)).astype(np.int32)
    return dmesh.meshtags(msh, tdim, cells, values)


def _gather(comm):
    msh = dmesh.create_unit_square(comm, N, N)
    f = _functions(msh)
    return gather_grid(
        msh,
        {"u": f["u"], "eta": f["eta"], "u2": f["u2"]},
        {"c": f["c"], "beta": f["beta"], "v": f["v"]},
        {"grain": _grain_tags(msh)},
        length_scale=1e-6,
    )


@pytest.fixture(scope="module")
def grid():
    return _gather(COMM)


@pytest.fixture(scope="module")
def serial_grid():
    """The same mesh and fields gathered on one process (rank 0 only)."""
    return _gather(MPI.COMM_SELF) if COMM.rank == 0 else None


def _check_png(path, min_colours: int = 8):
    """A valid PNG: signature, nonzero size, a white background and real content."""
    import pyvista as pv

    assert path.exists() and path.stat().st_size > 1000
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    img = pv.read(str(path))
    pixels = np.asarray(img.point_data[img.point_data.keys()[0]])[:, :3].astype(float)
    assert pixels.std() > 10.0, "image is (nearly) a single flat colour"
    packed = (pixels[:, 0] * 256 + pixels[:, 1]) * 256 + pixels[:, 2]
    assert len(np.unique(packed)) >= min_colours
    nx, ny, _ = img.dimensions
    corners = pixels.reshape(ny, nx, 3)[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners > 250), "background is not white"
    return nx, ny


# --------------------------------------------------------------------------- gathering


def test_gather_grid_global_and_equal_to_serial(grid, serial_grid):
    if COMM.rank != 0:
        assert grid is None
        return
    assert grid.n_cells == 2 * N * N == serial_grid.n_cells
    assert grid.n_points == (N + 1) ** 2 == serial_grid.n_points  # shared vertices merged
    assert float(grid.field_data["metres_per_unit"][0]) == 1e-6
    for name in ("u", "eta", "u2"):
        assert np.isclose(grid.point_data[name].sum(), serial_grid.point_data[name].sum(), rtol=1e-12)
    for name in ("c", "beta", "v", "v_magnitude", "grain"):
        assert np.allclose(grid.cell_data[name].sum(axis=0), serial_grid.cell_data[name].sum(axis=0), rtol=1e-12)
        # cells come in the original input order whatever the number of ranks
        assert np.allclose(grid.cell_data[name], serial_grid.cell_data[name])
    assert np.allclose(grid.cell_centers().points, serial_grid.cell_centers().points)


def test_gather_grid_values(grid):
    if COMM.rank != 0:
        return
    x = grid.points.T
    assert np.allclose(grid.point_data["u"], _u(x))
    assert np.allclose(grid.point_data["u2"], _u(x))  # P2 interpolated to the vertices
    mid = grid.cell_centers().points.T
    assert np.allclose(grid.cell_data["c"], _c(mid))
    v = grid.cell_data["v"]
    assert v.shape == (2 * N * N, 3) and np.allclose(v[:, 2], 0.0)  # 2D vectors padded to 3D
    assert np.allclose(v[:, :2], _v(mid).T)
    assert np.allclose(grid.cell_data["v_magnitude"], np.linalg.norm(_v(mid), axis=0))
    assert set(np.unique(grid.cell_data["grain"])) == {1, 2, GB_TAG}
    assert grid.cell_data["grain"].dtype == np.int32


def test_gather_cell_field_dispatch():
    msh = dmesh.create_unit_square(COMM, 4, 4)
    f = _functions(msh)
    g_cell = gather_cell_field(msh, f["v"])
    g_point = gather_cell_field(msh, f["u"])
    if COMM.rank != 0:
        assert g_cell is None and g_point is None
        return
    assert set(g_cell.cell_data.keys()) == {"v", "v_magnitude"} and g_cell.n_cells == 32
    assert list(g_point.point_data.keys()) == ["u"] and g_point.n_points == 25


def test_gather_rejects_wrong_spaces():
    import basix.ufl

    msh = dmesh.create_unit_square(COMM, 2, 2)
    f = _functions(msh)
    with pytest.raises(ValueError, match="DG0"):
        gather_grid(msh, cell_fields={"u": f["u"]})
    with pytest.raises(ValueError, match="continuous"):
        gather_grid(msh, point_fields={"c": f["c"]})
    qe = basix.ufl.quadrature_element(msh.basix_cell(), value_shape=(), degree=2)
    q = fem.Function(fem.functionspace(msh, qe), name="q")
    with pytest.raises(ValueError, match="quadrature"):
        gather_grid(msh, cell_fields={"q": q})


def test_gather_3d_and_mixed_subfunction():
    import basix.ufl

    msh = dmesh.create_unit_cube(COMM, 3, 3, 3)
    el = basix.ufl.element("Lagrange", msh.basix_cell(), 1)
    W = fem.functionspace(msh, basix.ufl.mixed_element([el, el]))
    w = fem.Function(W)
    w.sub(1).interpolate(lambda x: x[2])
    g = gather_grid(msh, {"z": w.sub(1)})
    if COMM.rank == 0:
        assert g.n_cells == 6 * 27 and g.n_points == 64
        assert np.allclose(g.point_data["z"], g.points[:, 2])
        assert int(g.field_data["topological_dimension"][0]) == 3


# --------------------------------------------------------------------------- helpers


def test_nice_length_and_ticks():
    assert nice_length(0.25) == 0.2 and nice_length(0.5) == 0.5 and nice_length(7.0) == 5.0
    assert nice_length(1.0) == 1.0 and nice_length(0.031) == 0.02
    t = drawing._ticks(-0.218, 0.02, False)
    assert np.allclose(t, [-0.2, -0.15, -0.1, -0.05, 0.0])
    t = drawing._ticks(1e2, 1e6, True)
    assert np.allclose(t, [1e2, 1e3, 1e4, 1e5, 1e6])
    assert drawing._tick_format(np.array([1e4, 2e4])) == "%.0e"


# --------------------------------------------------------------------------- figures


def test_plot_fields(grid, tmp_path):
    panels = [
        Panel("u", "u (V)", "coolwarm"),
        Panel("v", "|v| (A/m²)", "inferno", log=True),
        Panel("c", "c (mol/m³)", "viridis", clim=(0.0, 2.0)),
    ]
    out = plot_fields(grid, panels, tmp_path / "fields.png", title="fields", contour="eta", columns=1)
    if COMM.rank != 0:
        assert out is None
        return
    nx, ny = _check_png(out["path"])
    assert ny > nx and out["shape"] == (3, 1)  # one row per field
    u = grid.point_data["u"]
    assert np.allclose(out["clims"]["u"], (u.min(), u.max()))
    vm = grid.cell_data["v_magnitude"]
    assert np.allclose(out["clims"]["v"], (vm[vm > 0].min(), vm.max()))
    assert out["clims"]["c"] == (0.0, 2.0)


def test_plot_fields_3d(tmp_path):
    msh = dmesh.create_unit_cube(COMM, 4, 2, 2)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u = fem.Function(V)
    u.interpolate(lambda x: np.sin(3 * x[0]) + x[2])
    g = gather_grid(msh, {"u": u}, length_scale=1e-6)
    a = plot_fields(g, [Panel("u", "u (1)", "RdBu_r")], tmp_path / "slice.png")
    b = plot_fields(g, [Panel("u", "u (1)", "RdBu_r")], tmp_path / "surface.png", surface=True)
    if COMM.rank == 0:
        _check_png(a["path"])
        _check_png(b["path"])
        lo, hi = a["clims"]["u"]  # the mid-height slice only
        assert 0.4 < lo < 0.6 and hi > 1.3


def test_plot_initial_state(grid, tmp_path):
    out = plot_initial_state(grid, tmp_path / "initial.png", grain="grain")
    if COMM.rank != 0:
        assert out is None
        return
    _check_png(out["path"], min_colours=20)
    assert out["clims"] == {"beta": (0.0, 1.0), "eta": (0.0, 1.0)}
    with pytest.raises(KeyError, match="no field 'nope'"):
        plot_initial_state(grid, tmp_path / "bad.png", beta="nope")
    # without grain ids: beta and eta only
    _check_png(plot_initial_state(grid, tmp_path / "initial2.png", grain=None, title=None)["path"])


def test_plot_comparison_shares_colour_limits(grid, tmp_path):
    if COMM.rank != 0:
        assert plot_comparison([None, None], ["a", "b"], [Panel("u", "u")], tmp_path / "x.png") is None
        return
    grids = []
    for k in range(4):
        g = grid.copy()
        g.point_data["u"] = grid.point_data["u"] * (1 + k) - k
        g.cell_data["v_magnitude"] = grid.cell_data["v_magnitude"] * 10.0**k
        grids.append(g)
    panels = [
        Panel("u", "u (V)", "coolwarm"),
        Panel("v_magnitude", "|i| (A/m²)", "inferno", log=True),
        Panel("eta", "η", "viridis", clim=(0.0, 1.0)),
    ]
    labels = ["1 GPa", "20 GPa", "50 GPa", "80 GPa"]
    out = plot_comparison(grids, labels, panels, tmp_path / "comparison.png", title="GB Young's modulus", contour="eta")
    nx, ny = _check_png(out["path"])
    assert nx > ny  # cases as columns
    all_u = np.concatenate([g.point_data["u"] for g in grids])
    assert np.allclose(out["clims"]["u"], (all_u.min(), all_u.max()))
    all_v = np.concatenate([g.cell_data["v_magnitude"] for g in grids])
    assert np.allclose(out["clims"]["v_magnitude"], (all_v[all_v > 0].min(), all_v.max()))
    assert out["clims"]["eta"] == (0.0, 1.0)
    # each case alone has a narrower range: the limits really are shared
    single = plot_fields(grids[0], panels[:1], tmp_path / "one.png")
    assert single["clims"]["u"][1] < out["clims"]["u"][1]
    with pytest.raises(ValueError, match="one label per grid"):
        plot_comparison(grids, labels[:2], panels, tmp_path / "bad.png")


def test_plot_probes(tmp_path):
    if COMM.rank != 0:
        return
    t = np.linspace(0.0, 1e-3, 40)
    series = {
        f"{E} GPa": {"GB probe": (t, (1 + k) * np.sqrt(t) * 1e5), "grain probe": (t, (1 + k) * t * 1e6)}
        for k, E in enumerate((1, 20, 50, 80))
    }
    out = plot_probes(series, "|i| (A/m²)", tmp_path / "probes.png", time_scale=1e3, time_label="t (ms)")
    assert out["probes"] == ["GB probe", "grain probe"]
    _check_png(out["path"])
