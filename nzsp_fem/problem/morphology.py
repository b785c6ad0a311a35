"""Morphology of the deposit in the current state: how far the electrode-connected metal
has gone (anywhere, and inside GBs), where the planar front is, how many branches it has,
which share of the new metal went into GBs, the ionic potential along the open GBs, the
current at the metal/GB interface and how isolated metal changed. SI units.

Two parts. The pure numpy part (:class:`Geometry`, :func:`measure_morphology`) works on
gathered arrays: vertex coordinates, cells as vertex indices, per-vertex eta, eta0 and
phi, per-cell current magnitude; it knows nothing of DOLFINx and is what the tests check
against hand-made fields. :class:`MorphologyEvaluator` gathers those arrays to rank 0
(static ones once, eta / phi / |i| at each call), evaluates there and broadcasts, so the
result is the same on any number of ranks.

Common definitions (eta_h: the P1 interpolant of eta; "metal": eta > 0.5; w: the
interface width, Scaling.interface_width; lengths from the electrode face x0):

- The *connected deposit*: the metal vertices joined, through mesh edges between metal
  vertices, to a metal vertex on the electrode face (x = x0; scipy's connected
  components on rank 0). Its region is the P1 superlevel set {f_h > 0.5}, f = eta with
  the other (isolated) metal's vertices set to 0; fronts and measures of such sets are
  exact for P1 data (edge crossings, simplex fractions), so they resolve the 0.5 contour
  below the cell size: it is the tanh's inflection point, where interpolation is best.
- GB cells: DG0 beta > 0.5 (tagged GBs), or mean vertex beta > 0.5 (smooth P1 beta). GB
  vertices: the vertices of GB cells (DG0), or beta > 0.5 at the vertex (P1).
- "Far from GBs": farther than gb_width / 2 + 2 w from every vertex of a GB cell (so
  about gb_width + 2 w from a strip's centre line); a cell is far if all its vertices are.

The measures (:class:`Morphology`):

- connected_penetration_m: the largest x - x0 of the connected deposit; 0 without one.
- gb_penetration_m: the same over GB cells only (0 if no connected metal is in one).
- planar_advance_m: measure (area / volume) of the connected deposit in far cells over
  the measure of the far part of the electrode face: a flat layer of thickness a gives a;
  metal near GBs is left out, a finger inside a grain adds its measure over that face.
  NaN if no part of the face is far from GBs.
- gb_metal_share: int beta (eta - eta0)^+ / int (eta - eta0)^+ (vertex quadrature, exact
  for P1), eta0 = StartupProblems.initial_eta at the vertices; NaN while the new metal is below
  1e-9 of the domain's measure. gb_area_share: int beta / domain measure.
- branch_count: tips of the connected deposit: its P1 superlevel set rasterised on the
  mesh cells at pixel w / 2 (larger if the grid would exceed 2^21 pixels), skeletonised
  (skimage, 2D and 3D); skeleton pixels with exactly one neighbour (8 / 26) whose x - x0
  exceeds planar_advance_m + 2 w. A flat layer's skeleton ends lie at about a / 2, so it
  gives 0; one finger 1; a Y 2 (a finger must reach about 2 w + its radius beyond the
  front to count).
- gb_phi_i_span_V: max - min of phi (phi_i with two potentials) over GB vertices with
  eta < 0.5, in V.
- max_interface_current_density_A_m2: the largest cell-averaged |i| = |sigma_ionic grad phi_i|
  over GB cells whose mean vertex eta is in (0.05, 0.95).
- isolated_metal_change: (M - M0) / M0, M the measure of the P1 superlevel set of the
  metal not connected to the electrode, M0 the same for eta0 (or the value passed to the
  evaluator); NaN if M0 = 0.

The GB measures (gb_penetration_m, gb_metal_share, gb_phi_i_span_V, the interface current)
are NaN when the mesh has no GB cell, and gb_area_share is 0; the span and the current
are also NaN when no vertex / cell qualifies. NaN means "not defined for this state":
summary.json should write it as null (json.dumps alone writes NaN).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

import ufl
from dolfinx import fem

from ..physics.cell_average import CellAverage
from .coupled import CoupledProblem
from .startup import StartupProblems

METAL = 0.5
#: Cell-mean eta inside which a GB cell is at the metal/GB interface.
INTERFACE_BAND = (0.05, 0.95)
#: Planar front: only metal farther than gb_width / 2 + this many interface widths from
#: every GB cell's vertex counts (a GB finger up to twice the GB's width, its root and its
#: tanh tail stay out).
PLANAR_MARGIN_WIDTHS = 2.0
#: Branch tips count beyond planar_advance_m + this many interface widths.
BRANCH_MARGIN_WIDTHS = 2.0
#: No new metal below this fraction of the domain's measure (round-off of eta - eta0).
NO_NEW_METAL = 1e-9
#: Raster cap: the pixel grows beyond w / 2 rather than exceed this many pixels.
MAX_PIXELS = 2**21


@dataclass
class Morphology:
    """Morphology measures of one state, SI (2D: areas per metre of depth); the module
    docstring defines each. NaN: not defined for this state (e.g. GB measures without GBs)."""

    connected_penetration_m: float
    gb_penetration_m: float
    planar_advance_m: float
    gb_metal_share: float
    gb_area_share: float
    branch_count: int
    gb_phi_i_span_V: float
    max_interface_current_density_A_m2: float
    isolated_metal_change: float

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


# Pure numpy part -------------------------------------------------------------------------


def simplex_volumes(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Measure (area / volume) of each simplex."""
    d = points.shape[1]
    edges = points[cells[:, 1:]] - points[cells[:, :1]]
    return np.abs(np.linalg.det(edges)) / math.factorial(d)


