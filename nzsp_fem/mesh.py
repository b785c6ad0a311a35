"""Polycrystal geometry and meshes: Voronoi grains, grain-boundary (GB) regions, cached .msh.

Units. Inputs (:class:`PolycrystalSpec`) are in metres. gmsh tolerances are absolute
(~1e-8), so geometry is built in *scaled* coordinates ``x / length_scale`` (micrometres
for the default 1e-6) and everything returned is scaled unless its name ends in ``_m``.

Microstructure. Seeds (explicit or random with a minimum spacing) define a Voronoi
tessellation of the box. The seeds are mirrored across every box face before calling
``scipy.spatial.Voronoi``: inside the box the nearest seed is never a mirror image, so the
original cells come out exactly clipped to the box, with the box faces as ridges between a
seed and its own mirror.

GB region. A point ``x`` of grain ``i`` has GB distance

    d(x) = min_j dist(x, bisector plane of seeds i, j),  j over the grain neighbours of i,

(see :func:`gb_distance`). This is the Euclidean distance to the GB network away from
junctions and the "mitred" offset near them. The GB region is ``{d < gb_width / 2}``:

* ``"tagged"`` (2D): each grain is shrunk by ``gb_width / 2`` from its interior edges
  (box clipped by the shifted bisector half-planes of its neighbours), fragmented with the
  box in gmsh OCC; what is left of the box is the GB strip network, cell tag ``GB_TAG``.
  Strips therefore join without gaps at triple junctions; their area is
  ``gb_length * gb_width - (gb_width/2)**2 * sum over junction corners of cot(angle/2)``
  (about ``0.43 gb_width**2`` per 120 degree triple junction).
* ``"smooth"`` (2D, 3D): the mesh conforms to the Voronoi cells (GB lines/faces are mesh
  entities, built in the gmsh built-in kernel from the shared Voronoi vertices, edges and
  faces) and :func:`gb_indicator` gives ``beta = 0.5 (1 - tanh((d - w/2) / (w/4)))``.

Caching. The mesh is generated on rank 0, written atomically to
``cache_dir/<key>.msh`` (key = sha256 of the canonical spec and ``FORMAT_VERSION``) and
always read back from that file, so a cached and a fresh run give the same mesh. Geometry
arrays are recomputed from the spec on every rank (deterministic and cheap).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import Voronoi, cKDTree

# Facet tags: x=0, x=Lx, y=0, y=Ly, z=0, z=Lz. Tag = 2*axis + side + 1.
LEFT, RIGHT, BOTTOM, TOP, FRONT, BACK = 1, 2, 3, 4, 5, 6
FACE_NAMES = {LEFT: "left", RIGHT: "right", BOTTOM: "bottom", TOP: "top", FRONT: "front", BACK: "back"}
# Cell tag of the GB strips ("tagged"); grains are tagged 1..n_grains.
GB_TAG = 1000

# Bump when the generated .msh would change for the same spec: it is part of the key.
FORMAT_VERSION = 1
# Random seeds keep at least this fraction of the typical grain size (V/n)^(1/dim) from
# each other, so no grain is tiny. 0.6 is far below random-sequential-adsorption jamming
# (0.83 in 2D, 0.90 in 3D), so sampling is fast; if it still stalls the spacing is relaxed
# by 10 % at a time (deterministically).
MIN_SPACING_FACTOR = 0.6
# Random seeds stay this fraction of the box length away from the faces (a seed on a face
# would coincide with its own mirror image).
SEED_MARGIN = 1e-3
# Mesh size grows away from GBs and nuclei with this slope dh/dd (0.5: neighbouring
# elements differ by well under 2x).
SIZE_SLOPE = 0.5
# Refined ball around a nucleus centre, in nucleus radii (covers the nucleus and a diffuse
# interface up to half a radius wide).
NUCLEUS_REFINE_FACTOR = 1.5

_KEYS = {
    "size": "domain.size",
    "n_grains": "microstructure.grains",
    "seeds": "microstructure.seeds",
    "rng_seed": "microstructure.rng_seed",
    "gb_width": "microstructure.gb_width",
    "representation": "microstructure.gb_representation",
    "h_grain": "mesh.size_grain",
    "h_gb": "mesh.size_gb",
    "h_nucleus": "mesh.size_nucleus",
    "nuclei": "nuclei.positions",
    "nucleus_radius": "nuclei.radius",
    "length_scale": "scales.length",
}


class MeshError(ValueError):
    """Bad polycrystal geometry or mesh parameters; the message names the config keys."""


@dataclass(frozen=True)
class PolycrystalSpec:
    """Inputs of a polycrystal mesh; lengths in metres."""

    size: tuple[float, ...]  # domain size, length 2 (2D) or 3 (3D)
    n_grains: int
    seeds: tuple[tuple[float, ...], ...] | None  # explicit Voronoi seeds; overrides n_grains
    rng_seed: int
    gb_width: float
    h_grain: float  # target mesh size inside grains
    h_gb: float  # mesh size in/near GBs
    h_nucleus: float  # mesh size around nuclei
    nuclei: tuple[tuple[float, ...], ...] | None  # None: one per grain at its centroid
    nucleus_radius: float
    length_scale: float = 1e-6
    # "tagged": GB strips are their own cells (2D only); "smooth": beta from distance.
    representation: str = "tagged"

    @property
    def dim(self) -> int:
        return len(self.size)


@dataclass
class Polycrystal:
    """A meshed polycrystal. Arrays are in scaled units (metres / spec.length_scale)."""

    mesh: object  # dolfinx.mesh.Mesh
    cell_tags: object  # grains 1..n, GB_TAG ("tagged")
    facet_tags: object  # LEFT..BACK on the box faces
    spec: PolycrystalSpec
    grain_ids: list[int]
    seeds: np.ndarray  # (n, dim)
    grain_centres: np.ndarray  # (n, dim), centroids of the clipped Voronoi cells
    nuclei: np.ndarray  # (m, dim)
    gb_segments: np.ndarray | list  # 2D: (k, 2, 2) GB centre lines; 3D: list of (p, 3) polygons
    gb_length: float  # 2D: total interior GB length; 3D: total interior GB face area
    msh_path: pathlib.Path
    key: str
    # grain id -> ids of the grains sharing a GB with it (inside the box)
    grain_neighbours: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def box(self) -> np.ndarray:
        """Domain size in scaled units."""
        return np.asarray(self.spec.size, dtype=float) / self.spec.length_scale

    @property
    def gb_width(self) -> float:
        """GB width in scaled units."""
        return self.spec.gb_width / self.spec.length_scale


# --------------------------------------------------------------------------- validation


def _fmt(x: float) -> str:
    """A length in metres with a readable unit: 4e-08 -> '40 nm'."""
    ax = abs(float(x))
    for unit, f in (("m", 1.0), ("mm", 1e-3), ("um", 1e-6), ("nm", 1e-9)):
        if ax >= f:
            return f"{x / f:.6g} {unit}"
    return f"{x:.6g} m"


def _fmt_point(p) -> str:
    return "(" + ", ".join(_fmt(v) for v in p) + ")"


def _typical_grain_size(spec: PolycrystalSpec) -> float:
    n = len(spec.seeds) if spec.seeds is not None else spec.n_grains
    return float(np.prod(spec.size) / n) ** (1.0 / spec.dim)


def validate(spec: PolycrystalSpec) -> None:
    """Raise :class:`MeshError` if the spec cannot give a sensible mesh."""
    k = _KEYS
    if len(spec.size) not in (2, 3):
        raise MeshError(f"{k['size']} must have 2 or 3 entries, got {len(spec.size)}")
    dim = spec.dim
    if spec.representation not in ("tagged", "smooth"):
        raise MeshError(f"{k['representation']} must be 'tagged' or 'smooth', got {spec.representation!r}")
    if dim == 3 and spec.representation == "tagged":
        raise MeshError(
            f"{k['representation']} = 'tagged' is 2D only (thin 3D GB layers are too costly); use 'smooth' in 3D"
        )
    for i, s in enumerate(spec.size):
        if not s > 0:
            raise MeshError(f"{k['size']}[{i}] must be positive, got {_fmt(s)}")
    for name in ("gb_width", "h_grain", "h_gb", "h_nucleus", "nucleus_radius", "length_scale"):
        v = getattr(spec, name)
        if not (v > 0 and math.isfinite(v)):
            raise MeshError(f"{k[name]} must be positive, got {_fmt(v)}")
    box = np.asarray(spec.size, dtype=float)

    if spec.seeds is None:
        if int(spec.n_grains) < 1:
            raise MeshError(f"{k['n_grains']} must be >= 1, got {spec.n_grains}")
    else:
        if len(spec.seeds) < 1:
            raise MeshError(f"{k['seeds']} is empty")
        for p in spec.seeds:
            if len(p) != dim:
                raise MeshError(f"{k['seeds']}: point {tuple(p)} has {len(p)} coordinates, {k['size']} has {dim}")
            if not all(0.0 < p[a] < box[a] for a in range(dim)):
                raise MeshError(
                    f"{k['seeds']}: seed {_fmt_point(p)} is not strictly inside the box "
                    f"{k['size']} = {_fmt_point(box)}"
                )
        s = np.asarray(spec.seeds, dtype=float)
        if len(s) > 1:
            dmin, _ = cKDTree(s).query(s, k=2)
            if dmin[:, 1].min() <= 1e-9 * _typical_grain_size(spec):
                raise MeshError(f"{k['seeds']} contains duplicate seeds")

    g = _typical_grain_size(spec)
    grains_key = k["n_grains"] if spec.seeds is None else f"len({k['seeds']})"
    if spec.gb_width >= g:
        root = "sqrt(area" if dim == 2 else "cbrt(volume"
        raise MeshError(
            f"{k['gb_width']} ({_fmt(spec.gb_width)}) is not smaller than the typical grain size "
            f"{root}/{grains_key}) = {_fmt(g)}"
        )
    if spec.h_gb > spec.gb_width:
        raise MeshError(
            f"{k['h_gb']} ({_fmt(spec.h_gb)}) is larger than {k['gb_width']} ({_fmt(spec.gb_width)})"
        )
    if spec.nuclei is not None:
        for p in spec.nuclei:
            if len(p) != dim:
                raise MeshError(f"{k['nuclei']}: point {tuple(p)} has {len(p)} coordinates, {k['size']} has {dim}")
            if not all(0.0 <= p[a] <= box[a] for a in range(dim)):
                raise MeshError(
                    f"{k['nuclei']}: nucleus {_fmt_point(p)} is outside the domain {k['size']} = {_fmt_point(box)}"
                )


# --------------------------------------------------------------------------- cache key


def _canonical(spec: PolycrystalSpec) -> dict:
    """JSON-able form of the spec: floats normalised, ignored inputs dropped."""

    def pts(v):
        return None if v is None else [[float(c) for c in p] for p in v]

    return {
        "format": FORMAT_VERSION,
        "size": [float(s) for s in spec.size],
        # explicit seeds override n_grains and the RNG: they must not change the key
        "n_grains": None if spec.seeds is not None else int(spec.n_grains),
        "rng_seed": None if spec.seeds is not None else int(spec.rng_seed),
        "seeds": pts(spec.seeds),
        "gb_width": float(spec.gb_width),
        "h_grain": float(spec.h_grain),
        "h_gb": float(spec.h_gb),
        "h_nucleus": float(spec.h_nucleus),
        "nuclei": pts(spec.nuclei),
        "nucleus_radius": float(spec.nucleus_radius),
        "length_scale": float(spec.length_scale),
        "representation": spec.representation,
    }


def spec_key(spec: PolycrystalSpec) -> str:
    """16 hex digits of sha256 over the canonical JSON of the spec and FORMAT_VERSION."""
    text = json.dumps(_canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- Voronoi geometry


@dataclass
class _Geometry:
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


def _order_polygon(pts: np.ndarray, ids: np.ndarray, normal: np.ndarray | None = None) -> np.ndarray:
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


def _voronoi_geometry(spec: PolycrystalSpec) -> _Geometry:
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
            ids = _order_polygon(verts[ids], ids, normal=other - seeds[p])
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
            ids = _order_polygon(verts[ids], ids)
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
    return _Geometry(box, seeds, verts, gb_ridges, bnd_ridges, neighbours, centres, float(gb_measure))


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


def _shrunk_grains(geo: _Geometry, half_width: float, length_scale: float) -> list[np.ndarray]:
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
            raise MeshError(
                f"grain {i + 1} (seed {_fmt_point(si * length_scale)}) vanishes when its boundaries are "
                f"thickened to {_KEYS['gb_width']} ({_fmt(2 * half_width * length_scale)}): reduce "
                f"{_KEYS['gb_width']} or move the seed away from its neighbours ({_KEYS['seeds']})"
            )
        out.append(poly)
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


# --------------------------------------------------------------------------- gmsh


@contextlib.contextmanager
def _gmsh_model(name: str, verbose: bool = False):
    """A fresh gmsh model; initialises gmsh only if nobody else has, restores options."""
    import gmsh

    owner = not gmsh.isInitialized()
    if owner:
        # no ~/.gmshrc (reproducibility), no SIGINT handler (leave Python's alone)
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        previous = None
    else:
        previous = gmsh.model.getCurrent()
    saved = {}

    def set_option(opt, value):
        if opt not in saved:
            saved[opt] = gmsh.option.getNumber(opt)
        gmsh.option.setNumber(opt, value)

    set_option("General.Terminal", 1 if verbose else 0)
    gmsh.model.add(name)
    try:
        yield gmsh, set_option
    finally:
        gmsh.model.setCurrent(name)
        gmsh.model.remove()
        if owner:
            gmsh.finalize()
        else:
            for opt, value in saved.items():
                gmsh.option.setNumber(opt, value)
            if previous is not None:
                with contextlib.suppress(Exception):
                    gmsh.model.setCurrent(previous)


def _mesh_options(set_option, h_max: float) -> None:
    # sizes come from the background field only
    set_option("Mesh.MeshSizeFromPoints", 0)
    set_option("Mesh.MeshSizeFromCurvature", 0)
    set_option("Mesh.MeshSizeExtendFromBoundary", 0)
    set_option("Mesh.MeshSizeMax", h_max)
    # determinism: one thread, fixed algorithms
    set_option("General.NumThreads", 1)
    set_option("Mesh.MaxNumThreads1D", 1)
    set_option("Mesh.MaxNumThreads2D", 1)
    set_option("Mesh.MaxNumThreads3D", 1)
    set_option("Mesh.Algorithm", 6)
    set_option("Mesh.Algorithm3D", 1)
    set_option("Mesh.ElementOrder", 1)
    set_option("Mesh.SaveAll", 0)  # only physical groups: untagged entities are not written
    set_option("Mesh.MshFileVersion", 4.1)
    set_option("Mesh.Binary", 1)


def _size_fields(gmsh, spec: PolycrystalSpec, dim: int, gb_entities: list[int], gb_dist_min: float,
                 nuclei: np.ndarray, sampling: int) -> None:
    """Distance + Threshold near the GB entities and each nucleus, Min of all, as background."""
    s = spec.length_scale
    h_grain, h_gb, h_nuc = spec.h_grain / s, spec.h_gb / s, spec.h_nucleus / s
    f = gmsh.model.mesh.field
    thresholds = []
    if gb_entities:
        dist = f.add("Distance")
        f.setNumbers(dist, "CurvesList" if dim == 2 else "SurfacesList", gb_entities)
        f.setNumber(dist, "Sampling", sampling)
        thr = f.add("Threshold")
        f.setNumber(thr, "InField", dist)
        f.setNumber(thr, "SizeMin", h_gb)
        f.setNumber(thr, "SizeMax", h_grain)
        f.setNumber(thr, "DistMin", gb_dist_min)
        f.setNumber(thr, "DistMax", gb_dist_min + max(h_grain - h_gb, 0.0) / SIZE_SLOPE)
        thresholds.append(thr)
    # nuclei: a Ball field is the Threshold of the distance to the centre, evaluated natively
    # (a MathEval distance per nucleus made meshing ~4x slower with 100 nuclei)
    r = NUCLEUS_REFINE_FACTOR * spec.nucleus_radius / s
    for c in nuclei:
        ball = f.add("Ball")
        for name, v in zip(("XCenter", "YCenter", "ZCenter"), (*map(float, c), 0.0, 0.0)):
            f.setNumber(ball, name, v)
        f.setNumber(ball, "Radius", r)
        f.setNumber(ball, "Thickness", max(h_grain - h_nuc, 0.0) / SIZE_SLOPE)
        f.setNumber(ball, "VIn", h_nuc)
        f.setNumber(ball, "VOut", h_grain)
        thresholds.append(ball)
    if not thresholds:
        fc = f.add("MathEval")
        f.setString(fc, "F", repr(float(h_grain)))
        thresholds.append(fc)
    fmin = f.add("Min")
    f.setNumbers(fmin, "FieldsList", thresholds)
    f.setAsBackgroundMesh(fmin)


def _sampling(length: float, h: float) -> int:
    """Distance-field samples per curve (per direction on surfaces): ~2 per mesh size h."""
    return int(min(max(20, math.ceil(2.0 * length / h)), 2000))


def _build_tagged_2d(gmsh, spec: PolycrystalSpec, geo: _Geometry, nuclei: np.ndarray) -> None:
    """OCC: box fragmented with the shrunk grains; the rest of the box is the GB network."""
    occ = gmsh.model.occ
    w = spec.gb_width / spec.length_scale
    shrunk = _shrunk_grains(geo, 0.5 * w, spec.length_scale)
    Lx, Ly = geo.box
    rect = occ.addRectangle(0.0, 0.0, 0.0, Lx, Ly)
    surfs = []
    for poly in shrunk:
        pts = [occ.addPoint(float(p[0]), float(p[1]), 0.0) for p in poly]
        lines = [occ.addLine(pts[k], pts[(k + 1) % len(pts)]) for k in range(len(pts))]
        surfs.append(occ.addPlaneSurface([occ.addCurveLoop(lines)]))
    _, out_map = occ.fragment([(2, rect)], [(2, t) for t in surfs])
    occ.synchronize()
    grain_surfs = []
    for i in range(geo.n):
        pieces = [t for d, t in out_map[1 + i] if d == 2]
        if len(pieces) != 1:
            raise MeshError(f"internal error: grain {i + 1} became {len(pieces)} surfaces in the OCC fragment")
        grain_surfs.append(pieces[0])
    taken = set(grain_surfs)
    gb_surfs = sorted(t for d, t in out_map[0] if d == 2 and t not in taken)
    # sanity: the centre of mass of each grain surface lies in its own Voronoi cell
    owner = cKDTree(geo.seeds).query([occ.getCenterOfMass(2, t)[:2] for t in grain_surfs])[1]
    if not np.array_equal(owner, np.arange(geo.n)):
        raise MeshError("internal error: grain surfaces do not match their Voronoi cells")
    if geo.n > 1 and not gb_surfs:
        raise MeshError("internal error: no GB surface left after the OCC fragment")
    for i, t in enumerate(grain_surfs):
        gmsh.model.addPhysicalGroup(2, [t], i + 1, name=f"grain_{i + 1}")
    if gb_surfs:
        gmsh.model.addPhysicalGroup(2, gb_surfs, GB_TAG, name="gb")
    on_face = _boundary_curves_by_face(gmsh, geo.box)
    for face, curves in on_face.items():
        gmsh.model.addPhysicalGroup(1, curves, face, name=FACE_NAMES[face])
    # refine on both edges of each strip: the band (d < w/2 from its edges) and w/2 beyond
    boundary = {c for cs in on_face.values() for c in cs}
    band_edges = sorted(
        {abs(t) for _, t in gmsh.model.getBoundary([(2, s) for s in grain_surfs], combined=False, oriented=False)}
        - boundary
    )
    longest = max([gmsh.model.occ.getMass(1, c) for c in band_edges], default=1.0)
    _size_fields(gmsh, spec, 2, band_edges, 0.5 * w, nuclei, _sampling(longest, spec.h_gb / spec.length_scale))


def _boundary_curves_by_face(gmsh, box: np.ndarray) -> dict[int, list[int]]:
    """Curves lying on x=0, x=Lx, y=0, y=Ly (both end points on the line)."""
    tol = 1e-9 * float(box.max())
    out = {LEFT: [], RIGHT: [], BOTTOM: [], TOP: []}
    for _, c in gmsh.model.getEntities(1):
        ends = gmsh.model.getBoundary([(1, c)], combined=False, oriented=False)
        xy = np.array([gmsh.model.getValue(0, abs(p), [])[:2] for _, p in ends])
        for axis in range(2):
            for side in range(2):
                if np.all(np.abs(xy[:, axis] - side * box[axis]) < tol):
                    out[2 * axis + side + 1].append(c)
    return {f: sorted(c) for f, c in out.items()}


def _build_smooth(gmsh, spec: PolycrystalSpec, geo: _Geometry, nuclei: np.ndarray) -> None:
    """Built-in kernel, conforming Voronoi cells from shared vertices/edges/faces."""
    g = gmsh.model.geo
    dim = geo.dim
    pt = {}

    def point(v):
        if v not in pt:
            x = geo.vertices[v]
            pt[v] = g.addPoint(float(x[0]), float(x[1]), float(x[2]) if dim == 3 else 0.0)
        return pt[v]

    edge = {}

    def line(a, b):
        """Signed tag of the line from vertex a to vertex b."""
        key = (min(a, b), max(a, b))
        if key not in edge:
            edge[key] = g.addLine(point(key[0]), point(key[1]))
        return edge[key] if a == key[0] else -edge[key]

    if dim == 2:
        gb_lines = [line(int(ids[0]), int(ids[1])) for _, _, ids in geo.gb_ridges]
        face_lines = {f: [] for f in (LEFT, RIGHT, BOTTOM, TOP)}
        for _, f, ids in geo.bnd_ridges:
            face_lines[f].append(abs(line(int(ids[0]), int(ids[1]))))
        cell_verts = [set() for _ in range(geo.n)]
        for i, j, ids in geo.gb_ridges:
            cell_verts[i].update(ids.tolist())
            cell_verts[j].update(ids.tolist())
        for i, _, ids in geo.bnd_ridges:
            cell_verts[i].update(ids.tolist())
        cells = []
        for i in range(geo.n):
            ids = np.array(sorted(cell_verts[i]))
            ids = _order_polygon(geo.vertices[ids], ids)
            loop = []
            for k in range(len(ids)):
                a, b = int(ids[k]), int(ids[(k + 1) % len(ids)])
                if (min(a, b), max(a, b)) not in edge:
                    raise MeshError(f"degenerate Voronoi cell for grain {i + 1}: perturb microstructure.seeds")
                loop.append(line(a, b))
            cells.append(g.addPlaneSurface([g.addCurveLoop(loop)]))
        g.synchronize()
        for i, s in enumerate(cells):
            gmsh.model.addPhysicalGroup(2, [s], i + 1, name=f"grain_{i + 1}")
        for f, ls in face_lines.items():
            gmsh.model.addPhysicalGroup(1, sorted(ls), f, name=FACE_NAMES[f])
        gb_entities = sorted(abs(t) for t in gb_lines)
        longest = max((float(np.linalg.norm(geo.vertices[ids[1]] - geo.vertices[ids[0]]))
                       for _, _, ids in geo.gb_ridges), default=1.0)
    else:
        def surface(ids):
            loop = [line(int(ids[k]), int(ids[(k + 1) % len(ids)])) for k in range(len(ids))]
            return g.addPlaneSurface([g.addCurveLoop(loop)])

        cell_faces = [[] for _ in range(geo.n)]
        gb_entities = []
        for i, j, ids in geo.gb_ridges:
            s = surface(ids)
            gb_entities.append(s)
            cell_faces[i].append(s)
            cell_faces[j].append(s)
        face_surfs = {f: [] for f in range(1, 7)}
        for i, f, ids in geo.bnd_ridges:
            s = surface(ids)
            face_surfs[f].append(s)
            cell_faces[i].append(s)
        # every edge must be shared by >= 2 faces, else the cells are not watertight
        use = {}
        for _, _, ids in geo.gb_ridges + geo.bnd_ridges:
            for k in range(len(ids)):
                key = (min(ids[k], ids[(k + 1) % len(ids)]), max(ids[k], ids[(k + 1) % len(ids)]))
                use[key] = use.get(key, 0) + 1
        if min(use.values()) < 2:
            raise MeshError("degenerate 3D Voronoi geometry (open cell): perturb microstructure.seeds")
        vols = [g.addVolume([g.addSurfaceLoop(fs)]) for fs in cell_faces]
        g.synchronize()
        for i, v in enumerate(vols):
            gmsh.model.addPhysicalGroup(3, [v], i + 1, name=f"grain_{i + 1}")
        for f, ss in face_surfs.items():
            gmsh.model.addPhysicalGroup(2, sorted(ss), f, name=FACE_NAMES[f])
        longest = max((float(np.ptp(geo.vertices[ids], axis=0).max()) for _, _, ids in geo.gb_ridges), default=1.0)
    w = spec.gb_width / spec.length_scale
    # beta is non-negligible up to d = w (0.018 there): refine that whole band
    _size_fields(gmsh, spec, dim, sorted(gb_entities), w, nuclei,
                 _sampling(longest, spec.h_gb / spec.length_scale))


def _generate(spec: PolycrystalSpec, geo: _Geometry, nuclei: np.ndarray, path: pathlib.Path,
              verbose: bool) -> None:
    """Build, mesh and atomically write ``path`` (rank 0 only)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.msh")
    with _gmsh_model(f"polycrystal-{path.stem}", verbose) as (gmsh, set_option):
        _mesh_options(set_option, spec.h_grain / spec.length_scale)
        if spec.representation == "tagged":
            _build_tagged_2d(gmsh, spec, geo, nuclei)
        else:
            _build_smooth(gmsh, spec, geo, nuclei)
        gmsh.model.mesh.generate(geo.dim)
        try:
            gmsh.write(str(tmp))
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _load(path: pathlib.Path, comm, dim: int):
    """(mesh, cell_tags, facet_tags) from a .msh read on rank 0 and distributed."""
    import dolfinx
    from dolfinx.io import gmshio

    partitioner = dolfinx.mesh.create_cell_partitioner(dolfinx.mesh.GhostMode.shared_facet)
    if comm.rank == 0:
        with _gmsh_model(f"load-{path.stem}") as (gmsh, _):
            gmsh.merge(str(path))
            return gmshio.model_to_mesh(gmsh.model, comm, 0, gdim=dim, partitioner=partitioner)
    return gmshio.model_to_mesh(None, comm, 0, gdim=dim, partitioner=partitioner)


