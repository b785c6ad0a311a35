"""Point probes: values of fem.Functions at fixed physical points, in parallel.

Every point is given, once and at construction, to exactly one cell on exactly one rank:

1. Each rank builds a bounding-box tree over its *owned* cells only (index < size_local),
   so ghost cells, which another rank owns, are never candidates twice.
2. For the candidate cells of each point the exact point-cell distance is computed
   (``dolfinx.geometry.squared_distance``, GJK). Cells closer than ``tol`` contain the point.
   ``compute_colliding_cells`` is not used: its acceptance distance is a fixed absolute
   1e-6, which is neither scale-aware nor adjustable.
3. Among the containing cells of all ranks (several for a point on a shared vertex or
   facet, possibly on different ranks) the winner is the cell with the smallest original
   (input) cell index, via an ``allreduce(MIN)``; original cell indices are unique across
   ranks, so the owning rank is unique too (and if two ranks ever reported the same key,
   the lowest rank wins). Because the original index does not depend on the partition, a
   point on a facet between two DG0 cells gives the same value serially and on any number
   of ranks.
4. A point with no cell within ``tol`` raises ``ValueError`` naming it, on every rank.

``evaluate`` then calls ``Function.eval`` on the owning rank only and combines the values
with a sum reduction in which every entry has exactly one non-zero contributor, so the
result is bit-identical to a direct ``Function.eval`` in the chosen cell.

All methods are collective: every rank must call them, with the same functions in the
same order. The points are taken from rank 0 (broadcast), so ranks cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mpi4py import MPI

from dolfinx import fem, geometry

from .rundir import CsvTable

__all__ = ["ProbeEvaluator"]

_INT_MAX = np.iinfo(np.int64).max


def _as_points3(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2 or not 1 <= p.shape[1] <= 3:
        raise ValueError(f"probe points must have shape (n, 1..3), got {np.shape(points)}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probe points must be finite")
    out = np.zeros((p.shape[0], 3), dtype=np.float64)
    out[:, : p.shape[1]] = p
    return out


class ProbeEvaluator:
    """Evaluate functions on ``mesh`` at ``points`` (shape (n, gdim) or (n, 3)).

    ``rtol`` is the containment tolerance relative to the diagonal of the mesh bounding
    box: a point farther than ``rtol * diagonal`` from every cell is outside the mesh.
    """

    def __init__(self, mesh, points, rtol: float = 1.0e-10):
        self.mesh = mesh
        self.comm = comm = mesh.comm
        pts = _as_points3(points) if comm.rank == 0 else None
        self.points = comm.bcast(pts, root=0)
        n = self.points.shape[0]
        tdim = mesh.topology.dim
        cell_map = mesh.topology.index_map(tdim)
        self._num_owned_cells = n_owned = cell_map.size_local

        x = mesh.geometry.x
        lo, hi = np.min(x, axis=0, initial=np.inf), np.max(x, axis=0, initial=-np.inf)
        comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
        comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
        self.tol = tol = float(rtol * max(np.linalg.norm(hi - lo), np.finfo(float).tiny))

        # Original (input) cell index: the partition-independent tie-break key. Meshes that
        # do not carry one (e.g. some refined meshes) fall back to the global cell index.
        original = np.asarray(mesh.topology.original_cell_index, dtype=np.int64)
        if original.size < n_owned:
            original = np.arange(*cell_map.local_range, dtype=np.int64)
        key_of_cell = original[:n_owned]

        owned = np.arange(n_owned, dtype=np.int32)
        tree = geometry.bb_tree(mesh, tdim, entities=owned, padding=tol)
        candidates = geometry.compute_collisions_points(tree, self.points)
        offsets = np.asarray(candidates.offsets)
        cand_cells = np.asarray(candidates.array, dtype=np.int32)
        cand_point = np.repeat(np.arange(n), np.diff(offsets))
        if cand_cells.size:
            d2 = np.asarray(geometry.squared_distance(mesh, tdim, cand_cells, self.points[cand_point]))
        else:
            d2 = np.zeros(0)
        inside = d2 <= tol * tol
        cand_cells, cand_point = cand_cells[inside], cand_point[inside]
        cand_key = key_of_cell[cand_cells]

        # Local best (smallest original index) per point, then the global best.
        local_key = np.full(n, _INT_MAX, dtype=np.int64)
        np.minimum.at(local_key, cand_point, cand_key)
        global_key = np.empty_like(local_key)
        comm.Allreduce(local_key, global_key, op=MPI.MIN)

        missing = np.flatnonzero(global_key == _INT_MAX)
        if missing.size:
            listed = "; ".join(
                f"point {i} at {tuple(float(c) for c in self.points[i, : mesh.geometry.dim])}" for i in missing[:10]
            )
            more = f" (and {missing.size - 10} more)" if missing.size > 10 else ""
            raise ValueError(f"probe point(s) outside the mesh (no cell within {tol:.3g}): {listed}{more}")

        mine = local_key == global_key
        rank_or_size = np.where(mine, comm.rank, comm.size).astype(np.int64)
        owner = np.empty_like(rank_or_size)
        comm.Allreduce(rank_or_size, owner, op=MPI.MIN)
        self.owner_rank = owner
        """Rank that evaluates each point (same array on every rank)."""

        self._local_index = np.flatnonzero(owner == comm.rank)
        cell_of_point = np.full(n, -1, dtype=np.int32)
        sel = (cand_key == global_key[cand_point]) & (owner[cand_point] == comm.rank)
        cell_of_point[cand_point[sel]] = cand_cells[sel]
        self._local_cells = cell_of_point[self._local_index]
        assert np.all(self._local_cells >= 0)
        self.cell_key = global_key
        """Original cell index of the cell each point is evaluated in."""

    @property
    def num_points(self) -> int:
        return self.points.shape[0]

    @property
    def local_points(self) -> np.ndarray:
        """Indices of the points this rank evaluates."""
        return self._local_index

    def _check_space(self, u: fem.Function) -> None:
        m = u.function_space.mesh
        tdim = self.mesh.topology.dim
        if (
            m.topology.dim != tdim
            or m.topology.index_map(tdim).size_local != self._num_owned_cells
            or m.geometry.x.shape != self.mesh.geometry.x.shape
        ):
            raise ValueError(f"function {u.name!r} does not live on the probe mesh")

    def _local_values(self, u: fem.Function) -> np.ndarray:
        self._check_space(u)
        vs = u.function_space.value_size
        vals = np.zeros((self._local_index.size, vs), dtype=u.x.array.dtype)
        if self._local_index.size:
            u.eval(self.points[self._local_index], self._local_cells, vals)
        return vals

    def _reduce(self, local: np.ndarray, width: int, root: int | None) -> np.ndarray | None:
        buf = np.zeros((self.num_points, width), dtype=np.float64)
        buf[self._local_index] = local
        if root is None:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        if self.comm.rank == root:
            self.comm.Reduce(MPI.IN_PLACE, buf, op=MPI.SUM, root=root)
            return buf
        self.comm.Reduce(buf, None, op=MPI.SUM, root=root)
        return None

    @staticmethod
    def _shape(u: fem.Function, vals: np.ndarray, magnitude: bool) -> np.ndarray:
        shape = tuple(u.function_space.value_shape)
        if magnitude:
            return np.linalg.norm(vals.reshape(vals.shape[0], -1), axis=1)
        if shape == ():
            return vals[:, 0]
        return vals.reshape((vals.shape[0], *shape))

    def evaluate(self, u: fem.Function, *, magnitude: bool = False, root: int | None = 0) -> np.ndarray | None:
        """Values of ``u`` at the points: shape (n,) for scalars, (n, *value_shape)
        otherwise, or (n,) Euclidean (Frobenius) norms if ``magnitude``.

        Returned on ``root`` (None elsewhere), or on every rank if ``root`` is None.
        Collective.
        """
        if np.iscomplexobj(u.x.array):
            raise TypeError("ProbeEvaluator supports real-valued functions only")
        local = self._local_values(u)
        out = self._reduce(local, local.shape[1], root)
        return None if out is None else self._shape(u, out, magnitude)

    def evaluate_all(
        self, functions: Mapping[str, fem.Function], *, magnitude=(), root: int | None = 0
    ) -> dict[str, np.ndarray] | None:
        """``evaluate`` for several functions with a single reduction.

        ``magnitude`` is a collection of names whose norm is wanted instead of components.
        Returns {name: values} on ``root`` (None elsewhere), or on every rank if ``root``
        is None. Collective.
        """
        names = list(functions)
        blocks = [self._local_values(functions[k]) for k in names]
        widths = [b.shape[1] for b in blocks]
        local = np.concatenate(blocks, axis=1) if blocks else np.zeros((self._local_index.size, 0))
        out = self._reduce(local, int(sum(widths)), root)
        if out is None:
            return None
        result, start = {}, 0
        for k, w in zip(names, widths):
            result[k] = self._shape(functions[k], out[:, start : start + w], k in magnitude)
            start += w
        return result


class ProbeSeries:
    """|i| and phi at the configured points, one CSV row per accepted step (rank 0 writes)."""

    #: (column suffix, output field, magnitude of a vector?) for whichever of them the run has
    QUANTITIES = (
        ("current_density_magnitude", "current_density", True),
        ("electronic_current_density_magnitude", "electronic_current_density", True),
        ("phi_V", "phi_V", False),
        ("phi_i_V", "phi_i_V", False),
        ("phi_e_V", "phi_e_V", False),
    )

    def __init__(self, probes, fields, length_scale: float, path, append: bool, keep_until: float | None):
        self.names = [p.name for p in probes]
        self.fields = fields
        present = {**fields.point_data, **fields.cells}
        self.quantities = [q for q in self.QUANTITIES if q[1] in present]
        self.evaluator = None
        self.table = None
        if self.names:
            points = np.array([p.position for p in probes]) / length_scale
            self.evaluator = ProbeEvaluator(fields.problem.mesh, points)
            columns = ["t"] + [f"{n}_{q}" for n in self.names for q, _, _ in self.quantities]
            self.table = CsvTable(path, columns, fields.problem.comm, append=append, keep_until=keep_until)

    def record(self, t: float) -> None:
        if self.evaluator is None:
            return
        self.fields.update()
        sources = {**self.fields.point_data, **self.fields.cells}
        functions = {column: sources[source] for column, source, _ in self.quantities}
        values = self.evaluator.evaluate_all(
            functions, magnitude=tuple(column for column, _, magnitude in self.quantities if magnitude)
        )
        if values is not None:
            row = {"t": t}
            for k, name in enumerate(self.names):
                for column, _, _ in self.quantities:
                    row[f"{name}_{column}"] = float(values[column][k])
            self.table.row(row)

    def close(self) -> None:
        if self.table:
            self.table.close()