def unique_edges(cells: np.ndarray) -> np.ndarray:
    """The (E, 2) vertex pairs of the simplices' edges, each once."""
    k = cells.shape[1]
    pairs = np.concatenate([cells[:, [a, b]] for a in range(k) for b in range(a + 1, k)])
    return np.unique(np.sort(pairs, axis=1), axis=0)


def superlevel_fraction(values: np.ndarray, level: float = METAL) -> np.ndarray:
    """Fraction of each simplex where the linear interpolant of its vertex ``values``
    (C, d + 1), d = 2 or 3, exceeds ``level``: exact, affine-invariant.

    One vertex above: the corner simplex, the product of the edge fractions. One vertex
    below: one minus the corner simplex below. Two of four (3D): the wedge between the
    level plane and the edge joining the two, split into three tetrahedra whose volumes
    are the determinants of their barycentric coordinates.
    """
    n, k = values.shape
    d = k - 1
    above = values > level
    count = above.sum(axis=1)
    frac = (count == k).astype(float)
    one = count == 1
    if one.any():
        v, a = values[one], above[one]
        top = v[a][:, None]
        frac[one] = np.where(a, 1.0, (top - level) / np.where(a, 1.0, top - v)).prod(axis=1)
    last = (count == d) & (d >= 2)
    if last.any():
        v, a = values[last], above[last]
        bottom = v[~a][:, None]
        frac[last] = 1.0 - np.where(a, (level - bottom) / np.where(a, v - bottom, 1.0), 1.0).prod(axis=1)
    wedge = (count == 2) & (d == 3)
    if wedge.any():
        v = values[wedge]
        order = np.argsort(~above[wedge], axis=1, kind="stable")  # the two above first
        fa, fb, fc, fd = (np.take_along_axis(v, order[:, [i]], axis=1)[:, 0] for i in range(4))

        def cut(f_hi, f_lo):
            return (f_hi - level) / (f_hi - f_lo)

        e = np.eye(4)
        m = wedge.sum()
        A = np.broadcast_to(e[0], (m, 4))
        B = np.broadcast_to(e[1], (m, 4))
        ac, ad, bc, bd = (
            (1 - t)[:, None] * e[i] + t[:, None] * e[j]
            for t, i, j in ((cut(fa, fc), 0, 2), (cut(fa, fd), 0, 3), (cut(fb, fc), 1, 2), (cut(fb, fd), 1, 3))
        )
        tets = [(A, ac, ad, B), (ac, ad, B, bc), (ad, B, bc, bd)]
        frac[wedge] = sum(np.abs(np.linalg.det(np.stack(t, axis=1))) for t in tets)
    return frac


