"""Polycrystals from a labelled image (2D): the grain-boundary network as a planar graph of
shared, simplified polylines, the grains' tagged-GB interiors, and a Voronoi rasteriser.

Pixels. The image covers ``domain.size`` (which must equal its pixel count times
``microstructure.pixel_size`` to within half a pixel; spec.validate checks it), row 0 at
the top, so the picture appears upright with y up. Grain ``i + 1`` (the cell tag) is the
``i``-th smallest label value.

Graph. GBs run along the pixel edges ("cracks") between differently labelled pixels, and
the box faces are the cracks between a pixel and the outside. Nodes are the pixel corners
where three or more regions meet (the outside counts) and the box corners; a chain is the
crack path between two nodes, with one grain on its left and one on its right (a grain
enclosed by one other grain is a closed chain with a node put anywhere on it). A GB chain
becomes the polyline through its end nodes and the midpoints of its cracks (the
staircase's centre line); the nodes are moved to the junctions fitted to the boundaries
around them, the polylines smoothed and simplified by Douglas-Peucker (skimage
approximate_polygon, then made area-neutral) with the tolerance
``SIMPLIFY * max(pixel, mesh.size_gb)``: detail below the pixel or the mesh size is noise.
Both grains of a chain use the same polyline, so the grains tile the box without gaps or
overlaps; polylines that would cross or touch are redone more conservatively
(:func:`_simplified`). The grains' boundary loops are the faces of the graph (outer loop
counterclockwise, holes clockwise).

Tagged GBs. As for Voronoi grains (spec.py), each grain is shrunk by gb_width / 2 from its
GB edges, box faces staying, by a mitred offset of its loops, and gmsh fragments the box
with the shrunk grains: the rest is the GB strip network. For a convex polygon this is
exactly the Voronoi construction, so the strip area is again gb_length * gb_width minus
(w/2)^2 cot(angle/2) per junction corner (bends between two grains cancel). Where an edge
shorter than the offset would turn inside out, it is removed (an edge event of the
straight skeleton); a grain that would split in two (a neck narrower than gb_width) or
vanish is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .labels import grain_labels, read_labels
from .spec import BOTTOM, CONFIG_KEYS, LEFT, RIGHT, TOP, MeshError, PolycrystalSpec, format_length
from .voronoi import VoronoiGeometry, _polygon_area_centroid

# Tuned on rasterised Voronoi tessellations of 5-60 grains at 5-20 nm pixels (tests/
# test_image_microstructure.py measures the result): with these, GB lengths come back
# within 0.6 % and grain areas of 400+ pixels within 2-3 % (without smoothing the
# leftover staircase made GBs 2-6 % too long; without the junction fit, chords from
# junctions at pixel corners put grain areas off by up to 5.6 %).
# Douglas-Peucker tolerance, in units of max(pixel size, mesh.size_gb).
SIMPLIFY = 0.5
# Binomial (1/4, 1/2, 1/4) smoothing passes over the crack midpoints.
SMOOTH = 4
# Junction fit (_fitted_nodes): arms within FIT_RADIUS, shift at most MAX_SHIFT (pixels).
FIT_RADIUS = 10.0
MAX_SHIFT = 1.5
# Tolerance factors of the retries for polylines that cross.
RETRIES = (1.0, 0.5, 0.25)
# Steps between pixel corners (di, dj) in counterclockwise order: E, N, W, S.
STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))


@dataclass
class ImageGeometry(VoronoiGeometry):
    """A label image's grains in the form build_polycrystal consumes (scaled units).

    ``seeds`` are the grain centres (there are no Voronoi seeds); ``gb_ridges`` are the
    segments of the simplified GB polylines, ``bnd_ridges`` those of the box faces.
    """

    label_values: np.ndarray  # (n,) image value of grain i (cell tag i + 1)
    # loops[i]: [(vertex ids (m,), gb (m,) bool: edge ids[k] -> ids[k+1] is a GB)], outer first
    loops: list
    pixel_area: np.ndarray  # (n,) pixel count times the pixel area
    grain_area: np.ndarray  # (n,) area of the grain's polygon
    tolerance: float  # Douglas-Peucker tolerance used


@dataclass
class _Chain:
    corners: np.ndarray  # (k + 1, 2) pixel corners (i, j), y = i, x = j, start node to end node
    left: int  # grain index on the left (-1: outside the image)
    right: int
    first: int  # direction (index into STEPS) of the first step
    last: int  # direction of the last step

    @property
    def gb(self) -> bool:
        return self.left >= 0 and self.right >= 0


# --------------------------------------------------------------------------- crack graph


def _crack_chains(index: np.ndarray) -> list[_Chain]:
    """Chains of the crack graph of ``index`` (grain indices, row 0 at y = 0)."""
    ny, nx = index.shape
    pad = np.full((ny + 2, nx + 2), -1, dtype=np.int64)
    pad[1:-1, 1:-1] = index
    vert = pad[1:-1, :-1] != pad[1:-1, 1:]  # (ny, nx + 1): corner (i, j) -> (i + 1, j)
    horz = pad[:-1, 1:-1] != pad[1:, 1:-1]  # (ny + 1, nx): corner (i, j) -> (i, j + 1)
    has = np.zeros((4, ny + 1, nx + 1), dtype=bool)
    has[0, :, :-1] = horz
    has[1, :-1, :] = vert
    has[2, :, 1:] = horz
    has[3, 1:, :] = vert
    node = has.sum(axis=0) >= 3
    node[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    seen_v, seen_h = np.zeros_like(vert), np.zeros_like(horz)

    def crack(i, j, d):
        return ((seen_h, i, j), (seen_v, i, j), (seen_h, i, j - 1), (seen_v, i - 1, j))[d]

    def sides(i, j, d):
        """(left, right) pixel values of the step from corner (i, j) in direction d."""
        return (
            (pad[i + 1, j + 1], pad[i, j + 1]),
            (pad[i + 1, j], pad[i + 1, j + 1]),
            (pad[i, j], pad[i + 1, j]),
            (pad[i, j + 1], pad[i, j]),
        )[d]

    def walk(i, j, d):
        left, right = sides(i, j, d)
        corners, first = [(i, j)], d
        while True:
            arr, a, b = crack(i, j, d)
            arr[a, b] = True
            i, j = i + STEPS[d][0], j + STEPS[d][1]
            corners.append((i, j))
            if node[i, j]:
                break
            back = (d + 2) % 4
            d = next(e for e in range(4) if e != back and has[e, i, j])
        return _Chain(np.array(corners), int(left), int(right), first, d)

    chains = []
    for i, j in np.argwhere(node):
        for d in range(4):
            if has[d, i, j]:
                arr, a, b = crack(i, j, d)
                if not arr[a, b]:
                    chains.append(walk(i, j, d))
    # closed chains without a node: a grain inside one other grain
    for cracks, seen, d in ((vert, seen_v, 1), (horz, seen_h, 0)):
        while (rest := np.argwhere(cracks & ~seen)).size:
            i, j = rest[0]
            node[i, j] = True
            chains.append(walk(i, j, d))
    return chains


def _midpoints(ch: _Chain) -> np.ndarray:
    """A chain in pixel units (i, j): a GB staircase by its end nodes and the midpoints of
    its cracks (within half a pixel of the boundary it digitises); a box chain, straight
    (box corners are nodes), by its end nodes."""
    c = ch.corners.astype(float)
    return np.vstack([c[:1], 0.5 * (c[:-1] + c[1:]), c[-1:]]) if ch.gb else c[[0, -1]]


def _fitted_nodes(chains, mids, shape) -> dict:
    """Junctions moved off the pixel corners (pixel units): to the point nearest, in least
    squares, to the lines fitted to the GB cracks within FIT_RADIUS of the node (along
    the face for a node on the box), by at most MAX_SHIFT. A chord from a node to the
    next vertex carries the node's error along the whole edge: at the pixel corner it
    changes a 500-pixel grain's area by up to 5 %."""
    ny, nx = shape
    arms: dict[tuple, list] = {}
    for ch, m in zip(chains, mids):
        if ch.gb:
            arms.setdefault(tuple(ch.corners[0]), []).append(m[1:])
            arms.setdefault(tuple(ch.corners[-1]), []).append(m[-2::-1])
    out = {}
    for v, lines in arms.items():
        p = np.asarray(v, dtype=float)
        a, b = np.zeros((2, 2)), np.zeros(2)
        for pts in lines:
            near = pts[np.linalg.norm(pts - p, axis=1) <= FIT_RADIUS]
            if len(near) < 2:
                continue
            centre = near.mean(axis=0)
            nrm = np.linalg.svd(near - centre)[2][1]  # normal: the direction of least spread
            a += len(near) * np.outer(nrm, nrm)
            b += len(near) * nrm * (nrm @ centre)
        face = [k for k, n in ((0, ny), (1, nx)) if v[k] in (0, n)]
        if len(face) == 2:  # box corner
            continue
        if face:
            e = np.zeros(2)
            e[1 - face[0]] = 1.0
            den = e @ a @ e
            if den <= 1e-9 * max(np.trace(a), 1e-300):
                continue
            shift = e * (e @ (b - a @ p)) / den
        else:
            ev = np.linalg.eigvalsh(a)
            if ev[0] <= 1e-2 * ev[1]:  # no two arms cross at an angle (e.g. a closed chain)
                continue
            shift = np.linalg.solve(a, b) - p
        norm = np.linalg.norm(shift)
        out[v] = p + (shift if norm <= MAX_SHIFT else shift * (MAX_SHIFT / norm))
    return out


