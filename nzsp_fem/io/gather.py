"""Collect a distributed DOLFINx mesh and chosen fields onto rank 0 as one pyvista grid
(owned cells only, shared vertices merged, cells in the original input order, so the grid
does not depend on the number of ranks). Other ranks get None."""

from __future__ import annotations

import numpy as np

#: VTK cell type ids of first-order cells
_VTK_TRIANGLE, _VTK_TETRA = 5, 10


# --------------------------------------------------------------------------- gathering


def _prepare_function(u, kind: str):
    """(function, n_components) ready for nodal (kind='point') or cellwise ('cell') reading."""
    from dolfinx import fem

    V = u.function_space
    if V.component():  # a view into a mixed space: make it a plain function
        u = u.collapse()
        V = u.function_space
    e = V.ufl_element()
    name = getattr(u, "name", "f")
    if e.family_name == "quadrature":
        raise ValueError(
            f"gather_grid: '{name}' is a quadrature function; average it per cell into DG0 "
            "first (interpolating quadrature data is unreliable in DOLFINx 0.9)"
        )
    shape = u.ufl_shape
    if len(shape) > 1:
        raise ValueError(f"gather_grid: '{name}' has shape {shape}; only scalars and vectors are supported")
    ncomp = int(np.prod(shape)) if shape else 1
    discontinuous = bool(getattr(e, "discontinuous", False))
    degree = e.embedded_superdegree
    if kind == "cell":
        if not (discontinuous and degree == 0):
            raise ValueError(
                f"gather_grid: cell field '{name}' must be DG0 (got {e.family_name}{degree}, "
                f"discontinuous={discontinuous}); pass it as a point field or average it per cell"
            )
        return u, ncomp
    if discontinuous:
        raise ValueError(
            f"gather_grid: point field '{name}' must be continuous Lagrange; pass DG0 functions as cell fields"
        )
    if degree != 1:  # e.g. P2: its nodal values at the vertices
        msh = V.mesh
        P1 = fem.functionspace(msh, ("Lagrange", 1, shape) if shape else ("Lagrange", 1))
        v = fem.Function(P1, name=name)
        v.interpolate(u)
        v.x.scatter_forward()
        u = v
    return u, ncomp


def _as_vtk_vectors(values: np.ndarray) -> np.ndarray:
    """(n, 2) -> (n, 3) with a zero z component, so VTK treats them as vectors."""
    if values.ndim == 2 and values.shape[1] == 2:
        return np.column_stack([values, np.zeros(len(values))])
    return values


def gather_grid(
    mesh,
    point_fields: dict | None = None,
    cell_fields: dict | None = None,
    cell_tags: dict | None = None,
    *,
    length_scale: float = 1.0,
    root: int = 0,
):
    """Collect ``mesh`` and fields from all ranks onto rank ``root`` (collective).

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh with first-order geometry (triangles or tetrahedra).
    point_fields : name -> continuous Lagrange Function (P1 taken as is, higher degrees
        interpolated into P1); scalar or vector. Stored as point data.
    cell_fields : name -> DG0 Function (scalar or vector). Stored as cell data.
    cell_tags : name -> dolfinx MeshTags of cells (e.g. ``{"grain": poly.cell_tags}``);
        stored as integer cell data, 0 where a cell has no tag.
    length_scale : metres per mesh coordinate unit (1.0 for SI meshes, 1e-6 for um).

    Vector fields get an extra ``"<name>_magnitude"`` array unless a field of that name
    is given explicitly. 2D vectors are stored with a zero z component.

    Returns
    -------
    pyvista.UnstructuredGrid on ``root`` (points and cells in the original input order,
    shared vertices merged, ghosts dropped), ``None`` on the other ranks.
    """
    from dolfinx import plot

    point_fields = dict(point_fields or {})
    cell_fields = dict(cell_fields or {})
    cell_tags = dict(cell_tags or {})
    comm = mesh.comm
    tdim = mesh.topology.dim
    if mesh.geometry.cmap.degree != 1:
        raise ValueError("gather_grid: only first-order (P1) geometry is supported")
    n_owned = mesh.topology.index_map(tdim).size_local
    owned = np.arange(n_owned, dtype=np.int32)
    topology, cell_types, x = plot.vtk_mesh(mesh, tdim, owned)
    nodes_per_cell = int(topology[0]) if len(topology) else mesh.geometry.dofmap.shape[1]
    conn = topology.reshape(-1, nodes_per_cell + 1)[:, 1:]
    geom_dofs = mesh.geometry.dofmap[:n_owned]

    pdata: dict[str, np.ndarray] = {}
    for name, u in point_fields.items():
        u, ncomp = _prepare_function(u, "point")
        bs = u.function_space.dofmap.index_map_bs
        dofs = u.function_space.dofmap.list[:n_owned]
        vals = np.zeros((x.shape[0], ncomp), dtype=np.float64)
        # P1 on P1 geometry: local dof k of a cell sits on local geometry node k
        arr = u.x.array.real
        for j in range(ncomp):
            vals[geom_dofs.ravel(), j] = arr[dofs.ravel() * bs + j]
        pdata[name] = vals[:, 0] if ncomp == 1 else vals

    cdata: dict[str, np.ndarray] = {}
    for name, u in cell_fields.items():
        u, ncomp = _prepare_function(u, "cell")
        bs = u.function_space.dofmap.index_map_bs
        dofs = u.function_space.dofmap.list[:n_owned, 0]
        arr = u.x.array.real
        vals = np.column_stack([arr[dofs * bs + j] for j in range(ncomp)]) if n_owned else np.zeros((0, ncomp))
        cdata[name] = vals[:, 0].copy() if ncomp == 1 else vals
    for name, tags in cell_tags.items():
        if tags.dim != tdim:
            raise ValueError(f"gather_grid: cell_tags '{name}' has dimension {tags.dim}, not {tdim}")
        vals = np.zeros(n_owned, dtype=np.int32)
        keep = tags.indices < n_owned
        vals[tags.indices[keep]] = tags.values[keep]
        cdata[name] = vals

    # keep only the nodes of owned cells (nodes seen only by ghost cells carry no values)
    used, local_conn = np.unique(conn, return_inverse=True)
    pdata = {n: v[used] for n, v in pdata.items()}
    local = dict(
        x=np.asarray(x[used, :3], dtype=np.float64),
        gids=np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)[used],
        conn=np.asarray(local_conn, dtype=np.int64).reshape(conn.shape),
        cell_type=int(cell_types[0]) if len(cell_types) else None,
        cell_order=np.asarray(mesh.topology.original_cell_index[:n_owned], dtype=np.int64),
        pdata=pdata,
        cdata=cdata,
    )
    parts = comm.gather(local, root=root)
    if comm.rank != root:
        return None
    return _assemble_grid(parts, tdim, length_scale)