def superlevel_front(points: np.ndarray, cells: np.ndarray, values: np.ndarray, level: float = METAL) -> np.ndarray:
    """Largest x of {f_h > level} in each cell (-inf where empty): the corners of that
    polytope are the vertices above the level and the level's crossings of the edges."""
    f = values[cells]
    x = points[cells, 0]
    above = f > level
    front = np.where(above, x, -np.inf).max(axis=1)
    k = cells.shape[1]
    for a in range(k):
        for b in range(k):
            cross = above[:, a] & ~above[:, b]
            if cross.any():
                t = (f[cross, a] - level) / (f[cross, a] - f[cross, b])
                xc = x[cross, a] + t * (x[cross, b] - x[cross, a])
                front[cross] = np.maximum(front[cross], xc)
    return front


def raster_map(points: np.ndarray, cells: np.ndarray, pixel: float, max_chunk: int = 2_000_000):
    """A regular grid of pixel centres over the bounding box and, for each pixel, the cell
    that holds it (-1: none) with its barycentric coordinates.

    Why by hand: scipy's LinearNDInterpolator would triangulate the points anew (Delaunay),
    not interpolate on the mesh's own cells. Each cell lists the pixel centres in its
    bounding box and keeps those with non-negative barycentric coordinates.
    """
    d = points.shape[1]
    origin = points.min(axis=0)
    shape = np.maximum(np.ceil((points.max(axis=0) - origin) / pixel).astype(int), 1)
    X = points[cells]
    lo = np.clip(np.ceil((X.min(axis=1) - origin) / pixel - 0.5), 0, shape - 1).astype(np.int64)
    hi = np.clip(np.floor((X.max(axis=1) - origin) / pixel - 0.5), 0, shape - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    count = span.prod(axis=1)
    inverse = np.linalg.inv((X[:, 1:] - X[:, :1]).transpose(0, 2, 1))
    owner = np.full(int(shape.prod()), -1, dtype=np.int64)
    bary = np.zeros((owner.size, d + 1))
    step = max(1, max_chunk // max(int(count.max(initial=0)), 1))  # cells per chunk
    for start in range(0, len(cells), step):
        ids = np.arange(start, min(start + step, len(cells)))
        c = np.repeat(ids, count[ids])
        if not c.size:
            continue
        k = np.arange(c.size) - np.repeat(np.cumsum(count[ids]) - count[ids], count[ids])
        pix = np.empty((c.size, d), dtype=np.int64)
        for j in range(d):
            pix[:, j] = lo[c, j] + k % span[c, j]
            k = k // span[c, j]
        lam = np.einsum("nij,nj->ni", inverse[c], origin + (pix + 0.5) * pixel - X[c, 0])
        lam = np.concatenate([1.0 - lam.sum(axis=1, keepdims=True), lam], axis=1)
        inside = lam.min(axis=1) >= -1e-9
        flat = np.ravel_multi_index(pix[inside].T, shape)
        flat, first = np.unique(flat, return_index=True)
        new = owner[flat] < 0
        owner[flat[new]] = c[inside][first[new]]
        bary[flat[new]] = lam[inside][first[new]]
    return origin, pixel, tuple(shape), owner, bary


def count_branch_tips(image: np.ndarray, origin_x: float, pixel: float, beyond: float) -> int:
    """Endpoints (skeleton pixels with exactly one neighbour, 8- or 26-connected) of the
    skeleton of a boolean image, counted where the pixel centre's x exceeds ``beyond``."""
    from skimage.morphology import skeletonize

    if not image.any():
        return 0
    nonzero = np.argwhere(image)
    lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    crop = np.pad(image[tuple(slice(a, b) for a, b in zip(lo, hi))], 1)
    skeleton = skeletonize(crop).astype(np.uint8)
    neighbours = ndimage.convolve(skeleton, np.ones((3,) * image.ndim, dtype=np.uint8), mode="constant")
    ends = np.argwhere((skeleton == 1) & (neighbours == 2))  # itself plus one
    x = origin_x + (ends[:, 0] + lo[0] - 1 + 0.5) * pixel
    return int((x > beyond).sum())


class Geometry:
    """Static data of a simplex mesh (triangles, tetrahedra; P1 fields at its vertices)
    for :func:`measure_morphology` (rank 0).

    ``points`` (N, d) in m, ``cells`` (C, d + 1) vertex indices; beta either per cell
    (``beta_cell``, DG0) or per vertex (``beta_vertex``, P1), or neither (no GBs).
    ``gb_width`` and ``width`` (the interface width) in m set the margins; ``pixel`` the
    raster's pixel (default width / 2, enlarged to stay within ``max_pixels``).
    """

    def __init__(
        self,
        points,
        cells,
        *,
        gb_width: float,
        width: float,
        beta_cell=None,
        beta_vertex=None,
        pixel: float | None = None,
        max_pixels: int = MAX_PIXELS,
    ):
        self.points = p = np.asarray(points, dtype=float)
        self.cells = c = np.asarray(cells, dtype=np.int64)
        self.dim = d = p.shape[1]
        n, self.width = len(p), width
        self.volumes = vol = simplex_volumes(p, c)
        self.domain_measure = float(vol.sum())
        self.edges = unique_edges(c)
        # Lumped (vertex-quadrature) weights: exact integrals of P1 functions.
        share = np.repeat(vol / (d + 1), d + 1)
        self.vertex_weight = np.bincount(c.ravel(), share, minlength=n)
        if beta_cell is not None:
            beta_cell = np.asarray(beta_cell, dtype=float)
            self.gb_cell = beta_cell > 0.5
            self.gb_weight = np.bincount(c.ravel(), np.repeat(beta_cell, d + 1) * share, minlength=n)
            self.gb_vertex = np.zeros(n, dtype=bool)
            self.gb_vertex[c[self.gb_cell].ravel()] = True
        elif beta_vertex is not None:
            beta_vertex = np.asarray(beta_vertex, dtype=float)
            self.gb_cell = beta_vertex[c].mean(axis=1) > 0.5
            self.gb_weight = beta_vertex * self.vertex_weight
            self.gb_vertex = beta_vertex > 0.5
        else:
            self.gb_cell = np.zeros(len(c), dtype=bool)
            self.gb_weight = np.zeros(n)
            self.gb_vertex = np.zeros(n, dtype=bool)
        self.has_gb = bool(self.gb_cell.any())

        self.x0 = float(p[:, 0].min())
        tol = 1e-9 * float(np.ptp(p[:, 0]))
        self.on_electrode = p[:, 0] <= self.x0 + tol
        # Distance to the GB cells' vertices decides what is "away from GBs".
        self.planar_margin = gb_width / 2 + PLANAR_MARGIN_WIDTHS * width
        if self.has_gb:
            distance, _ = cKDTree(p[np.unique(c[self.gb_cell])]).query(p)
        else:
            distance = np.full(n, np.inf)
        far = distance > self.planar_margin
        self.far_cell = far[c].all(axis=1)
        # Electrode facets: d of a cell's vertices on the face.
        on_face = self.on_electrode[c]
        with_face = on_face.sum(axis=1) == d
        faces = np.unique(np.sort(c[with_face][on_face[with_face]].reshape(-1, d), axis=1), axis=0)
        self.far_face_measure = float(facet_measures(p, faces)[far[faces].all(axis=1)].sum())

        if pixel is None:
            pixel = width / 2
        pixel = max(pixel, (float(np.prod(np.ptp(p, axis=0))) / max_pixels) ** (1 / d))
        self.origin, self.pixel, self.shape, self.pixel_cell, self.pixel_bary = raster_map(p, c, pixel)


def facet_measures(points: np.ndarray, facets: np.ndarray) -> np.ndarray:
    """Length (2D) or area (3D) of facets given as (F, d) vertex indices."""
    e = points[facets[:, 1:]] - points[facets[:, :1]]
    if facets.shape[1] == 2:
        return np.linalg.norm(e[:, 0], axis=1)
    return 0.5 * np.linalg.norm(np.cross(e[:, 0], e[:, 1]), axis=1)


def split_metal(geo: Geometry, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(connected, isolated) vertex masks of the metal (eta > 0.5)."""
    metal = eta > METAL
    both = metal[geo.edges].all(axis=1)
    e = geo.edges[both]
    n = len(eta)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    roots = np.unique(labels[metal & geo.on_electrode])
    connected = metal & np.isin(labels, roots)
    return connected, metal & ~connected


def deposit_measure(geo: Geometry, f: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
    """Per-cell measure of {f_h > 0.5} (zero where no vertex exceeds it)."""
    out = np.zeros(len(geo.cells))
    touched = (f[geo.cells] > METAL).any(axis=1)
    if cells is not None:
        touched &= cells
    out[touched] = geo.volumes[touched] * superlevel_fraction(f[geo.cells[touched]])
    return out


def isolated_metal(geo: Geometry, eta: np.ndarray) -> float:
    """Measure of the metal not connected to the electrode (P1 superlevel set)."""
    connected, _ = split_metal(geo, eta)
    return float(deposit_measure(geo, np.where(connected, 0.0, eta)).sum())


def measure_morphology(
    geo: Geometry,
    eta: np.ndarray,
    eta0: np.ndarray,
    phi: np.ndarray,
    cell_current: np.ndarray,
    isolated_initial: float,
) -> Morphology:
    """The measures of one state from gathered arrays (SI: phi in V, |i| per cell in A/m^2,
    ``isolated_initial`` in m^d)."""
    nan = float("nan")
    connected, isolated = split_metal(geo, eta)
    deposit = np.where(isolated, 0.0, eta)
    touched = (deposit[geo.cells] > METAL).any(axis=1)
    front = np.full(len(geo.cells), -np.inf)
    front[touched] = superlevel_front(geo.points, geo.cells[touched], deposit)
    reach = float(front.max()) if front.size else -np.inf
    gb_reach = float(front[geo.gb_cell].max()) if geo.has_gb else nan
    area = deposit_measure(geo, deposit, geo.far_cell)
    planar = float(area.sum()) / geo.far_face_measure if geo.far_face_measure > 0 else nan

    new = np.maximum(eta - eta0, 0.0)
    total_new = float(geo.vertex_weight @ new)
    gb_share = nan
    if geo.has_gb and total_new > NO_NEW_METAL * geo.domain_measure:
        gb_share = float(geo.gb_weight @ new) / total_new

    open_gb = geo.gb_vertex & (eta < METAL)
    span = float(np.ptp(phi[open_gb])) if open_gb.any() else nan
    mean_eta = eta[geo.cells].mean(axis=1)
    band = geo.gb_cell & (mean_eta > INTERFACE_BAND[0]) & (mean_eta < INTERFACE_BAND[1])
    current = float(cell_current[band].max()) if band.any() else nan

    image = np.zeros(len(geo.pixel_cell), dtype=bool)
    active = np.flatnonzero(np.append(touched, False)[geo.pixel_cell])  # -1 (no cell): the False
    values = (geo.pixel_bary[active] * deposit[geo.cells[geo.pixel_cell[active]]]).sum(axis=1)
    image[active] = values > METAL
    beyond = geo.x0 + (planar if math.isfinite(planar) else 0.0) + BRANCH_MARGIN_WIDTHS * geo.width
    tips = count_branch_tips(image.reshape(geo.shape), float(geo.origin[0]), geo.pixel, beyond)

    now = float(deposit_measure(geo, np.where(connected, 0.0, eta)).sum())
    change = (now - isolated_initial) / isolated_initial if isolated_initial > 0 else nan
    return Morphology(
        connected_penetration_m=max(reach - geo.x0, 0.0),
        gb_penetration_m=max(gb_reach - geo.x0, 0.0) if geo.has_gb else nan,
        planar_advance_m=planar,
        gb_metal_share=gb_share,
        gb_area_share=float(geo.gb_weight.sum()) / geo.domain_measure,
        branch_count=tips,
        gb_phi_i_span_V=span,
        max_interface_current_density_A_m2=current,
        isolated_metal_change=change,
    )


# Collective evaluator ------------------------------------------------------------------


class MorphologyEvaluator:
    """:class:`Morphology` of a problem's current state (collective; the same on every rank).

    The constructor gathers the static data (P1 vertex coordinates, cells, beta) to rank 0
    once; each call gathers eta, phi and the cells' |i| (owned values, put in place by
    each rank's owned range of global indices; cells keep the constructor's rank order)
    and broadcasts the result. eta0 is ``StartupProblems.initial_eta`` at the vertices (the
    state :meth:`CoupledSolver.initialize` sets), so the isolated metal at the start does
    not depend on when the evaluator is made (after a restart too); pass
    ``initial_isolated_metal`` (m^d) to override it.
    """

    def __init__(
        self,
        problem: CoupledProblem,
        initial_isolated_metal: float | None = None,
        pixel_size: float | None = None,
        max_pixels: int = MAX_PIXELS,
    ):
        self.problem = pb = problem
        self.comm = comm = pb.comm
        sc, dim = pb.scaling, pb.dim
        V = pb.collapsed_space("eta")
        imap = V.dofmap.index_map
        self._n_owned = n_owned = imap.size_local
        self._n_cells = n_cells = pb.mesh.topology.index_map(dim).size_local
        # Local eta dof -> local phi dof, cell by cell (both P1 on the same cells).
        self._phi_dof = np.empty(imap.size_local + imap.num_ghosts, dtype=np.int32)
        self._phi_dof[V.dofmap.list.ravel()] = pb.collapsed_space("phi_i").dofmap.list.ravel()
        self._phi_dof = self._phi_dof[:n_owned]

        coords = V.tabulate_dof_coordinates()[:n_owned, :dim]
        cells = imap.local_to_global(V.dofmap.list[:n_cells].ravel()).reshape(n_cells, -1)
        beta = pb.beta
        per_cell = beta.function_space.ufl_element().embedded_superdegree == 0
        if per_cell:
            beta_local = beta.x.array[beta.function_space.dofmap.list[:n_cells, 0]]
        else:
            b = fem.Function(V)
            b.interpolate(beta)
            beta_local = b.x.array[:n_owned]
        gathered = comm.gather((imap.local_range, coords, cells, beta_local), root=0)
        self._current_average: CellAverage | None = None
        self.geometry: Geometry | None = None
        self.eta0: np.ndarray | None = None
        self._ranges: list[slice] = []
        isolated = 0.0
        if comm.rank == 0:
            self._ranges = [slice(*g[0]) for g in gathered]
            points = self._place([g[1] for g in gathered])
            betas = [g[3] for g in gathered]
            beta_all = np.concatenate(betas) if per_cell else self._place(betas)
            self.geometry = Geometry(
                points * sc.length,
                np.concatenate([g[2] for g in gathered]),
                gb_width=pb.poly.spec.gb_width,
                width=pb.scaling.interface_width,
                beta_cell=beta_all if per_cell else None,
                beta_vertex=None if per_cell else beta_all,
                pixel=pixel_size,
                max_pixels=max_pixels,
            )
            x = np.zeros((3, len(points)))
            x[:dim] = points.T
            self.eta0 = StartupProblems(pb).initial_eta(x)
            isolated = isolated_metal(self.geometry, self.eta0)
        self.initial_isolated_metal = (
            comm.bcast(isolated, root=0) if initial_isolated_metal is None else float(initial_isolated_metal)
        )

    def _place(self, parts: list[np.ndarray]) -> np.ndarray:
        """Per-rank arrays of owned vertex values, in global vertex order (rank 0)."""
        out = np.empty((self._ranges[-1].stop,) + parts[0].shape[1:])
        for where, part in zip(self._ranges, parts):
            out[where] = part
        return out

    def _default_current(self) -> fem.Function:
        """|i| = |sigma_ionic grad phi_i| (A/m^2) per cell, as the diagnostics' cell field."""
        if self._current_average is None:
            pb = self.problem
            i_vec = -pb.sigma_ionic * ufl.grad(pb.fields(pb.w).phi_i) * pb.scaling.current_density
            dg0 = fem.functionspace(pb.mesh, ("DG", 0))
            self._current_average = CellAverage(ufl.sqrt(ufl.dot(i_vec, i_vec)), dg0, pb.dx)
        return self._current_average()

    def __call__(self, current_magnitude_dg0: fem.Function | None = None) -> Morphology:
        """The measures now. ``current_magnitude_dg0``: the cell-averaged |i| in A/m^2 (the
        diagnostics' "current_density_magnitude"); computed here when not given."""
        pb = self.problem
        current = current_magnitude_dg0 if current_magnitude_dg0 is not None else self._default_current()
        n, nc = self._n_owned, self._n_cells
        local = np.concatenate(
            [
                pb.sub_values("eta")[:n],
                pb.sub_values("phi_i")[self._phi_dof] * pb.scaling.potential,
                current.x.array[current.function_space.dofmap.list[:nc, 0]],
            ]
        )
        gathered = self.comm.gather((n, nc, local), root=0)
        result = None
        if self.comm.rank == 0:
            eta = self._place([g[2][: g[0]] for g in gathered])
            phi = self._place([g[2][g[0] : 2 * g[0]] for g in gathered])
            cell_current = np.concatenate([g[2][2 * g[0] :] for g in gathered])
            result = measure_morphology(self.geometry, eta, self.eta0, phi, cell_current, self.initial_isolated_metal)
        return self.comm.bcast(result, root=0)
