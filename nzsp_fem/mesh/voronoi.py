"""Voronoi geometry of the polycrystal (scaled units) and the GB distance and indicator
beta built from it; the docstring of nzsp_fem.mesh.spec describes the construction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import Voronoi, cKDTree

from .spec import (
    CONFIG_KEYS,
    GB_TAG,
    MIN_SPACING_FACTOR,
    SEED_MARGIN,
    MeshError,
    Polycrystal,
    PolycrystalSpec,
    format_length,
    format_point,
)

# --------------------------------------------------------------------------- Voronoi geometry


@dataclass
class VoronoiGeometry:
    """Clipped Voronoi tessellation in scaled units (internal)."""

    box: np.ndarray  # (dim,)
    seeds: np.ndarray  # (n, dim)
    vertices: np.ndarray  # (V, dim) merged Voronoi vertices, snapped onto the box faces
    gb_ridges: list  # [(i, j, vertex ids)], i < j, interior GB lines (2D) / faces (3D)
    bnd_ridges: list  # [(i, face tag, vertex ids)], cell i on a box face
    neighbours: list  # neighbours[i] = sorted grain indices (0-based)
    centres: np.ndarray  # (n, dim) cell centroids
    gb_measure: float  # total GB length (2D) / area (3D)

    @property
    def dim(self) -> int:
        return self.box.size

    @property
    def n(self) -> int:
        return len(self.seeds)


def _random_seeds(spec: PolycrystalSpec, box: np.ndarray) -> np.ndarray:
    """Seeds from default_rng(rng_seed) with a minimum spacing (see MIN_SPACING_FACTOR)."""
    rng = np.random.default_rng(spec.rng_seed)
    n, dim = int(spec.n_grains), box.size
    dmin = MIN_SPACING_FACTOR * float(np.prod(box) / n) ** (1.0 / dim)
    lo, hi = SEED_MARGIN * box, (1.0 - SEED_MARGIN) * box
    pts: list[np.ndarray] = []
    fails = 0
    while len(pts) < n:
        p = lo + (hi - lo) * rng.random(dim)
        if not pts or np.min(np.linalg.norm(np.asarray(pts) - p, axis=1)) >= dmin:
            pts.append(p)
            fails = 0
        else:
            fails += 1
            if fails > 200:  # stalled: relax the spacing and go on
                dmin *= 0.9
                fails = 0
    return np.asarray(pts)


def _mirrored(seeds: np.ndarray, box: np.ndarray) -> np.ndarray:
    """seeds followed by their mirror images across faces LEFT, RIGHT, BOTTOM, ... in order."""
    out = [seeds]
    for axis in range(box.size):
        for side in (0, 1):
            m = seeds.copy()
            m[:, axis] = -m[:, axis] if side == 0 else 2.0 * box[axis] - m[:, axis]
            out.append(m)
    return np.vstack(out)


def order_polygon(pts: np.ndarray, ids: np.ndarray, normal: np.ndarray | None = None) -> np.ndarray:
    """Ids of a convex polygon's vertices sorted counter-clockwise (about ``normal`` in 3D)."""
    c = pts.mean(axis=0)
    r = pts - c
    if normal is None:
        ang = np.arctan2(r[:, 1], r[:, 0])
    else:
        nrm = normal / np.linalg.norm(normal)
        e1 = r[np.argmax(np.linalg.norm(r, axis=1))]
        e1 = e1 - nrm * (e1 @ nrm)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(nrm, e1)
        ang = np.arctan2(r @ e2, r @ e1)
    return ids[np.argsort(ang, kind="stable")]


def _polygon_area_centroid(p: np.ndarray) -> tuple[float, np.ndarray]:
    """Signed area and centroid of a 2D polygon (shoelace)."""
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cr = x * yn - xn * y
    a = 0.5 * cr.sum()
    if abs(a) < 1e-300:
        return 0.0, p.mean(axis=0)
    return float(a), np.array([((x + xn) * cr).sum(), ((y + yn) * cr).sum()]) / (6.0 * a)


def _polygon3d_area(p: np.ndarray) -> float:
    """Area of a planar convex polygon in 3D (ordered vertices)."""
    return 0.5 * float(np.linalg.norm(np.cross(p[1:-1] - p[0], p[2:] - p[0]).sum(axis=0)))


