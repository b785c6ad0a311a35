"""nzsp_fem.checkpoint: N -> M restart and crash safety; and the claims about adios4dolfinx
in the module docstring ("Why not adios4dolfinx.read_function").

In-process tests run serially and under ``mpirun -n 2``. Tests that need two rank counts
run only serially and start ``mpirun -n 2 python3 -m mpi4py tests/test_checkpoint.py ...``
(this file is also the worker script, see ``main``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import child_environment

from mpi4py import MPI

import adios4dolfinx
import basix.ufl
import ufl
from dolfinx import fem, mesh

from nzsp_fem.io import checkpoint as ckpt
from nzsp_fem.io.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from nzsp_fem.io.probes import ProbeEvaluator
from nzsp_fem.physics.plasticity import PlasticState

COMM = MPI.COMM_WORLD
HERE = Path(__file__).resolve()


def serial_only(test):
    """Serial tests start mpirun themselves (no mpirun inside mpirun)."""
    test = pytest.mark.skipif(COMM.size > 1, reason="starts mpirun itself: serial only")(test)
    return pytest.mark.serial(test)


METADATA = {
    "t": 0.125,
    "dt": 1.0 / 3.0,
    "step": 7,
    "controller": {"dt_prev": 0.1 / 3.0, "growth": 1.25, "history": [3, 4, 5], "np_scalar": np.float64(2.0) / 7.0},
}


def build_mesh(comm=COMM, n=(7, 5)):
    """Rebuilt identically on any number of ranks (like the cached .msh via gmshio)."""
    return mesh.create_unit_square(comm, *n, ghost_mode=mesh.GhostMode.shared_facet)


# Non-symmetric fields so that any mix-up of cells, vertices or quadrature points shows.
def f_scalar(x, shift=0.0):
    return np.sin(3.0 * x[0] + 1.0) * np.cos(2.0 * x[1]) + x[0] * x[1] ** 2 + shift


def f_vector(x, shift=0.0):
    return np.vstack([np.exp(x[0] - 0.5 * x[1]) + shift, x[0] ** 3 - np.sin(5.0 * x[1])])


def make_functions(msh) -> dict[str, fem.Function]:
    cell = msh.topology.cell_name()
    P1 = fem.functionspace(msh, ("Lagrange", 1))
    P2v = fem.functionspace(msh, ("Lagrange", 2, (2,)))
    P3 = fem.functionspace(msh, ("Lagrange", 3))  # dof permutations (in the dofmap)
    N1 = fem.functionspace(msh, ("N1curl", 2))  # dof transformations (edge orientation)
    W = fem.functionspace(
        msh,
        basix.ufl.mixed_element(
            [basix.ufl.element("Lagrange", cell, 1), basix.ufl.element("Lagrange", cell, 2, shape=(2,))]
        ),
    )
    state = PlasticState(msh, quadrature_degree=2)
    return {
        "T": fem.Function(P1),
        "u": fem.Function(P2v),
        "c3": fem.Function(P3),
        "n1": fem.Function(N1),
        "w": fem.Function(W),
        "eps_p": state.eps_p,
        "p": state.p,
    }


def fill(fs: dict[str, fem.Function], shift: float = 0.0) -> dict[str, fem.Function]:
    fs["T"].interpolate(lambda x: f_scalar(x, shift))
    fs["u"].interpolate(lambda x: f_vector(x, shift))
    fs["c3"].interpolate(lambda x: f_scalar(x, shift) * x[0])
    fs["n1"].interpolate(lambda x: f_vector(x, shift)[::-1])
    fs["w"].sub(0).interpolate(lambda x: f_scalar(x, shift) - 1.0)
    fs["w"].sub(1).interpolate(lambda x: f_vector(x, shift) * 2.0)
    msh = fs["p"].function_space.mesh
    X = ufl.SpatialCoordinate(msh)
    a, b = X[0], X[1]
    tensor = ufl.as_tensor(
        [
            [ufl.sin(3 * a + 1) + shift, a * b, b**2],
            [a - 2 * b, ufl.exp(a * b), 0.5 + shift],
            [a**3, ufl.cos(b), a + 7 * b],
        ]
    )
    for name, expr in (("eps_p", tensor), ("p", ufl.sin(4 * a) * ufl.cos(3 * b) + a + shift)):
        V = fs[name].function_space
        fs[name].interpolate(fem.Expression(expr, V.element.interpolation_points()))
    return fs


def max_error(a: dict, b: dict) -> dict[str, float]:
    return {k: COMM.allreduce(float(np.max(np.abs(a[k].x.array - b[k].x.array), initial=0.0)), op=MPI.MAX) for k in a}


PROBED = ("T", "u", "c3", "n1")


def probe_values(fs: dict) -> np.ndarray:
    """Point values (all ranks) at fixed points: vertices, edge midpoints, random points."""
    g = np.stack(np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 6)), -1).reshape(-1, 2)
    pts = np.vstack([g, g + [1.0 / 14, 0.0], np.random.default_rng(3).uniform(size=(20, 2))])
    pts = pts[np.all(pts <= 1.0, axis=1)]
    msh = fs["T"].function_space.mesh
    out = ProbeEvaluator(msh, pts).evaluate_all({k: fs[k] for k in PROBED}, root=None)
    return np.concatenate([out[k].reshape(len(pts), -1) for k in PROBED], axis=1)


def read_and_compare(directory, shift: float, comm=COMM) -> tuple[dict, dict]:
    """Read the latest checkpoint in ``directory`` on a freshly built mesh. Errors against
    the fields re-interpolated on this mesh; and, if the writer stored probe values,
    the bitwise difference of point values at the same physical points ("probes")."""
    msh = build_mesh(comm)
    got = make_functions(msh)
    path = latest_checkpoint(directory, comm)
    meta = read_checkpoint(path, msh, got, comm)
    err = max_error(got, fill(make_functions(msh), shift))
    ref = Path(directory) / "probes.npy"
    if ref.exists():
        err["probes"] = float(np.max(np.abs(probe_values(got) - np.load(ref))))
    return meta, err


def write_reference(directory, comm=COMM) -> None:
    msh = build_mesh(comm)
    fs = fill(make_functions(msh))
    write_checkpoint(directory, msh, fs, METADATA, comm)
    values = probe_values(fs)
    if comm.rank == 0:
        np.save(Path(directory) / "probes.npy", values)
    comm.Barrier()


@pytest.fixture
def shared_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") if COMM.rank == 0 else None
    return Path(COMM.bcast(str(path) if path is not None else None, root=0))


def run_workers(*args, n: int = 2, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run this file as a worker under ``mpirun -n n`` (n=1: plain python)."""
    env = child_environment()
    cmd = [sys.executable, "-m", "mpi4py", str(HERE), *map(str, args)]
    if n > 1:
        cmd = ["mpirun", "-n", str(n), *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------
def test_roundtrip_same_ranks(shared_dir):
    msh = build_mesh()
    fs = fill(make_functions(msh))
    path = write_checkpoint(shared_dir, msh, fs, METADATA, COMM)
    assert path == shared_dir / "checkpoint-7"
    assert latest_checkpoint(shared_dir, COMM) == path
    meta, err = read_and_compare(shared_dir, 0.0)
    assert all(e <= 1e-14 for e in err.values()), err
    expected = json.loads(json.dumps(METADATA, default=float))
    assert meta == expected and meta["dt"] == 1.0 / 3.0


@serial_only
@pytest.mark.parametrize("writers, readers", [(1, 2), (2, 1)])
def test_change_of_rank_count(tmp_path, writers, readers):
    if writers == 1:
        write_reference(tmp_path)
    else:
        r = run_workers("write", tmp_path, n=writers)
        assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((tmp_path / "checkpoint-7" / "metadata.json").read_text())
    assert meta["mesh"]["written_on_ranks"] == writers
    if readers == 1:
        _, err = read_and_compare(tmp_path, 0.0)
        assert all(e <= 1e-14 for e in err.values()), err
        assert err["probes"] == 0.0, err  # bit-identical values at the same points
    else:
        r = run_workers("read", tmp_path, n=readers)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "max errors" in r.stdout, r.stdout


@serial_only
def test_killed_mid_write_keeps_previous(tmp_path):
    r = run_workers("crash", tmp_path, n=1)
    assert r.returncode == 17, r.stdout + r.stderr
    assert (tmp_path / "checkpoint.tmp-3").is_dir()  # the partial write is left behind
    assert not (tmp_path / "checkpoint-3").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    meta, err = read_and_compare(tmp_path, 2.0)
    assert meta["step"] == 2 and all(e <= 1e-14 for e in err.values()), err
    # Also without the pointer (lost): the scan finds the same complete checkpoint.
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_stopped_before_rename_then_recovers(shared_dir, monkeypatch):
    msh = build_mesh()
    fs = make_functions(msh)
    for step in (1, 2):
        write_checkpoint(shared_dir, msh, fill(fs, float(step)), {"step": step}, COMM)

    def stop(*args):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(ckpt, "_publish", stop)
    with pytest.raises(CheckpointError, match="simulated crash"):
        write_checkpoint(shared_dir, msh, fill(fs, 3.0), {"step": 3}, COMM)
    monkeypatch.undo()
    assert (shared_dir / "checkpoint.tmp-3" / "fields.bp").exists()
    assert latest_checkpoint(shared_dir, COMM) == shared_dir / "checkpoint-2"
    meta, err = read_and_compare(shared_dir, 2.0)
    assert meta == {"step": 2} and all(e <= 1e-14 for e in err.values()), err

    # The next write cleans up, publishes and keeps only the last two.
    write_checkpoint(shared_dir, msh, fill(fs, 3.0), {"step": 3}, COMM)
    COMM.Barrier()
    assert [p.name for p in list_checkpoints(shared_dir)] == ["checkpoint-2", "checkpoint-3"]
    assert not list(shared_dir.glob("checkpoint.tmp-*"))
    assert latest_checkpoint(shared_dir, COMM) == shared_dir / "checkpoint-3"
    # Restarting from step 2 and writing step 3 again replaces it; a newer (abandoned)
    # step is removed once an older-step checkpoint is published.
    write_checkpoint(shared_dir, msh, fill(fs, 5.0), {"step": 3, "again": True}, COMM)
    write_checkpoint(shared_dir, msh, fill(fs, 4.0), {"step": 2}, COMM)
    COMM.Barrier()
    assert [p.name for p in list_checkpoints(shared_dir)] == ["checkpoint-2"]
    meta, err = read_and_compare(shared_dir, 4.0)
    assert meta == {"step": 2} and all(e <= 1e-14 for e in err.values()), err


def test_latest_pointer_fallbacks(shared_dir):
    """The fallbacks of latest_checkpoint return the right data, not only the right name:
    each step writes different values (shift = step), and what is read back must be that
    step's field (P1 and quadrature, to 1e-14). Catches a fallback that returns (or a
    reader that reads) another checkpoint than the one named, e.g. checkpoint-4 instead of
    checkpoint-5.old (values differ by 1), and a rewrite of step 5 that keeps the old data.
    """
    msh = build_mesh(n=(2, 2))
    X = ufl.SpatialCoordinate(msh)

    def fill_small(fs, shift):
        fs["T"].interpolate(lambda x: f_scalar(x, shift))
        V = fs["p"].function_space
        expr = ufl.sin(4 * X[0]) * ufl.cos(3 * X[1]) + X[0] + shift
        fs["p"].interpolate(fem.Expression(expr, V.element.interpolation_points()))
        return fs

    def fresh():
        return {"T": fem.Function(fem.functionspace(msh, ("Lagrange", 1))), "p": PlasticState(msh, 1).p}

    def read_errors(path, shift):
        got = fresh()
        meta = read_checkpoint(path, msh, got, COMM)
        return meta, max_error(got, fill_small(fresh(), shift))

    fs = fresh()
    for step in (4, 5):
        write_checkpoint(shared_dir, msh, fill_small(fs, float(step)), {"step": step}, COMM)
    COMM.Barrier()
    if COMM.rank == 0:
        # Died while writing step 5 again: the old copy is moved aside, the pointer dangles.
        os.rename(shared_dir / "checkpoint-5", shared_dir / "checkpoint-5.old")
        assert latest_checkpoint(shared_dir) == shared_dir / "checkpoint-5.old"
        # A corrupt pointer or a checkpoint without metadata is never returned.
        (shared_dir / "latest").write_text("checkpoint-9\n")
        (shared_dir / "checkpoint-9").mkdir()
        assert latest_checkpoint(shared_dir) == shared_dir / "checkpoint-5.old"
    COMM.Barrier()
    assert latest_checkpoint(shared_dir, COMM) == shared_dir / "checkpoint-5.old"
    meta, err = read_errors(latest_checkpoint(shared_dir, COMM), 5.0)
    assert meta == {"step": 5} and all(e <= 1e-14 for e in err.values()), err
    # Not vacuous: the fields are far from zero and step 4's differ from step 5's by 1.
    assert min(max_error(fresh(), fill_small(fresh(), 5.0)).values()) > 4.0
    assert min(read_errors(shared_dir / "checkpoint-4", 5.0)[1].values()) == pytest.approx(1.0, abs=1e-12)
    write_checkpoint(shared_dir, msh, fill_small(fs, 6.0), {"step": 5}, COMM)
    COMM.Barrier()
    assert [p.name for p in list_checkpoints(shared_dir)] == ["checkpoint-4", "checkpoint-5"]
    meta, err = read_errors(latest_checkpoint(shared_dir, COMM), 6.0)
    assert meta == {"step": 5} and all(e <= 1e-14 for e in err.values()), err


def test_wrong_mesh_or_function_is_refused(shared_dir):
    msh = build_mesh()
    fs = fill(make_functions(msh))
    path = write_checkpoint(shared_dir, msh, {"T": fs["T"], "p": fs["p"]}, {"step": 0}, COMM)
    other = build_mesh(n=(5, 7))  # same number of cells, different cells
    with pytest.raises(ValueError, match="different mesh"):
        read_checkpoint(path, other, {"T": fem.Function(fem.functionspace(other, ("Lagrange", 1)))})
    with pytest.raises(ValueError, match="written on a mesh of"):
        small = build_mesh(n=(3, 3))
        read_checkpoint(path, small, {"T": fem.Function(fem.functionspace(small, ("Lagrange", 1)))})
    with pytest.raises(KeyError, match="no function 'u'"):
        read_checkpoint(path, msh, {"u": fs["u"]})
    with pytest.raises(ValueError, match="was written as"):
        read_checkpoint(path, msh, {"T": fem.Function(fem.functionspace(msh, ("Lagrange", 2)))})
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        read_checkpoint(shared_dir / "checkpoint-99", msh, {})
    assert latest_checkpoint(shared_dir / "nothing-here") is None


# ------------------------------------------------------------------------------------------
# adios4dolfinx, as io/checkpoint.py's docstring describes it (issue 20): exact N -> M on
# a mesh it read itself, scrambled on a mesh rebuilt another way.
A4D_ENGINE = "BP4"


def make_tags(msh) -> tuple[mesh.MeshTags, mesh.MeshTags]:
    """Cell tags from each cell's midpoint (12 regions) and facet tags on the four sides,
    both recomputable from the geometry of any mesh of the same cells."""
    tdim = msh.topology.dim
    n = msh.topology.index_map(tdim).size_local + msh.topology.index_map(tdim).num_ghosts
    cells = np.arange(n, dtype=np.int32)
    mid = mesh.compute_midpoints(msh, tdim, cells)
    regions = (1 + np.floor(4 * mid[:, 0] - 1e-12) + 10 * np.floor(3 * mid[:, 1] - 1e-12)).astype(np.int32)
    facets, values = [], []
    for value, (axis, at) in enumerate([(0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0)], start=1):
        found = mesh.locate_entities_boundary(msh, tdim - 1, lambda x, a=axis, v=at: np.isclose(x[a], v))
        facets.append(found)
        values.append(np.full(len(found), value, dtype=np.int32))
    f, v = np.concatenate(facets), np.concatenate(values)
    order = np.argsort(f)
    return mesh.meshtags(msh, tdim, cells, regions), mesh.meshtags(msh, tdim - 1, f[order], v[order])


def a4d_write(directory: Path, comm=COMM) -> None:
    msh = build_mesh(comm)
    cell_tags, facet_tags = make_tags(msh)
    adios4dolfinx.write_mesh(directory / "mesh.bp", msh, A4D_ENGINE)
    adios4dolfinx.write_meshtags(directory / "mesh.bp", msh, cell_tags, A4D_ENGINE, meshtag_name="cells")
    adios4dolfinx.write_meshtags(directory / "mesh.bp", msh, facet_tags, A4D_ENGINE, meshtag_name="facets")
    for i, (name, u) in enumerate(fill(make_functions(msh)).items()):
        mode = ckpt.adios2.Mode.Write if i == 0 else ckpt.adios2.Mode.Append
        adios4dolfinx.write_function(directory / "fields.bp", u, A4D_ENGINE, mode=mode, name=name)


def _tag_errors(tags: mesh.MeshTags, expected: mesh.MeshTags) -> float:
    """Wrong or missing owned tags, counted over all ranks (0.0: identical)."""
    owned = tags.topology.index_map(tags.dim).size_local
    have = dict(zip(tags.indices[tags.indices < owned].tolist(), tags.values[tags.indices < owned].tolist()))
    want = dict(zip(expected.indices.tolist(), expected.values.tolist()))
    want = {k: v for k, v in want.items() if k < owned}
    wrong = sum(have.get(k) != v for k, v in want.items()) + len(set(have) - set(want))
    return float(COMM.allreduce(wrong))


def a4d_read_errors(directory: Path, comm=COMM) -> dict[str, float]:
    """read_mesh, read_meshtags and read_function on this communicator; errors against
    the fields and tags recomputed on the mesh that was read."""
    msh = adios4dolfinx.read_mesh(directory / "mesh.bp", comm, A4D_ENGINE)
    got = make_functions(msh)
    for name, u in got.items():
        adios4dolfinx.read_function(directory / "fields.bp", u, A4D_ENGINE, name=name)
    err = max_error(got, fill(make_functions(msh)))
    cell_tags, facet_tags = make_tags(msh)
    err["cell_tags"] = _tag_errors(adios4dolfinx.read_meshtags(directory / "mesh.bp", msh, "cells"), cell_tags)
    err["facet_tags"] = _tag_errors(adios4dolfinx.read_meshtags(directory / "mesh.bp", msh, "facets"), facet_tags)
    return err


def test_adios4dolfinx_exact_on_the_mesh_it_read(shared_dir):
    """Same rank count: every function (mixed, N1curl, quadrature scalar and 3x3 tensor)
    and both tag sets come back exactly on the mesh read_mesh returns; read onto a mesh
    rebuilt with create_unit_square (as ours is rebuilt from the .msh) the same files give
    O(1) errors in P1 and quadrature values, which is why the checkpoint has its own format."""
    a4d_write(shared_dir)
    err = a4d_read_errors(shared_dir)
    assert all(e <= 1e-14 for e in err.values()), err
    rebuilt = build_mesh()
    got = make_functions(rebuilt)
    for name in ("T", "p"):
        adios4dolfinx.read_function(shared_dir / "fields.bp", got[name], A4D_ENGINE, name=name)
    wrong = max_error({k: got[k] for k in ("T", "p")}, {k: v for k, v in fill(make_functions(rebuilt)).items()})
    assert min(wrong.values()) > 0.1, wrong


@serial_only
@pytest.mark.parametrize("writers, readers", [(1, 2), (2, 1)])
def test_adios4dolfinx_read_mesh_change_of_rank_count(tmp_path, writers, readers):
    """N -> M through read_mesh: exact for every function, the quadrature history
    included, and for the cell and facet tags."""
    if writers == 1:
        a4d_write(tmp_path)
    else:
        r = run_workers("a4d-write", tmp_path, n=writers)
        assert r.returncode == 0, r.stdout + r.stderr
    if readers == 1:
        err = a4d_read_errors(tmp_path)
        assert all(e <= 1e-14 for e in err.values()), err
    else:
        r = run_workers("a4d-read", tmp_path, n=readers)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "a4d errors" in r.stdout, r.stdout


# ------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """Worker: ``write DIR`` | ``read DIR`` | ``crash DIR`` | ``a4d-write DIR`` |
    ``a4d-read DIR`` on COMM_WORLD."""
    mode, directory = argv[0], Path(argv[1])
    msh = build_mesh()
    if mode == "write":
        write_reference(directory)
    elif mode == "read":
        meta, err = read_and_compare(directory, 0.0)
        assert meta["controller"]["history"] == [3, 4, 5] and meta["dt"] == 1.0 / 3.0
        assert all(e <= 1e-14 for e in err.values()) and err["probes"] == 0.0, err
        if COMM.rank == 0:
            print("max errors", err)
    elif mode == "crash":
        fs = make_functions(msh)
        for step in (1, 2):
            write_checkpoint(directory, msh, fill(fs, float(step)), {"step": step}, COMM)

        def killed(*args, **kwargs):
            os._exit(17)  # the process dies while writing the field data of step 3

        ckpt._write_fields = killed
        write_checkpoint(directory, msh, fill(fs, 3.0), {"step": 3}, COMM)
    elif mode == "a4d-write":
        a4d_write(directory)
    elif mode == "a4d-read":
        err = a4d_read_errors(directory)
        assert all(e <= 1e-14 for e in err.values()), err
        if COMM.rank == 0:
            print("a4d errors", err)
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