# --------------------------------------------------------------------------- segment checks


def _bad_pairs(segs: np.ndarray, eps: float) -> np.ndarray:
    """Index pairs (k, 2) of segments (m, 2, 2) that cross, touch away from a shared end
    point, overlap or coincide."""
    if len(segs) < 2:
        return np.zeros((0, 2), dtype=int)
    lengths = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
    pairs = cKDTree(segs.mean(axis=1)).query_pairs(lengths.max() + eps, output_type="ndarray")
    if len(pairs) == 0:
        return pairs
    p, q = segs[pairs[:, 0]], segs[pairs[:, 1]]

    def orient(a, b, c):
        u, v = b - a, c - a
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

    def on(r, s):
        """r strictly inside segment s (within eps)."""
        u = s[:, 1] - s[:, 0]
        n = np.linalg.norm(u, axis=1)
        t = ((r - s[:, 0]) * u).sum(axis=1) / n
        return (np.abs(orient(s[:, 0], s[:, 1], r)) <= eps * n) & (t > eps) & (t < n - eps)

    d1, d2 = orient(q[:, 0], q[:, 1], p[:, 0]), orient(q[:, 0], q[:, 1], p[:, 1])
    d3, d4 = orient(p[:, 0], p[:, 1], q[:, 0]), orient(p[:, 0], p[:, 1], q[:, 1])
    eq, ep = eps * lengths[pairs[:, 1]], eps * lengths[pairs[:, 0]]
    proper = (((d1 > eq) & (d2 < -eq)) | ((d1 < -eq) & (d2 > eq))) & (
        ((d3 > ep) & (d4 < -ep)) | ((d3 < -ep) & (d4 > ep))
    )
    same = (np.abs(p - q).max(axis=(1, 2)) <= eps) | (np.abs(p - q[:, ::-1]).max(axis=(1, 2)) <= eps)
    bad = proper | same | on(p[:, 0], q) | on(p[:, 1], q) | on(q[:, 0], p) | on(q[:, 1], p)
    return pairs[bad]


