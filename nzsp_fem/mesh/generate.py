"""gmsh models of the polycrystal (tagged GB strips in 2D and slabs in 3D, smooth), size fields, the
atomic .msh cache and loading into DOLFINx (mesh generated on rank 0, read on all)."""

from __future__ import annotations

import contextlib
import math
import os
import pathlib

import numpy as np
from scipy.spatial import cKDTree

from .image import ImageGeometry, image_geometry, shrunk_image_grains
from .spec import (
    BOTTOM,
    FACE_NAMES,
    GB_TAG,
    LEFT,
    NUCLEUS_REFINE_FACTOR,
    RIGHT,
    SIZE_SLOPE,
    TOP,
    MeshError,
    Polycrystal,
    PolycrystalSpec,
    spec_key,
    validate,
)
from .voronoi import Polyhedron, VoronoiGeometry, order_polygon, shrunk_grains, shrunk_polyhedra, voronoi_geometry

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


def _size_fields(
    gmsh, spec: PolycrystalSpec, dim: int, gb_entities: list[int], gb_dist_min: float, nuclei: np.ndarray, sampling: int
) -> None:
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
    if spec.electrode_band > 0:
        band = f.add("Box")
        box = [float(v) / s for v in spec.size]
        limits = {"XMin": 0.0, "XMax": spec.electrode_band / s, "YMin": 0.0, "YMax": box[1], "ZMin": 0.0}
        limits["ZMax"] = box[2] if dim == 3 else 0.0
        for name, v in limits.items():
            f.setNumber(band, name, v)
        f.setNumber(band, "Thickness", max(h_grain - h_nuc, 0.0) / SIZE_SLOPE)
        f.setNumber(band, "VIn", h_nuc)
        f.setNumber(band, "VOut", h_grain)
        thresholds.append(band)
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


def _tag_grains_and_gbs(gmsh, geo, out_map, dim: int, check_voronoi: bool) -> list[int]:
    """Physical groups after fragmenting the box (input 0) with the shrunk grains (inputs
    1..n): grain i is tagged i + 1, what is left of the box is GB_TAG. Returns the grains'
    entities in grain order."""
    kind = "surface" if dim == 2 else "volume"
    grains = []
    for i in range(geo.n):
        pieces = [t for d, t in out_map[1 + i] if d == dim]
        if len(pieces) != 1:
            raise MeshError(f"internal error: grain {i + 1} became {len(pieces)} {kind}s in the OCC fragment")
        grains.append(pieces[0])
    gbs = sorted({t for d, t in out_map[0] if d == dim} - set(grains))
    if check_voronoi:
        # sanity: the centre of mass of each grain lies in its own Voronoi cell
        centres = [gmsh.model.occ.getCenterOfMass(dim, t)[:dim] for t in grains]
        if not np.array_equal(cKDTree(geo.seeds).query(centres)[1], np.arange(geo.n)):
            raise MeshError(f"internal error: grain {kind}s do not match their Voronoi cells")
    if geo.n > 1 and not gbs:
        raise MeshError(f"internal error: no GB {kind} left after the OCC fragment")
    for i, t in enumerate(grains):
        gmsh.model.addPhysicalGroup(dim, [t], i + 1, name=f"grain_{i + 1}")
    if gbs:
        gmsh.model.addPhysicalGroup(dim, gbs, GB_TAG, name="gb")
    return grains


def _tag_faces_and_refine_gbs(gmsh, spec, dim: int, grains, on_face: dict, w: float, nuclei, extent) -> None:
    """Physical groups of the box faces (``on_face``: face tag -> entities of dimension
    dim - 1), and the GB size fields on both sides of each GB: the band d < w/2 from the
    grains' interior boundaries and w/2 beyond. ``extent(entity)`` measures a boundary
    entity, for the sampling of the longest one."""
    for face, entities in on_face.items():
        gmsh.model.addPhysicalGroup(dim - 1, entities, face, name=FACE_NAMES[face])
    boundary = {t for ts in on_face.values() for t in ts}
    band = sorted(
        {abs(t) for _, t in gmsh.model.getBoundary([(dim, g) for g in grains], combined=False, oriented=False)}
        - boundary
    )
    longest = max((extent(t) for t in band), default=1.0)
    _size_fields(gmsh, spec, dim, band, 0.5 * w, nuclei, _sampling(longest, spec.h_gb / spec.length_scale))


def _build_tagged_2d(gmsh, spec: PolycrystalSpec, geo: VoronoiGeometry, nuclei: np.ndarray) -> None:
    """OCC: box fragmented with the shrunk grains; the rest of the box is the GB network."""
    occ = gmsh.model.occ
    w = spec.gb_width / spec.length_scale
    # Each grain interior as loops, the outer one first (image grains may have holes).
    if isinstance(geo, ImageGeometry):
        shrunk = shrunk_image_grains(geo, 0.5 * w, spec.length_scale)
    else:
        shrunk = [[poly] for poly in shrunk_grains(geo, 0.5 * w, spec.length_scale)]
    Lx, Ly = geo.box

    def loop(poly):
        # OCC cuts a hole only with a loop oriented like the outer one: all counterclockwise
        if np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1]) < 0:
            poly = poly[::-1]
        pts = [occ.addPoint(float(p[0]), float(p[1]), 0.0) for p in poly]
        return occ.addCurveLoop([occ.addLine(pts[k], pts[(k + 1) % len(pts)]) for k in range(len(pts))])

    rect = occ.addRectangle(0.0, 0.0, 0.0, Lx, Ly)
    surfs = [occ.addPlaneSurface([loop(poly) for poly in loops]) for loops in shrunk]
    _, out_map = occ.fragment([(2, rect)], [(2, t) for t in surfs])
    occ.synchronize()
    grain_surfs = _tag_grains_and_gbs(gmsh, geo, out_map, 2, check_voronoi=not isinstance(geo, ImageGeometry))
    _tag_faces_and_refine_gbs(
        gmsh, spec, 2, grain_surfs, _boundary_curves_by_face(gmsh, geo.box), w, nuclei, lambda c: occ.getMass(1, c)
    )


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


