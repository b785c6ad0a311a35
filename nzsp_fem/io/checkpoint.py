"""Restart checkpoints that survive a change of rank count and a crash mid-write.

Layout::

    directory/
      latest                  name of the newest complete checkpoint (replaced atomically)
      checkpoint-<step>/      complete checkpoints (the last ``keep``, default 2)
        metadata.json         user metadata (t, dt, step, controller state) + manifest
        fields.bp             ADIOS2 (BP4) arrays, one row per cell, see below
        mesh.bp               the mesh, by adios4dolfinx.write_mesh (for inspection)
      checkpoint.tmp-<step>/  being written; never read, removed by the next write

Why not ``adios4dolfinx.read_function``
---------------------------------------
adios4dolfinx 0.9 stores a function's dofmap rows in the *writer's* global cell order and,
on reading, looks them up by ``mesh.topology.original_cell_index`` of the reading mesh.
The two orders agree only if the reading mesh was itself read from the checkpoint with
``adios4dolfinx.read_mesh`` (its "original" order is then the writer's order). Our mesh is
rebuilt from the cached Gmsh .msh with ``gmshio``, so its original order is the .msh order,
and ``read_function`` silently returns scrambled values, even on the same number of ranks
(checked: P1 and quadrature errors O(1), 1 -> 1, 1 -> 2, 2 -> 1 ranks). On a mesh from
``read_mesh`` it is exact N -> M, *including quadrature spaces* (they have a dofmap and no
dof transformations), but that mesh is a different partition of the same cells, and
quadrature data cannot be interpolated from it onto the rebuilt mesh.

Restarting on the checkpoint's own mesh instead works (issue 20; measured with a prototype
on the restart tests' run, 1053 cells, 3920 unknowns, plasticity on, 20 steps, written on
1 and 2 ranks, read on 1 and 2): ``write_mesh``, ``write_meshtags`` (cells, facets) and
``write_function`` of ``w`` and ``w_prev`` (the mixed space as one function), ``eps_p``
and ``p``, then ``read_mesh``, ``read_meshtags`` and ``read_function``. Every value came
back exactly (difference 0.0; each cell with its nodes in the same local order; every cell
tag and the 65 facet tags equal), and 10 steps on the read mesh ended within 1.8e-15 of the
uninterrupted run in ``w`` (3.6e-15 in ``w_prev``; values up to 17.5) and 2.8e-17 in ``p``
(up to 0.019); this format gives 0.0 on 1 -> 1 ranks and the same otherwise; the restart
tests ask 1e-8. The Polycrystal needs nothing more from the file: seeds, centres,
neighbours, nuclei, GB lines and length come from the config through ``build_polycrystal``
on any partition (discrete nuclei are physical positions in the observers' JSON state), and
``dataclasses.replace(poly, mesh=..., cell_tags=..., facet_tags=...)`` was all the
prototype's Simulation needed. The guarantees do not depend on the writer: free space is
checked before any writer opens a file, and the size/SHA-256 record, the temporary
directory, ``latest`` and keep-N pruning act on whatever files it leaves; ``write_mesh``
and ``write_function`` past a file-size limit raise RuntimeError ("couldn't write ...
File too large") rather than abort, so the one-line error holds. Kept as tests: the exact
N -> M read (tags, quadrature) and the scrambled read above in tests/test_checkpoint.py,
the restart on the read mesh (1 -> 2 ranks) in tests/test_checkpoint_read_mesh.py.

Not switched, for the order of a restart, not for the I/O: the mesh would come from the
checkpoint, so the checkpoint must be chosen (directory lock held, records checked, damaged
ones passed over) before the CoupledProblem exists, whereas ``Simulation.__init__`` builds
it from the .msh and ``Simulation.run`` then takes the lock and ``RunRecord.resume`` reads
into it. run() would have to rebuild problem, solver, evaluator, protocol, fields and the
nucleation observer on the read mesh (observers added before run() would keep the old
ones), and again when a checkpoint whose record checks fails to read; read_checkpoint
would return the mesh, so every test here changes. Estimated 2-3 h with the restart and
fault tests on 1 and 2 ranks, over this item's 90 min. The switch would delete about 300
lines here and cost files 1.5x as large (demo, 6735 cells, 24248 unknowns: 4.4 -> 6.6 MB;
adios4dolfinx stores an int64 dofmap per function) and slower reads (demo, best of 3, load
6: 1 rank 0.02 s here vs 0.07 s read_mesh + tags and 0.12 s read_function; 2 ranks 0.06
vs 0.15 + 0.40 s); writes are no slower (1 rank 0.14 s here with fsync and record vs 0.03
s for the bare adios4dolfinx calls; 2 ranks 0.47 s both).

Chosen format: values keyed by the original (input) cell index
---------------------------------------------------------------
For every function the checkpoint holds a global array ``(num_cells, width)`` whose row k
holds the cell-local dof values of the cell with original index k (``width = dofs per
cell * block size``, in dofmap order). Writing sends each owned cell's row to the rank
that owns block k of a contiguous split of [0, num_cells) and writes those blocks with
ADIOS2. Reading on any number of ranks reads such blocks, sends every local cell (owned
and ghost) the row of its original index and scatters it into the dofmap. Continuous dofs
appear in several rows as identical copies (about 6x the dof count for P1 triangles, 3x
for P2: fine for restart files).

The cell-local order is partition independent once the cell's vertex order is: quadrature
points and DG dofs are fixed by the reference map; higher-order Lagrange dofs are
permuted inside the dofmap (``needs_dof_permutations``), so dofmap position i is always
reference dof i. Elements with dof *transformations* (N1curl, ...; edge orientation from
global vertex numbers, which change with the partition) are mapped to the reference cell
with ``Tt_apply`` on writing and back with ``Tt_inv_apply`` on reading, as adios4dolfinx
does. Tested 1 -> 2 and 2 -> 1 ranks: P1, vector P2, P3, N1curl(2), mixed P1 x P2^2
(the solver's ``w``), quadrature scalar and 3x3 tensor (``PlasticState.p``/``.eps_p``),
on unit squares and on a gmsh polycrystal rebuilt from its .msh; point values at the same
physical points are bit-identical.

Requirement: the reading mesh has the same cells with the same original indices and the
same local vertex order as the writing mesh, which holds for a mesh rebuilt from the same
.msh (gmshio) or by the same ``create_*`` call, on any number of ranks. This is checked:
the checkpoint also stores every cell's node coordinates (in the cell's local order) and
reading fails with ``ValueError`` if they differ, so a different mesh cannot be read
silently. Element descriptions (signature, degree, value shape, block size, dofs per
cell) are checked too. ``mesh.bp`` is a plain adios4dolfinx mesh, for inspection only.

Atomicity: all ranks write into ``checkpoint.tmp-<step>``; node leaders fsync the files;
rank 0 writes metadata.json (with ``"complete": true``), fsyncs, renames the directory to
``checkpoint-<step>``, replaces ``latest`` (temp file + ``os.replace``) and only then
prunes old checkpoints. A process killed at any point leaves the previous complete
checkpoint in place; ``latest_checkpoint`` returns the pointer's checkpoint if it is
complete, else the newest complete one found by scanning (this includes a
``checkpoint-<step>.old``, the copy moved aside while the same step is written again).
Checkpoints with a larger step than the one being written belong to an abandoned history
(a restart from an older checkpoint) and are removed once the new one is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from dolfinx import fem

from .checkpoint_files import (
    FORMAT,
    FORMAT_VERSION,
    _fsync_tree,
    _is_complete,
    _json_default,
    _latest,
    _prepare_tmp,
    _publish,
    discard_unfinished,
    list_checkpoints,
    restart_candidates,
    verify,
)
from .storage import StorageError, describe, is_storage_error, keep_alive, require_space

# Debian ships serial and MPI python bindings of ADIOS2 and picks the MPI ones only under
# mpirun, or with ADIOS2_ALWAYS_USE_MPI set before the first import: set it first.
os.environ.setdefault("ADIOS2_ALWAYS_USE_MPI", "1")
import adios2 as _adios2  # noqa: E402
import adios4dolfinx  # noqa: E402

adios2 = _adios2.bindings if hasattr(_adios2, "bindings") else _adios2
if not adios2.is_built_with_mpi:
    raise ImportError(
        "the serial ADIOS2 python bindings were imported before nzsp_fem.io.checkpoint; "
        "import nzsp_fem.io.checkpoint (or adios4dolfinx) first, or set "
        "ADIOS2_ALWAYS_USE_MPI=1"
    )

__all__ = [
    "write_checkpoint",
    "read_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "restart_candidates",
    "verify",
    "discard_unfinished",
    "CheckpointError",
]

ENGINE = "BP4"
_GEOMETRY_VAR = "cell_geometry"


class CheckpointError(RuntimeError):
    """A collective checkpoint operation failed on rank 0 (message from rank 0)."""


class CheckpointStorageError(CheckpointError, StorageError):
    """Writing a checkpoint failed (disk full, read-only, ...); the previous one is intact."""


# ------------------------------------------------------------------------------------------
# small MPI helpers
# ------------------------------------------------------------------------------------------
def _block_range(n: int, size: int, rank: int) -> tuple[int, int]:
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def _block_owner(keys: np.ndarray, n: int, size: int) -> np.ndarray:
    q, r = divmod(n, size)
    keys = np.asarray(keys, dtype=np.int64)
    cut = r * (q + 1)
    low = keys // (q + 1)
    high = r + (keys - cut) // max(q, 1)
    return np.where(keys < cut, low, high).astype(np.int32)


def _alltoallv(comm, data: np.ndarray, dest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Send row i of ``data`` to rank ``dest[i]``. Returns (received rows, source ranks)
    with rows grouped by source rank, each group in the sender's order."""
    data = np.ascontiguousarray(data)
    width = int(np.prod(data.shape[1:], dtype=np.int64))
    order = np.argsort(dest, kind="stable")
    send = np.ascontiguousarray(data[order])
    counts = np.bincount(dest, minlength=comm.size).astype(np.int64)
    rcounts = np.empty_like(counts)
    comm.Alltoall(counts, rcounts)
    recv = np.empty((int(rcounts.sum()), *data.shape[1:]), dtype=data.dtype)
    sdispl = np.concatenate([[0], np.cumsum(counts)[:-1]]) * width
    rdispl = np.concatenate([[0], np.cumsum(rcounts)[:-1]]) * width
    mpitype = from_numpy_dtype(data.dtype)
    comm.Alltoallv([send, (counts * width, sdispl), mpitype], [recv, (rcounts * width, rdispl), mpitype])
    return recv, np.repeat(np.arange(comm.size, dtype=np.int32), rcounts)