# --------------------------------------------------------------------------- geometry


def _douglas_peucker(m: np.ndarray, tol: float) -> np.ndarray:
    """Douglas-Peucker (skimage), then each kept interior vertex moved along the normal of
    its neighbours' chord so that the area between the polyline and the two chords at it
    is zero, by at most ``tol``. The kept vertices lie on the curve, so plain
    Douglas-Peucker cuts every convex arc: a 7-pixel round grain lost 8 % of its area."""
    from skimage.measure import approximate_polygon

    kept = approximate_polygon(m, tol)
    idx, j = [], 0
    for row in kept:  # the kept rows are copies of rows of m, in order
        while not (m[j] == row).all():
            j += 1
        idx.append(j)
        j += 1
    v = kept.copy()
    for a in range(1, len(idx) - 1):
        chord = v[a + 1] - v[a - 1]
        length = float(np.linalg.norm(chord))
        if length == 0.0:
            continue
        area = _signed_area(np.vstack([v[a - 1], m[idx[a - 1] + 1 : idx[a + 1]], v[a + 1], v[a]]))
        shift = float(np.clip(-2.0 * area / length, -tol, tol))
        v[a] += shift * np.array([-chord[1], chord[0]]) / length
    return v


def _simplified(chains, shape, px, py, tol, eps) -> list[np.ndarray]:
    """Simplified polylines (scaled xy) of the chains.

    Nodes are fitted, GB polylines smoothed (SMOOTH binomial passes, ends fixed: what is
    left of the staircase would make the simplified line zigzag and too long) and
    Douglas-Peucker-simplified. A chain whose polyline crosses or touches another, or has
    a zero-length segment, gets its nodes back at their pixel corners, then is simplified
    again with less tolerance (RETRIES), then kept unsimplified: the plain midpoint
    polylines between pixel corners never cross, so this ends.
    """
    mids = [_midpoints(ch) for ch in chains]
    fitted = _fitted_nodes(chains, mids, shape)
    ends = [(tuple(ch.corners[0]), tuple(ch.corners[-1])) for ch in chains]
    plain = len(RETRIES)  # level: 0..plain-1 simplified with tol * RETRIES[level], plain: as is
    level = np.zeros(len(chains), dtype=int)
    for _ in range(plain + 2):
        lines = []
        for ch, m, (a, b), lv in zip(chains, mids, ends, level):
            m = m.copy()
            m[0], m[-1] = fitted.get(a, m[0]), fitted.get(b, m[-1])
            if ch.gb and lv < plain:
                for _ in range(SMOOTH):
                    m[1:-1] = 0.25 * m[:-2] + 0.5 * m[1:-1] + 0.25 * m[2:]
            m = np.c_[m[:, 1] * px, m[:, 0] * py]
            lines.append(_douglas_peucker(m, tol * RETRIES[lv]) if ch.gb and lv < plain else m)
        owner = np.concatenate([np.full(len(ln) - 1, k) for k, ln in enumerate(lines)])
        segs = np.concatenate([np.stack([ln[:-1], ln[1:]], axis=1) for ln in lines])
        long = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1) > eps
        kept = np.flatnonzero(long)
        bad = np.unique(np.r_[owner[~long], owner[kept[_bad_pairs(segs[long], eps)]].ravel()])
        if bad.size == 0:
            return lines
        for k in bad:
            # first the fitted nodes go (two nodes a pixel apart may swap), then tolerance
            if any(v in fitted for v in ends[k]):
                for v in ends[k]:
                    fitted.pop(v, None)
            else:
                level[k] = min(level[k] + 1, plain)
    raise MeshError("internal error: the GB polylines of the image cross after simplification")