def _occ_polyhedron(occ, poly: Polyhedron) -> int:
    """An OCC volume bounded by the planar faces of a convex polyhedron (shared edges)."""
    pts = [occ.addPoint(*map(float, x)) for x in poly.vertices]
    lines: dict[tuple[int, int], int] = {}

    def line(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in lines:
            lines[key] = occ.addLine(pts[key[0]], pts[key[1]])
        return lines[key]

    faces = []
    for f in poly.faces:
        loop = occ.addCurveLoop([line(int(f[k]), int(f[(k + 1) % len(f)])) for k in range(len(f))])
        faces.append(occ.addPlaneSurface([loop]))
    return occ.addVolume([occ.addSurfaceLoop(faces)])


def _build_tagged_3d(gmsh, spec: PolycrystalSpec, geo: VoronoiGeometry, nuclei: np.ndarray) -> None:
    """OCC: the box fragmented with the shrunk grains (convex polyhedra built from their
    vertices and faces); what is left of the box is the network of GB slabs."""
    occ = gmsh.model.occ
    w = spec.gb_width / spec.length_scale
    grains = [_occ_polyhedron(occ, poly) for poly in shrunk_polyhedra(geo, 0.5 * w, spec.length_scale)]
    box = occ.addBox(0.0, 0.0, 0.0, *map(float, geo.box))
    _, out_map = occ.fragment([(3, box)], [(3, v) for v in grains])
    occ.synchronize()
    grain_vols = _tag_grains_and_gbs(gmsh, geo, out_map, 3, check_voronoi=True)
    _tag_faces_and_refine_gbs(
        gmsh,
        spec,
        3,
        grain_vols,
        _boundary_surfaces_by_face(gmsh, geo.box, w),
        w,
        nuclei,
        lambda t: float(np.ptp(np.reshape(occ.getBoundingBox(2, t), (2, 3)), axis=0).max()),
    )


def _boundary_surfaces_by_face(gmsh, box: np.ndarray, w: float) -> dict[int, list[int]]:
    """Surfaces lying on the box faces x=0, x=Lx, y=0, ... (inside a thin slab around each)."""
    eps = 1e-3 * w  # an interior surface reaches further from a face than this
    out = {}
    for axis in range(3):
        for side in range(2):
            lo = [-eps] * 3
            hi = [float(b) + eps for b in box]
            lo[axis] = side * float(box[axis]) - eps
            hi[axis] = side * float(box[axis]) + eps
            found = gmsh.model.getEntitiesInBoundingBox(*lo, *hi, dim=2)
            out[2 * axis + side + 1] = sorted(t for _, t in found)
    return out


def _build_smooth(gmsh, spec: PolycrystalSpec, geo: VoronoiGeometry, nuclei: np.ndarray) -> None:
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
            ids = order_polygon(geo.vertices[ids], ids)
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
        longest = max(
            (float(np.linalg.norm(geo.vertices[ids[1]] - geo.vertices[ids[0]])) for _, _, ids in geo.gb_ridges),
            default=1.0,
        )
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
    _size_fields(gmsh, spec, dim, sorted(gb_entities), w, nuclei, _sampling(longest, spec.h_gb / spec.length_scale))


def _generate(
    spec: PolycrystalSpec, geo: VoronoiGeometry, nuclei: np.ndarray, path: pathlib.Path, verbose: bool
) -> None:
    """Build, mesh and atomically write ``path`` (rank 0 only)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.msh")
    with _gmsh_model(f"polycrystal-{path.stem}", verbose) as (gmsh, set_option):
        _mesh_options(set_option, spec.h_grain / spec.length_scale)
        if spec.representation == "tagged" and geo.dim == 3:
            _build_tagged_3d(gmsh, spec, geo, nuclei)
        elif spec.representation == "tagged":
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
    geo = voronoi_geometry(spec) if spec.image is None else image_geometry(spec)
    s = spec.length_scale
    nuclei = geo.centres.copy() if spec.nuclei is None else np.asarray(spec.nuclei, dtype=float) / s
    if spec.junction_nuclei:
        nuclei = np.vstack([nuclei.reshape(-1, geo.dim), electrode_junctions(geo)])
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


def electrode_junctions(geo) -> np.ndarray:
    """Points (scaled) where GBs meet the electrode face x = 0: the GB ridges' end points
    there (2D), or the corners of GB faces there, i.e. where GB lines cross it (3D)."""
    tol = 1e-9 * float(geo.box.max())
    ids = sorted({int(i) for _, _, ridge in geo.gb_ridges for i in ridge if abs(geo.vertices[i][0]) < tol})
    return geo.vertices[ids].reshape(-1, geo.dim).copy()