def build_polycrystal(spec: PolycrystalSpec, comm, cache_dir="meshes", verbose: bool = False) -> Polycrystal:
    """Mesh the polycrystal (collective on ``comm``); reuse ``cache_dir/<key>.msh`` if present.

    ``cache_dir`` must be the same path on every rank (only rank 0 reads and writes it).
    The key covers the spec and FORMAT_VERSION, not the gmsh version: another gmsh may
    mesh the same spec differently, so do not share a cache directory across gmsh versions.
    ``verbose`` lets gmsh print to the terminal. Raises :class:`MeshError` on every rank for
    bad input, including geometry problems found while building on rank 0.
    """
    validate(spec)
    geo = _voronoi_geometry(spec)
    s = spec.length_scale
    nuclei = geo.centres.copy() if spec.nuclei is None else np.asarray(spec.nuclei, dtype=float) / s
    key = spec_key(spec)
    path = pathlib.Path(cache_dir) / f"{key}.msh"

    error, cause = None, None
    if comm.rank == 0:
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                _generate(spec, geo, nuclei, path, verbose)
        except Exception as e:  # tell the other ranks instead of leaving them in a collective
            error, cause = (type(e).__name__, str(e)), e
    error = comm.bcast(error, root=0)
    if error is not None:
        cls = MeshError if error[0] == "MeshError" else RuntimeError
        raise cls(f"mesh generation failed on rank 0: {error[0]}: {error[1]}") from cause

    mesh, cell_tags, facet_tags = _load(path, comm, geo.dim)
    if geo.dim == 2:
        segs = np.array([geo.vertices[ids] for _, _, ids in geo.gb_ridges]).reshape(-1, 2, 2)
    else:
        segs = [geo.vertices[ids].copy() for _, _, ids in geo.gb_ridges]
    return Polycrystal(
        mesh=mesh,
        cell_tags=cell_tags,
        facet_tags=facet_tags,
        spec=spec,
        grain_ids=list(range(1, geo.n + 1)),
        seeds=geo.seeds,
        grain_centres=geo.centres,
        nuclei=nuclei,
        gb_segments=segs,
        gb_length=geo.gb_measure,
        msh_path=path,
        key=key,
        grain_neighbours={i + 1: [j + 1 for j in nb] for i, nb in enumerate(geo.neighbours)},
    )