def _signed_area(p: np.ndarray) -> float:
    return 0.5 * float(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]))


def image_geometry(spec: PolycrystalSpec) -> ImageGeometry:
    """The grains of ``spec.image`` (spec.validate has checked it) as a planar graph."""
    labels = grain_labels(read_labels(spec.image), spec.image)
    values, index = np.unique(labels, return_inverse=True)
    index = index.reshape(labels.shape)[::-1]  # row 0 at y = 0
    n = len(values)
    ny, nx = index.shape
    box = np.asarray(spec.size, dtype=float) / spec.length_scale
    px, py = box[0] / nx, box[1] / ny
    tol = SIMPLIFY * max(px, py, spec.h_gb / spec.length_scale)
    eps = 1e-9 * float(box.max())

    chains = _crack_chains(index)
    lines = _simplified(chains, index.shape, px, py, tol, eps)

    # vertices: nodes by pixel corner (shared), then the interior points of each polyline
    node_id: dict[tuple, int] = {}
    verts: list[np.ndarray] = []
    ids = []
    for ch, ln in zip(chains, lines):
        ends = []
        for c, xy in ((tuple(ch.corners[0]), ln[0]), (tuple(ch.corners[-1]), ln[-1])):
            if c not in node_id:
                node_id[c] = len(verts)
                verts.append(xy)
            ends.append(node_id[c])
        inner = list(range(len(verts), len(verts) + len(ln) - 2))
        verts.extend(ln[1:-1])
        ids.append(np.array([ends[0], *inner, ends[1]]))
    vertices = np.asarray(verts)

    # faces: at a node, the half-edges leave in distinct pixel directions; the face on the
    # left of an arriving half-edge continues along the next one clockwise from its twin
    out: dict[tuple, list] = {}
    for k, ch in enumerate(chains):
        out.setdefault(tuple(ch.corners[0]), []).append((ch.first, 2 * k))
        out.setdefault(tuple(ch.corners[-1]), []).append(((ch.last + 2) % 4, 2 * k + 1))
    position = {}
    for v, lst in out.items():
        lst.sort()
        for p, (_, h) in enumerate(lst):
            position[h] = (v, p)

    def following(h):
        v, p = position[h ^ 1]
        return out[v][p - 1][1]

    loops: list[list] = [[] for _ in range(n)]
    seen = np.zeros(2 * len(chains), dtype=bool)
    for h0 in range(2 * len(chains)):
        if seen[h0]:
            continue
        cycle, h = [], h0
        while not seen[h]:
            seen[h] = True
            cycle.append(h)
            h = following(h)
        face = {chains[h // 2].left if h % 2 == 0 else chains[h // 2].right for h in cycle}
        if len(face) != 1:
            raise MeshError("internal error: a face of the image's GB graph has two grains")
        g = face.pop()
        if g < 0:
            continue
        loop = np.concatenate([(ids[h // 2] if h % 2 == 0 else ids[h // 2][::-1])[:-1] for h in cycle])
        gb = np.concatenate([np.full(len(ids[h // 2]) - 1, chains[h // 2].gb) for h in cycle])
        loops[g].append((loop, gb))

    grain_area, centres = np.zeros(n), np.zeros((n, 2))
    for g in range(n):
        areas = [_signed_area(vertices[lp]) for lp, _ in loops[g]]
        if sum(a > 0 for a in areas) != 1:
            raise MeshError(f"internal error: grain {g + 1} of the image has {sum(a > 0 for a in areas)} outer loops")
        order = np.argsort(areas)[::-1]  # the outer loop first
        loops[g] = [loops[g][k] for k in order]
        moments = [_polygon_area_centroid(vertices[lp]) for lp, _ in loops[g]]
        grain_area[g] = sum(a for a, _ in moments)
        centres[g] = sum(a * c for a, c in moments) / grain_area[g]
    centres = _inside(centres, index, px, py)
    if abs(grain_area.sum() - box.prod()) > 1e-9 * box.prod():
        raise MeshError("internal error: the image's grain polygons do not tile the box")

    gb_ridges, bnd_ridges = [], []
    for ch, vid in zip(chains, ids):
        for a, b in zip(vid[:-1], vid[1:]):
            if ch.gb:
                gb_ridges.append((min(ch.left, ch.right), max(ch.left, ch.right), np.array([a, b])))
            else:
                (i0, j0), (i1, j1) = ch.corners[0], ch.corners[-1]
                face = LEFT if j0 == j1 == 0 else RIGHT if j0 == j1 == nx else BOTTOM if i0 == i1 == 0 else TOP
                bnd_ridges.append((max(ch.left, ch.right), face, np.array([a, b])))
    gb_ridges.sort(key=lambda r: (r[0], r[1]))
    neighbours = [sorted({j for a, b, _ in gb_ridges for i, j in ((a, b), (b, a)) if i == g}) for g in range(n)]
    gb_measure = sum(float(np.linalg.norm(vertices[v[1]] - vertices[v[0]])) for _, _, v in gb_ridges)
    return ImageGeometry(
        box=box,
        seeds=centres,
        vertices=vertices,
        gb_ridges=gb_ridges,
        bnd_ridges=bnd_ridges,
        neighbours=neighbours,
        centres=centres,
        gb_measure=gb_measure,
        label_values=values,
        loops=loops,
        pixel_area=np.bincount(index.ravel(), minlength=n) * px * py,
        grain_area=grain_area,
        tolerance=tol,
    )


def _inside(centres: np.ndarray, index: np.ndarray, px: float, py: float) -> np.ndarray:
    """Centroids, or for a grain whose centroid lies in another grain (it is not convex)
    its pixel farthest from the other grains and the box faces."""
    from scipy.ndimage import distance_transform_edt

    ny, nx = index.shape
    out = centres.copy()
    for g, (x, y) in enumerate(centres):
        j, i = min(int(x / px), nx - 1), min(int(y / py), ny - 1)
        if index[i, j] != g:
            dist = distance_transform_edt(np.pad(index == g, 1), sampling=(py, px))[1:-1, 1:-1]
            i, j = np.unravel_index(np.argmax(dist), dist.shape)
            out[g] = ((j + 0.5) * px, (i + 0.5) * py)
    return out


# --------------------------------------------------------------------------- tagged GBs


def _meet(n1, c1, n2, c2, fallback):
    """Intersections of the lines n1.x = c1 and n2.x = c2 (rows); ``fallback`` where parallel."""
    det = n1[:, 0] * n2[:, 1] - n1[:, 1] * n2[:, 0]
    ok = np.abs(det) > 1e-12
    safe = np.where(ok, det, 1.0)
    x = (c1 * n2[:, 1] - c2 * n1[:, 1]) / safe
    y = (n1[:, 0] * c2 - n2[:, 0] * c1) / safe
    return np.where(ok[:, None], np.c_[x, y], fallback)


def mitred_offset(p: np.ndarray, offset: np.ndarray, eps: float) -> np.ndarray | None:
    """Polygon ``p`` (m, 2) with edge k (p[k] -> p[k+1]) moved to its left by ``offset[k]``
    and consecutive edges meeting at the intersection of their lines; None if it vanishes.

    Our own algorithm: the runtime has no polygon offsetting (shapely), and OCC's offset
    rounds reflex corners and moves every edge, box faces included. An edge shorter than
    its corners' mitres turns inside out; such edges are removed in the order they vanish
    as the offset grows (the edge events of a straight skeleton) and their neighbours
    meet instead. Split events (a neck pinching off) are not handled: the caller rejects
    a self-intersecting result.
    """
    d = np.roll(p, -1, axis=0) - p
    d /= np.linalg.norm(d, axis=1)[:, None]
    nrm = np.c_[-d[:, 1], d[:, 0]]
    c0 = (nrm * p).sum(axis=1)
    active = np.arange(len(p))
    while True:
        if len(active) < 3:
            return None
        prev = np.roll(active, 1)
        # Adjacent antiparallel edges (a removed edge joined them) whose offset lines have
        # passed each other bound a strip narrower than the offset: both vanish with it.
        cross = nrm[prev, 0] * nrm[active, 1] - nrm[prev, 1] * nrm[active, 0]
        gone = (np.abs(cross) < 1e-9) & ((d[prev] * d[active]).sum(axis=1) < 0)
        gone &= c0[prev] + offset[prev] + c0[active] + offset[active] > eps
        if gone.any():
            k = int(np.flatnonzero(gone)[0])
            active = np.delete(active, [k, (k - 1) % len(active)])
            continue
        q0 = _meet(nrm[prev], c0[prev], nrm[active], c0[active], p[active])
        q1 = _meet(
            nrm[prev],
            c0[prev] + offset[prev],
            nrm[active],
            c0[active] + offset[active],
            p[active] + nrm[active] * offset[active, None],
        )
        s0 = ((np.roll(q0, -1, axis=0) - q0) * d[active]).sum(axis=1)
        s1 = ((np.roll(q1, -1, axis=0) - q1) * d[active]).sum(axis=1)
        bad = s1 < -eps
        if not bad.any():
            return q1[s1 > eps]
        # edge lengths are linear in the offset: edge k vanishes at t = s0 / (s0 - s1)
        t = np.where(bad, s0 / np.where(bad, s0 - s1, 1.0), np.inf)
        active = np.delete(active, int(np.argmin(t)))


def shrunk_image_grains(geo: ImageGeometry, half_width: float, length_scale: float) -> list[list[np.ndarray]]:
    """Grain interiors of the tagged representation: each grain's loops (outer first, then
    holes) offset by ``half_width`` from its GB edges; box-face edges stay on the faces."""
    box = geo.box
    g = float(np.sqrt(box.prod() / geo.n))
    eps = 1e-9 * float(box.max())
    width = format_length(2 * half_width * length_scale)
    out = []
    for i, loops in enumerate(geo.loops):
        across = format_length(np.sqrt(geo.pixel_area[i]) * length_scale)
        label = f"grain {i + 1} (label {geo.label_values[i]}, {across} across)"
        shrunk: list[np.ndarray] = []
        valid = True
        for ids, gb in loops:
            q = mitred_offset(geo.vertices[ids], np.where(gb, half_width, 0.0), eps)
            if q is None or abs(_signed_area(q)) < 1e-6 * g * g:
                if not shrunk:
                    raise MeshError(
                        f"{label} vanishes when its boundaries are thickened to {CONFIG_KEYS['gb_width']} "
                        f"({width}): reduce {CONFIG_KEYS['gb_width']} or merge it into a neighbour in the image"
                    )
                valid = False  # a vanished hole: the grain around it is too thin
                break
            for a in range(2):  # exactly onto the box faces (facet tags, OCC fragment)
                q[np.abs(q[:, a]) < eps, a] = 0.0
                q[np.abs(q[:, a] - box[a]) < eps, a] = box[a]
            shrunk.append(q)
        if valid:
            valid = _signed_area(shrunk[0]) > 0 and all(_signed_area(q) < 0 for q in shrunk[1:])
        if valid:
            segs = np.concatenate([np.stack([q, np.roll(q, -1, axis=0)], axis=1) for q in shrunk])
            valid = len(_bad_pairs(segs, eps)) == 0
        if not valid:
            raise MeshError(
                f"{label} has a part narrower than {CONFIG_KEYS['gb_width']} ({width}): thickening its "
                f"boundaries would split it; reduce {CONFIG_KEYS['gb_width']} or smooth the image"
            )
        out.append(shrunk)
    return out


# --------------------------------------------------------------------------- rasterising


def voronoi_labels(size, pixel_size: float, seeds: np.ndarray, warp: float = 0.0) -> np.ndarray:
    """A label image (labels 1..n, row 0 at the top) of the Voronoi tessellation of
    ``seeds`` (n, 2) in a box ``size`` (metres): each pixel takes its centre's nearest seed.

    ``warp`` (metres) displaces the sample points by a smooth sine field first, which
    bends the straight boundaries into curves (a micrograph-like image).
    """
    nx, ny = (int(round(s / pixel_size)) for s in size)
    x = (np.arange(nx) + 0.5) * pixel_size
    y = size[1] - (np.arange(ny) + 0.5) * pixel_size
    X, Y = np.meshgrid(x, y)
    if warp:
        k = 2 * np.pi / np.sqrt(size[0] * size[1] / len(seeds))
        X, Y = X + warp * np.sin(k * Y + 1.0), Y + warp * np.sin(k * X + 2.0)
    _, owner = cKDTree(np.asarray(seeds, dtype=float)).query(np.c_[X.ravel(), Y.ravel()])
    return (owner.reshape(ny, nx) + 1).astype(np.uint8 if len(seeds) < 255 else np.uint16)


def write_labels(path, labels: np.ndarray) -> None:
    """Write a label image as PNG (8 or 16 bit grey), TIFF or .npy, by the file's suffix."""
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() == ".npy":
        np.save(path, labels)
    elif path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, labels)
    else:
        from PIL import Image

        Image.fromarray(np.asarray(labels, dtype=np.uint8 if labels.max() < 256 else np.uint16)).save(path)