def _assemble_grid(parts: list[dict], tdim: int, length_scale: float):
    import pyvista as pv

    offsets = np.cumsum([0] + [len(p["x"]) for p in parts])
    x = np.concatenate([p["x"] for p in parts])
    gids = np.concatenate([p["gids"] for p in parts])
    conn = np.concatenate([p["conn"] + off for p, off in zip(parts, offsets[:-1])])
    order = np.concatenate([p["cell_order"] for p in parts])
    pnames = list(parts[0]["pdata"])
    cnames = list(parts[0]["cdata"])
    pdata = {n: np.concatenate([p["pdata"][n] for p in parts]) for n in pnames}
    cdata = {n: np.concatenate([p["cdata"][n] for p in parts]) for n in cnames}

    # merge the copies of shared vertices (one per rank) through the input node numbers
    uniq, first, inverse = np.unique(gids, return_index=True, return_inverse=True)
    if np.allclose(x[first][inverse], x):
        x = x[first]
        conn = inverse[conn]
        pdata = {n: v[first] for n, v in pdata.items()}
    # cells in input order: the grid is the same for any number of ranks
    perm = np.argsort(order, kind="stable")
    conn = conn[perm]
    cdata = {n: v[perm] for n, v in cdata.items()}

    vtk_type = _VTK_TRIANGLE if tdim == 2 else _VTK_TETRA
    types = [p["cell_type"] for p in parts if p["cell_type"] is not None]
    if types and any(t != types[0] for t in types):
        raise ValueError("gather_grid: mixed cell types")
    vtk_type = types[0] if types else vtk_type
    npc = conn.shape[1]
    cells = np.column_stack([np.full(len(conn), npc, dtype=np.int64), conn]).ravel()
    grid = pv.UnstructuredGrid(cells, np.full(len(conn), vtk_type, dtype=np.uint8), x)

    for name, v in pdata.items():
        grid.point_data[name] = _as_vtk_vectors(v)
    for name, v in cdata.items():
        grid.cell_data[name] = _as_vtk_vectors(v)
    for data, src in ((grid.point_data, pdata), (grid.cell_data, cdata)):
        for name, v in src.items():
            mag = f"{name}_magnitude"
            if v.ndim == 2 and mag not in src:
                data[mag] = np.linalg.norm(v, axis=1)
    grid.field_data["metres_per_unit"] = np.array([float(length_scale)])
    grid.field_data["topological_dimension"] = np.array([tdim])
    return grid


def gather_cell_field(mesh, function, name: str | None = None, *, length_scale: float = 1.0, root: int = 0):
    """Gather one Function (DG0 -> cell data, continuous Lagrange -> point data) with its
    mesh onto rank ``root``; ``None`` elsewhere. See :func:`gather_grid`."""
    name = name or function.name
    e = function.function_space.ufl_element()
    if getattr(e, "discontinuous", False) and e.embedded_superdegree == 0:
        return gather_grid(mesh, cell_fields={name: function}, length_scale=length_scale, root=root)
    return gather_grid(mesh, point_fields={name: function}, length_scale=length_scale, root=root)