def _root_only(comm, fn, *args):
    """Run fn on rank 0 and broadcast its result, or raise its error on every rank."""
    result, error = None, None
    if comm.rank == 0:
        try:
            result = fn(*args)
        except OSError as exc:
            error = (CheckpointStorageError, describe(exc))
        except StorageError as exc:
            error = (CheckpointStorageError, str(exc))
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            error = (CheckpointError, f"{type(exc).__name__}: {exc}")
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        raise error[0](error[1])
    return result


def _on_all_ranks(comm, path: Path, fn, *args):
    """Run a collective I/O call; a failure on any rank raises on every rank (a rank that
    raised alone would leave the others waiting in the next collective call)."""
    result, error = None, None
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
        keep_alive(exc)  # its frames hold the ADIOS2 objects, whose destructors would abort
        kind = CheckpointStorageError if is_storage_error(exc) else CheckpointError
        error = (kind, describe(exc, path) if kind is CheckpointStorageError else f"{type(exc).__name__}: {exc}")
    errors = [e for e in comm.allgather(error) if e]
    if errors:
        raise errors[0][0](errors[0][1])
    return result


def _check_comm(comm, mesh):
    if comm is None:
        return mesh.comm
    if MPI.Comm.Compare(comm, mesh.comm) not in (MPI.IDENT, MPI.CONGRUENT):
        raise ValueError("comm must be the mesh communicator (or congruent to it)")
    return comm