def voronoi_geometry(spec: PolycrystalSpec) -> VoronoiGeometry:
    box = np.asarray(spec.size, dtype=float) / spec.length_scale
    dim = box.size
    if spec.seeds is not None:
        seeds = np.asarray(spec.seeds, dtype=float) / spec.length_scale
    else:
        seeds = _random_seeds(spec, box)
    n = len(seeds)
    g = float(np.prod(box) / n) ** (1.0 / dim)
    # Voronoi vertices closer than tol become one vertex. Qhull splits degenerate vertices
    # (a GB meeting a box face is 4 cocircular / 6 cospherical points with the mirrors), and
    # random seeds can give sub-angstrom edges near box corners; either would put needle
    # elements into the mesh. Moving a vertex by 1/1000 of the finest mesh size is
    # invisible in the mesh and keeps 3D faces planar well within gmsh's tolerance.
    tol = max(1e-3 * min(spec.h_gb, spec.h_grain) / spec.length_scale, 1e-9 * g)
    vor = Voronoi(_mirrored(seeds, box))

    # ridges touching an original seed
    raw = []
    for (p, q), rv in zip(vor.ridge_points, vor.ridge_vertices):
        if p >= n and q >= n:
            continue
        if p >= n:
            p, q = q, p
        if -1 in rv:  # cannot happen: mirrors enclose the originals
            raise MeshError("internal error: unbounded Voronoi cell for an original seed")
        raw.append((int(p), int(q), np.asarray(rv, dtype=int)))
    used = np.unique(np.concatenate([r[2] for r in raw]))
    # merge close vertices (union-find over close pairs), keep the lowest index
    parent = {int(u): int(u) for u in used}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in sorted(cKDTree(vor.vertices[used]).query_pairs(tol)):
        ra, rb = find(int(used[a])), find(int(used[b]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = sorted({find(int(u)) for u in used})
    new_id = {r: i for i, r in enumerate(roots)}
    vmap = {int(u): new_id[find(int(u))] for u in used}
    verts = vor.vertices[roots].copy()
    # snap onto the box faces so boundary entities are exactly at x=0, x=Lx, ...
    for a in range(dim):
        verts[np.abs(verts[:, a]) < tol, a] = 0.0
        verts[np.abs(verts[:, a] - box[a]) < tol, a] = box[a]
    if (verts < -tol).any() or (verts > box + tol).any():
        raise MeshError("internal error: a Voronoi vertex of an original cell lies outside the box")

    gb_ridges, bnd_ridges = [], []
    for p, q, rv in raw:
        ids = np.unique([vmap[int(v)] for v in rv])
        if dim == 2:
            if len(ids) != 2:
                continue
            measure = float(np.linalg.norm(verts[ids[1]] - verts[ids[0]]))
        else:
            if len(ids) < 3:
                continue
            other = vor.points[q]
            ids = order_polygon(verts[ids], ids, normal=other - seeds[p])
            measure = _polygon3d_area(verts[ids])
        if measure <= tol ** (dim - 1):  # collapsed by the merge
            continue
        if q < n:
            gb_ridges.append((min(p, q), max(p, q), ids))
        else:
            face, k = divmod(q - n, n)
            if k == p:  # seed and its own mirror: the cell's part of a box face
                bnd_ridges.append((p, face + 1, ids))
            # else: a zero-measure ridge from a degenerate configuration; drop it
    gb_ridges.sort(key=lambda r: (r[0], r[1]))
    bnd_ridges.sort(key=lambda r: (r[0], r[1], tuple(r[2])))

    neighbours = [[] for _ in range(n)]
    for i, j, _ in gb_ridges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    neighbours = [sorted(set(nb)) for nb in neighbours]

    # centroids of the clipped cells
    centres = np.zeros((n, dim))
    cell_ridges = [[] for _ in range(n)]
    for i, j, ids in gb_ridges:
        cell_ridges[i].append(ids)
        cell_ridges[j].append(ids)
    for i, _, ids in bnd_ridges:
        cell_ridges[i].append(ids)
    for i in range(n):
        if dim == 2:
            ids = np.unique(np.concatenate(cell_ridges[i]))
            ids = order_polygon(verts[ids], ids)
            _, centres[i] = _polygon_area_centroid(verts[ids])
        else:
            ref = verts[np.unique(np.concatenate(cell_ridges[i]))].mean(axis=0)
            vol, mom = 0.0, np.zeros(3)
            for ids in cell_ridges[i]:
                p = verts[ids]
                for t in range(1, len(p) - 1):
                    v = abs(np.dot(p[0] - ref, np.cross(p[t] - ref, p[t + 1] - ref))) / 6.0
                    vol += v
                    mom += v * (ref + p[0] + p[t] + p[t + 1]) / 4.0
            centres[i] = mom / vol
    if dim == 2:
        gb_measure = sum(float(np.linalg.norm(verts[ids[1]] - verts[ids[0]])) for _, _, ids in gb_ridges)
    else:
        gb_measure = sum(_polygon3d_area(verts[ids]) for _, _, ids in gb_ridges)
    return VoronoiGeometry(box, seeds, verts, gb_ridges, bnd_ridges, neighbours, centres, float(gb_measure))


def _clip_halfplane(poly: np.ndarray, a: np.ndarray, b: float) -> np.ndarray:
    """Sutherland-Hodgman: part of convex polygon ``poly`` with a.x <= b."""
    if len(poly) == 0:
        return poly
    s = poly @ a - b
    out = []
    for k in range(len(poly)):
        p, q, sp, sq = poly[k], poly[(k + 1) % len(poly)], s[k], s[(k + 1) % len(poly)]
        if sp <= 0:
            out.append(p)
        if (sp < 0 < sq) or (sq < 0 < sp):
            out.append(p + (sp / (sp - sq)) * (q - p))
    return np.asarray(out).reshape(-1, 2)


def shrunk_grains(geo: VoronoiGeometry, half_width: float, length_scale: float) -> list[np.ndarray]:
    """Grain interiors of the tagged representation: {x in cell i : d(x) >= half_width}.

    The box is clipped by the bisector half-planes of the neighbours, shifted inward by
    ``half_width``; box faces are not shifted (they are not GBs). Points on a box edge stay
    exactly on it (interpolation along an axis-aligned edge keeps that coordinate).
    """
    Lx, Ly = geo.box
    g = float(np.prod(geo.box) / geo.n) ** 0.5
    out = []
    for i in range(geo.n):
        poly = np.array([[0.0, 0.0], [Lx, 0.0], [Lx, Ly], [0.0, Ly]])
        si = geo.seeds[i]
        for j in geo.neighbours[i]:
            sj = geo.seeds[j]
            a = (sj - si) / np.linalg.norm(sj - si)
            poly = _clip_halfplane(poly, a, float(a @ (si + sj)) / 2.0 - half_width)
        # drop near-duplicate consecutive vertices (shifted line through a vertex)
        keep = [p for k, p in enumerate(poly) if np.linalg.norm(p - poly[(k + 1) % len(poly)]) > 1e-7 * g]
        poly = np.asarray(keep).reshape(-1, 2)
        area, _ = _polygon_area_centroid(poly) if len(poly) >= 3 else (0.0, None)
        if len(poly) < 3 or area < 1e-6 * g * g:
            raise _vanishes(geo, i, half_width, length_scale)
        out.append(poly)
    return out


def _box_and_shifted_bisectors(geo: VoronoiGeometry, i: int, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Half-spaces ``A x <= b`` (unit rows) of grain ``i``'s interior: the box faces, then
    the bisector planes of its neighbours shifted towards seed ``i`` by ``half_width``."""
    dim = geo.dim
    rows, rhs = [], []
    for a in range(dim):
        e = np.eye(dim)[a]
        rows += [-e, e]
        rhs += [0.0, float(geo.box[a])]
    si = geo.seeds[i]
    for j in geo.neighbours[i]:
        sj = geo.seeds[j]
        n = (sj - si) / np.linalg.norm(sj - si)
        rows.append(n)
        rhs.append(float(n @ (si + sj)) / 2.0 - half_width)
    return np.asarray(rows), np.asarray(rhs)


def _vanishes(geo: VoronoiGeometry, i: int, half_width: float, length_scale: float) -> MeshError:
    k = CONFIG_KEYS
    return MeshError(
        f"grain {i + 1} (seed {format_point(geo.seeds[i] * length_scale)}) vanishes when its boundaries are "
        f"thickened to {k['gb_width']} ({format_length(2 * half_width * length_scale)}): reduce "
        f"{k['gb_width']} or move the seed away from its neighbours ({k['seeds']})"
    )


@dataclass
class Polyhedron:
    """A convex polyhedron: vertices (V, 3) and faces as vertex ids, counter-clockwise seen
    from outside."""

    vertices: np.ndarray
    faces: list


def shrunk_polyhedra(geo: VoronoiGeometry, half_width: float, length_scale: float) -> list[Polyhedron]:
    """3D grain interiors of the tagged representation, {x in cell i : d(x) >= half_width}:
    the box cut by the bisector half-spaces of the neighbours shifted inward by
    ``half_width`` (box faces are not GBs and stay). Convex, so their vertices are the
    half-space intersection (Qhull) about the Chebyshev centre, the deepest interior point.
    """
    from scipy.optimize import linprog
    from scipy.spatial import HalfspaceIntersection

    g = float(np.prod(geo.box) / geo.n) ** (1.0 / 3.0)
    # Qhull reports a vertex where more than 3 planes meet once per plane triple: merge;
    # 1e-7 g is far below any mesh size and far above round-off.
    tol = 1e-7 * g
    out = []
    for i in range(geo.n):
        A, b = _box_and_shifted_bisectors(geo, i, half_width)
        # max r such that the ball B(x, r) satisfies every half-space (rows are unit)
        lp = linprog(
            np.r_[0.0, 0.0, 0.0, -1.0],
            A_ub=np.column_stack([A, np.ones(len(A))]),
            b_ub=b,
            bounds=[(None, None)] * 3 + [(0.0, None)],
            method="highs",
        )
        if lp.status != 0 or lp.x[3] < 1e-4 * g:
            raise _vanishes(geo, i, half_width, length_scale)
        centre = lp.x[:3]
        pts = HalfspaceIntersection(np.column_stack([A, -b]), centre).intersections
        verts: list[np.ndarray] = []
        for p in pts:
            if not any(np.linalg.norm(p - q) <= tol for q in verts):
                verts.append(p)
        v = np.asarray(verts)
        for a in range(3):  # exactly on the box faces, so gmsh finds them by coordinate
            v[np.abs(v[:, a]) <= tol, a] = 0.0
            v[np.abs(v[:, a] - geo.box[a]) <= tol, a] = geo.box[a]
        faces = []
        for k in range(len(A)):
            on = np.flatnonzero(np.abs(v @ A[k] - b[k]) <= 10 * tol)
            if len(on) < 3:
                continue  # the plane only touches the polyhedron (an edge or a vertex)
            ids = order_polygon(v[on], on, normal=A[k])
            if _polygon3d_area(v[ids]) <= tol * g:
                continue
            faces.append(ids)
        out.append(Polyhedron(v, faces))
    return out


# --------------------------------------------------------------------------- GB distance / beta


def gb_distance_arrays(seeds: np.ndarray, neighbours: list, x: np.ndarray) -> np.ndarray:
    """d(x) for points ``x`` (N, dim): distance to the nearest bisector plane between the
    point's own grain (nearest seed) and one of its neighbours. ``inf`` without neighbours."""
    x = np.asarray(x, dtype=float)
    d = np.full(len(x), np.inf)
    if len(seeds) < 2 or len(x) == 0:
        return d
    _, owner = cKDTree(seeds).query(x)
    for i in np.unique(owner):
        nb = neighbours[i]
        if not nb:
            continue
        sel = np.flatnonzero(owner == i)
        diff = seeds[nb] - seeds[i]  # (k, dim)
        norm = np.linalg.norm(diff, axis=1)
        mid = 0.5 * (seeds[nb] + seeds[i])
        # signed distance to each bisector, positive on seed i's side
        dist = ((mid * diff).sum(axis=1)[None, :] - x[sel] @ diff.T) / norm[None, :]
        d[sel] = np.maximum(dist.min(axis=1), 0.0)
    return d


def gb_distance(poly: Polycrystal, x: np.ndarray) -> np.ndarray:
    """GB distance d(x) (scaled) at points ``x`` of shape (k >= dim, N), the DOLFINx
    interpolation convention (rows are coordinates; extra rows are ignored)."""
    x = np.asarray(x, dtype=float)
    nb = [[j - 1 for j in poly.grain_neighbours.get(i + 1, [])] for i in range(len(poly.seeds))]
    return gb_distance_arrays(poly.seeds, nb, x[: poly.dim].T)


def gb_profile(d: np.ndarray, width: float) -> np.ndarray:
    """beta(d) = 0.5 (1 - tanh((d - w/2) / (w/4))): 0.98 on the GB plane, 0.5 at d = w/2,
    0.018 at d = w. Across one flat GB its integral is w (1 + ln(1 + e^-4)/4) = 1.0046 w."""
    return 0.5 * (1.0 - np.tanh((np.asarray(d) - 0.5 * width) / (0.25 * width)))


def gb_indicator(poly: Polycrystal, space=None):
    """GB indicator beta in [0, 1] as a dolfinx Function.

    "tagged": DG0, 1 on ``GB_TAG`` cells and 0 elsewhere (``space``, if given, must be a
    DG0 space on ``poly.mesh``). "smooth": :func:`gb_profile` of :func:`gb_distance`,
    interpolated into ``space`` (default P1); its integral is about gb_length * gb_width,
    less ~0.43 w^2 per triple junction (2D) or per unit triple-line length (3D).
    """
    from dolfinx import fem

    if poly.spec.representation == "tagged":
        V = space if space is not None else fem.functionspace(poly.mesh, ("DG", 0))
        e = V.ufl_element()
        if e.embedded_superdegree != 0 or V.dofmap.index_map_bs != 1:
            raise ValueError("gb_indicator: 'tagged' beta is piecewise constant: pass a scalar DG0 space or None")
        beta = fem.Function(V, name="beta")
        beta.x.array[:] = 0.0
        cells = poly.cell_tags.find(GB_TAG)
        beta.x.array[V.dofmap.list[cells, 0]] = 1.0
        beta.x.scatter_forward()
        return beta
    V = space if space is not None else fem.functionspace(poly.mesh, ("Lagrange", 1))
    beta = fem.Function(V, name="beta")
    w = poly.gb_width
    beta.interpolate(lambda x: gb_profile(gb_distance(poly, x), w))
    beta.x.scatter_forward()
    return beta