# ------------------------------------------------------------------------------------------
# cellwise data
# ------------------------------------------------------------------------------------------
def _num_owned_cells(mesh) -> int:
    return mesh.topology.index_map(mesh.topology.dim).size_local


def _original_index(mesh, n: int) -> np.ndarray:
    original = np.asarray(mesh.topology.original_cell_index, dtype=np.int64)
    if original.size < n:
        raise ValueError(
            "the mesh carries no original cell index (e.g. a refined mesh): "
            "it cannot be checkpointed/read by original cell"
        )
    return original[:n]


def _cell_geometry(mesh, cells: np.ndarray) -> np.ndarray:
    gdim = mesh.geometry.dim
    nodes = mesh.geometry.dofmap[cells]
    return mesh.geometry.x[nodes][:, :, :gdim].reshape(len(cells), -1).astype(np.float64)


def _dof_index(u: fem.Function, cells: np.ndarray) -> np.ndarray:
    dm = u.function_space.dofmap
    bs = dm.bs
    dofs = dm.list[cells]
    return (dofs[:, :, None] * bs + np.arange(bs)).reshape(len(cells), -1)


def _cell_perms(mesh, cells: np.ndarray) -> np.ndarray:
    mesh.topology.create_entity_permutations()
    return np.ascontiguousarray(mesh.topology.get_cell_permutation_info()[cells], dtype=np.uint32)


def _to_reference(u: fem.Function, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
    element = u.function_space.element
    if not element.needs_dof_transformations or len(cells) == 0:
        return rows
    flat = np.ascontiguousarray(rows, dtype=np.float64).ravel()
    element.Tt_apply(flat, _cell_perms(u.function_space.mesh, cells), u.function_space.dofmap.bs)
    return flat.reshape(rows.shape)


def _from_reference(u: fem.Function, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
    element = u.function_space.element
    if not element.needs_dof_transformations or len(cells) == 0:
        return rows
    flat = np.ascontiguousarray(rows, dtype=np.float64).ravel()
    element.Tt_inv_apply(flat, _cell_perms(u.function_space.mesh, cells), u.function_space.dofmap.bs)
    return flat.reshape(rows.shape)


def _describe(u: fem.Function) -> dict:
    V = u.function_space
    signature = V.element.signature
    signature = signature() if callable(signature) else signature
    return {
        "element": str(signature),
        "degree": int(V.ufl_element().embedded_superdegree),
        "value_shape": [int(s) for s in V.value_shape],
        "block_size": int(V.dofmap.bs),
        "dofs_per_cell": int(V.dofmap.list.shape[1]),
    }


def _check_functions(comm, mesh, functions: Mapping[str, fem.Function]) -> None:
    """Raise on every rank if a function is unsupported or not on ``mesh`` (collective)."""
    error = None
    for name, u in functions.items():
        if not isinstance(u, fem.Function):
            error = f"{name!r}: expected a dolfinx.fem.Function, got {type(u).__name__}"
        elif u.x.array.dtype != np.float64:
            error = f"{name!r}: only float64 functions are supported"
        elif (
            u.function_space.mesh.topology.dim != mesh.topology.dim
            or _num_owned_cells(u.function_space.mesh) != _num_owned_cells(mesh)
            or u.function_space.mesh.geometry.x.shape != mesh.geometry.x.shape
        ):
            error = f"{name!r} does not live on the given mesh"
        if error:
            break
    errors = [e for e in comm.allgather(error) if e]
    if errors:
        raise ValueError(errors[0])


# ------------------------------------------------------------------------------------------
# ADIOS2 I/O of row blocks
# ------------------------------------------------------------------------------------------
def _write_fields(path: Path, comm, num_cells: int, start: int, arrays: dict[str, np.ndarray]) -> None:
    adios = adios2.ADIOS(comm)
    io = adios.DeclareIO("nzsp-checkpoint-writer")
    io.SetEngine(ENGINE)
    io.SetParameter("Profile", "Off")
    engine = io.Open(str(path), adios2.Mode.Write)
    try:
        engine.BeginStep()
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr, dtype=np.float64)
            var = io.DefineVariable(name, arr, [num_cells, arr.shape[1]], [start, 0], [arr.shape[0], arr.shape[1]])
            engine.Put(var, arr, adios2.Mode.Sync)
        engine.PerformPuts()
        engine.EndStep()
        engine.Close()
    except RuntimeError:
        keep_alive((adios, io, engine))  # a failed engine aborts the process when destroyed
        raise
    adios.RemoveIO("nzsp-checkpoint-writer")


def _read_fields(path: Path, comm, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
    adios = adios2.ADIOS(comm)
    io = adios.DeclareIO("nzsp-checkpoint-reader")
    io.SetEngine(ENGINE)
    # Random access: a streaming reader waits forever for a step that a killed writer
    # never finished.
    engine = io.Open(str(path), adios2.Mode.ReadRandomAccess)
    out = {}
    try:
        for name in names:
            var = io.InquireVariable(name)
            if var is None:
                raise KeyError(f"{name} missing in {path}")
            width = int(var.Shape()[1])
            buf = np.empty((stop - start, width), dtype=np.float64)
            if stop > start:
                var.SetSelection([[start, 0], [stop - start, width]])
                engine.Get(var, buf, adios2.Mode.Sync)
            out[name] = buf
    finally:
        engine.Close()
        adios.RemoveIO("nzsp-checkpoint-reader")
    return out


def _check_space(directory: Path, needed: int, what: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    require_space(directory, needed, what)


def latest_checkpoint(directory, comm=None) -> Path | None:
    """The newest complete checkpoint in ``directory`` (the ``latest`` pointer, or the
    complete checkpoint with the largest step if the pointer is missing or dangling), or
    None. With ``comm`` rank 0 decides and every rank gets the same answer (collective)."""
    directory = Path(directory)
    result = _latest(directory) if comm is None else _root_only(comm, _latest, directory)
    return None if result is None else Path(result)


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
def write_checkpoint(
    directory,
    mesh,
    functions: Mapping[str, fem.Function],
    metadata: dict,
    comm=None,
    *,
    step: int | None = None,
    keep: int = 2,
) -> Path:
    """Write ``functions`` (name -> Function on ``mesh``) and JSON ``metadata`` to
    ``directory/checkpoint-<step>`` atomically and return that path (on every rank).

    ``step`` defaults to ``metadata["step"]``. The last ``keep`` complete checkpoints are
    kept. Collective over ``comm`` (default: the mesh communicator).
    """
    comm = _check_comm(comm, mesh)
    directory = Path(directory)
    if step is None:
        if "step" not in metadata:
            raise ValueError("write_checkpoint needs step=... or metadata['step']")
        step = metadata["step"]
    step = int(step)
    if step < 0 or keep < 1:
        raise ValueError("step must be >= 0 and keep >= 1")
    _check_functions(comm, mesh, functions)
    json.dumps(metadata, default=_json_default)  # fail early, on every rank
    tmp = directory / f"checkpoint.tmp-{step}"
    final = directory / f"checkpoint-{step}"

    # Rows of owned cells: geometry, then every function; sent to the block owner of
    # their original index and written as contiguous blocks.
    n_owned = _num_owned_cells(mesh)
    num_cells = mesh.topology.index_map(mesh.topology.dim).size_global
    cells = np.arange(n_owned, dtype=np.int32)
    keys = _original_index(mesh, n_owned)
    columns = {_GEOMETRY_VAR: _cell_geometry(mesh, cells)}
    entries = {}
    for i, (name, u) in enumerate(functions.items()):
        u.x.scatter_forward()
        var = f"f{i}"
        columns[var] = _to_reference(u, cells, u.x.array[_dof_index(u, cells)])
        entries[name] = {"variable": var, **_describe(u)}
    widths = {k: v.shape[1] for k, v in columns.items()}
    rows = np.concatenate([columns[k] for k in widths], axis=1)

    # Refused before writing if it cannot fit: the previous checkpoint stays the latest.
    mesh_bytes = 2 * (mesh.geometry.x.nbytes + mesh.geometry.dofmap.nbytes)
    needed = comm.allreduce(rows.nbytes + mesh_bytes)
    _root_only(comm, _check_space, directory, needed, f"checkpoint-{step}")
    _root_only(comm, _prepare_tmp, directory, tmp)
    _on_all_ranks(comm, tmp / "mesh.bp", adios4dolfinx.write_mesh, tmp / "mesh.bp", mesh, ENGINE)

    dest = _block_owner(keys, num_cells, comm.size)
    recv_rows, _ = _alltoallv(comm, rows, dest)
    recv_keys, _ = _alltoallv(comm, keys, dest)
    start, stop = _block_range(num_cells, comm.size, comm.rank)
    block = np.full((stop - start, rows.shape[1]), np.nan)
    seen = np.zeros(stop - start, dtype=np.int64)
    np.add.at(seen, recv_keys - start, 1)
    if not comm.allreduce(bool(np.all(seen == 1)), op=MPI.LAND):
        raise RuntimeError("original cell indices are not a permutation of the global cells")
    block[recv_keys - start] = recv_rows
    arrays, c = {}, 0
    for k, w in widths.items():
        arrays[k] = block[:, c : c + w]
        c += w
    _on_all_ranks(comm, tmp / "fields.bp", _write_fields, tmp / "fields.bp", comm, num_cells, start, arrays)

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        _on_all_ranks(comm, tmp, _fsync_tree if node.rank == 0 else lambda _: None, tmp)
    finally:
        node.Free()

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "complete": True,
        "step": step,
        "metadata": metadata,
        "mesh": {
            "num_cells": int(num_cells),
            "gdim": int(mesh.geometry.dim),
            "tdim": int(mesh.topology.dim),
            "cell": mesh.topology.cell_name(),
            "geometry_variable": _GEOMETRY_VAR,
            "geometry_width": widths[_GEOMETRY_VAR],
            "written_on_ranks": int(comm.size),
        },
        "functions": entries,
    }
    return Path(_root_only(comm, _publish, directory, tmp, final, manifest, keep))


def read_checkpoint(path, mesh, functions: Mapping[str, fem.Function], comm=None) -> dict:
    """Fill ``functions`` (name -> Function, already created on ``mesh``) from checkpoint
    ``path`` and return the user metadata. ``mesh`` must be built the same way as the
    written one (same .msh / same create_* call), on any number of ranks. Collective."""
    comm = _check_comm(comm, mesh)
    path = Path(path)
    _check_functions(comm, mesh, functions)

    def load():
        if not _is_complete(path):
            raise FileNotFoundError(f"{path} is not a complete checkpoint")
        return json.loads((path / "metadata.json").read_text())

    manifest = _root_only(comm, load)
    info = manifest["mesh"]
    num_cells = mesh.topology.index_map(mesh.topology.dim).size_global
    if info["num_cells"] != num_cells or info["gdim"] != mesh.geometry.dim or info["cell"] != mesh.topology.cell_name():
        raise ValueError(
            f"{path}: written on a mesh of {info['num_cells']} {info['cell']} "
            f"cells (gdim {info['gdim']}), reading mesh has {num_cells} "
            f"{mesh.topology.cell_name()} cells (gdim {mesh.geometry.dim})"
        )
    stored = manifest["functions"]
    for name, u in functions.items():
        if name not in stored:
            raise KeyError(f"{path}: no function {name!r} (has {sorted(stored)})")
        want, have = _describe(u), {k: stored[name][k] for k in _describe(u)}
        if want != have:
            raise ValueError(f"{path}: function {name!r} was written as {have}, the given function is {want}")

    variables = [info["geometry_variable"]] + [stored[n]["variable"] for n in functions]
    start, stop = _block_range(num_cells, comm.size, comm.rank)
    blocks = _on_all_ranks(comm, path / "fields.bp", _read_fields, path / "fields.bp", comm, variables, start, stop)
    widths = [blocks[v].shape[1] for v in variables]
    block = np.concatenate([blocks[v] for v in variables], axis=1)

    # Every local cell (owned and ghost) asks the block owner of its original index.
    cmap = mesh.topology.index_map(mesh.topology.dim)
    n_local = cmap.size_local + cmap.num_ghosts
    cells = np.arange(n_local, dtype=np.int32)
    keys = _original_index(mesh, n_local)
    dest = _block_owner(keys, num_cells, comm.size)
    order = np.argsort(dest, kind="stable")
    asked, source = _alltoallv(comm, keys, dest)
    answers = block[asked - start]
    # Send the answers back: the k-th answer goes to the rank that asked the k-th key.
    rows_sorted, _ = _alltoallv(comm, answers, source)
    rows = np.empty_like(rows_sorted)
    rows[order] = rows_sorted

    geometry = rows[:, : widths[0]]
    mine = _cell_geometry(mesh, cells)
    x = mesh.geometry.x
    lo, hi = np.min(x, axis=0, initial=np.inf), np.max(x, axis=0, initial=-np.inf)
    comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
    comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
    err = float(np.max(np.abs(geometry - mine), initial=0.0))
    err = comm.allreduce(err, op=MPI.MAX)
    if not err <= 1e-12 * max(float(np.linalg.norm(hi - lo)), 1e-300):
        raise ValueError(
            f"{path}: the checkpoint was written on a different mesh (cell node "
            f"coordinates differ by up to {err:.3g}); rebuild the mesh from the "
            f"same .msh / parameters"
        )

    c = widths[0]
    for u, w in zip(functions.values(), widths[1:]):
        values = _from_reference(u, cells, rows[:, c : c + w])
        u.x.array[_dof_index(u, cells)] = values
        u.x.scatter_forward()
        c += w
    return manifest["metadata"]
