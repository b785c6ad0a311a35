"""Polycrystal geometry and meshes: Voronoi grains, grain-boundary (GB) regions, cached .msh.

Units. Inputs (:class:`PolycrystalSpec`) are in metres. gmsh tolerances are absolute
(~1e-8), so geometry is built in *scaled* coordinates ``x / length_scale`` (micrometres
for the default 1e-6) and everything returned is scaled unless its name ends in ``_m``.

Microstructure. Seeds (explicit or random with a minimum spacing) define a Voronoi
tessellation of the box. The seeds are mirrored across every box face before calling
``scipy.spatial.Voronoi``: inside the box the nearest seed is never a mirror image, so the
original cells come out exactly clipped to the box, with the box faces as ridges between a
seed and its own mirror. Or (2D, tagged) the grains come from a labelled image
(``image``, ``pixel_size``): nzsp_fem/mesh/image.py turns it into the same geometry
structure, checked here through nzsp_fem/mesh/labels.py.

GB region. A point ``x`` of grain ``i`` has GB distance

    d(x) = min_j dist(x, bisector plane of seeds i, j),  j over the grain neighbours of i,

(see :func:`gb_distance`). This is the Euclidean distance to the GB network away from
junctions and the "mitred" offset near them. The GB region is ``{d < gb_width / 2}``:

* ``"tagged"`` (2D, 3D): each grain is shrunk by ``gb_width / 2`` from its interior edges
  (2D) or faces (3D): the box clipped by the shifted bisector half-planes (half-spaces) of
  its neighbours, convex because a Voronoi cell is. The shrunk grains are fragmented with
  the box in gmsh OCC; what is left of the box is the GB strip (slab) network, cell tag
  ``GB_TAG``. Strips therefore join without gaps at triple junctions (lines); in 2D their
  area is ``gb_length * gb_width - (gb_width/2)**2 * sum over junction corners of
  cot(angle/2)`` (about ``0.43 gb_width**2`` per 120 degree triple junction), in 3D the
  same deficit per unit length of triple line, less O(gb_width**3) at quadruple points.
* ``"smooth"`` (2D, 3D): the mesh conforms to the Voronoi cells (GB lines/faces are mesh
  entities, built in the gmsh built-in kernel from the shared Voronoi vertices, edges and
  faces) and :func:`gb_indicator` gives ``beta = 0.5 (1 - tanh((d - w/2) / (w/4)))``.

Caching. The mesh is generated on rank 0, written atomically to
``cache_dir/<key>.msh`` (key = sha256 of the canonical spec and ``FORMAT_VERSION``) and
always read back from that file, so a cached and a fresh run give the same mesh. Geometry
arrays are recomputed from the spec on every rank (deterministic and cheap).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..config import Config
from .labels import ImageError, grain_labels, label_digest, read_labels

# Facet tags: x=0, x=Lx, y=0, y=Ly, z=0, z=Lz. Tag = 2*axis + side + 1.
LEFT, RIGHT, BOTTOM, TOP, FRONT, BACK = 1, 2, 3, 4, 5, 6
FACE_NAMES = {LEFT: "left", RIGHT: "right", BOTTOM: "bottom", TOP: "top", FRONT: "front", BACK: "back"}
# Cell tag of the GB strips ("tagged"); grains are tagged 1..n_grains.
GB_TAG = 1000

# Bump when the generated .msh would change for the same spec: it is part of the key.
FORMAT_VERSION = 1
# Bump when nzsp_fem/mesh/image.py would mesh the same image differently (image keys only).
IMAGE_FORMAT_VERSION = 1
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

CONFIG_KEYS = {
    "size": "domain.size",
    "n_grains": "microstructure.grains",
    "seeds": "microstructure.seeds",
    "rng_seed": "microstructure.rng_seed",
    "gb_width": "microstructure.gb_width",
    "representation": "microstructure.gb_representation",
    "h_grain": "mesh.size_grain",
    "h_gb": "mesh.size_gb",
    "h_nucleus": "mesh.size_nucleus",
    "electrode_band": "mesh.electrode_band",
    "nuclei": "nuclei.positions",
    "nucleus_radius": "nuclei.radius",
    "junction_nuclei": "nuclei.at_electrode_junctions",
    "length_scale": "scales.length",
    "image": "microstructure.image",
    "pixel_size": "microstructure.pixel_size",
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
    # "tagged": GB strips (2D) or slabs (3D) are their own cells; "smooth": beta from distance.
    representation: str = "tagged"
    # A labelled grain image (nzsp_fem/mesh/image.py) replaces the Voronoi grains.
    image: str | None = None
    pixel_size: float | None = None
    # Nuclei also where GBs meet the electrode face x = 0 (added to ``nuclei``).
    junction_nuclei: bool = False
    # Width of the band along x = 0 meshed at h_nucleus (0: none).
    electrode_band: float = 0.0

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


def format_length(x: float) -> str:
    """A length in metres with a readable unit: 4e-08 -> '40 nm'."""
    ax = abs(float(x))
    for unit, f in (("m", 1.0), ("mm", 1e-3), ("um", 1e-6), ("nm", 1e-9)):
        if ax >= f:
            return f"{x / f:.6g} {unit}"
    return f"{x:.6g} m"


def format_point(p) -> str:
    return "(" + ", ".join(format_length(v) for v in p) + ")"


def _typical_grain_size(spec: PolycrystalSpec) -> float:
    n = len(spec.seeds) if spec.seeds is not None else spec.n_grains
    return float(np.prod(spec.size) / n) ** (1.0 / spec.dim)


def _check_image(spec: PolycrystalSpec) -> int:
    """The number of grains of a usable image microstructure; else MeshError."""
    k = CONFIG_KEYS
    if len(spec.size) != 2:
        raise MeshError(f"{k['image']} is 2D only, but the domain is {len(spec.size)}D (domain.dim)")
    if spec.representation != "tagged":
        raise MeshError(f"{k['image']} needs {k['representation']} = 'tagged', got {spec.representation!r}")
    if not (spec.pixel_size is not None and spec.pixel_size > 0 and math.isfinite(spec.pixel_size)):
        raise MeshError(f"{k['pixel_size']} must be a positive length with {k['image']}")
    try:
        labels = read_labels(spec.image)
        labels = grain_labels(labels, pathlib.Path(spec.image).name)
    except ImageError as err:
        raise MeshError(f"{k['image']}: {err}") from None
    rows, cols = labels.shape
    extent = (cols * spec.pixel_size, rows * spec.pixel_size)
    # Within half a pixel the pixels are stretched to the domain (a rounded pixel size).
    if any(abs(size - e) > 0.5 * spec.pixel_size for size, e in zip(spec.size, extent)):
        raise MeshError(
            f"{k['size']} = {format_point(spec.size)} does not match {k['image']}: {cols} x {rows} pixels of "
            f"{format_length(spec.pixel_size)} cover {format_point(extent)}; set {k['size']}: "
            f"[{format_length(extent[0])}, {format_length(extent[1])}]"
        )
    return len(np.unique(labels))


def validate(spec: PolycrystalSpec) -> None:
    """Raise :class:`MeshError` if the spec cannot give a sensible mesh."""
    k = CONFIG_KEYS
    if len(spec.size) not in (2, 3):
        raise MeshError(f"{k['size']} must have 2 or 3 entries, got {len(spec.size)}")
    n_image = _check_image(spec) if spec.image is not None else None
    dim = spec.dim
    if spec.representation not in ("tagged", "smooth"):
        raise MeshError(f"{k['representation']} must be 'tagged' or 'smooth', got {spec.representation!r}")
    for i, s in enumerate(spec.size):
        if not s > 0:
            raise MeshError(f"{k['size']}[{i}] must be positive, got {format_length(s)}")
    for name in ("gb_width", "h_grain", "h_gb", "h_nucleus", "nucleus_radius", "length_scale"):
        v = getattr(spec, name)
        if not (v > 0 and math.isfinite(v)):
            raise MeshError(f"{k[name]} must be positive, got {format_length(v)}")
    box = np.asarray(spec.size, dtype=float)

    if n_image is not None:
        pass  # the grains come from the image
    elif spec.seeds is None:
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
                    f"{k['seeds']}: seed {format_point(p)} is not strictly inside the box "
                    f"{k['size']} = {format_point(box)}"
                )
        s = np.asarray(spec.seeds, dtype=float)
        if len(s) > 1:
            dmin, _ = cKDTree(s).query(s, k=2)
            if dmin[:, 1].min() <= 1e-9 * _typical_grain_size(spec):
                raise MeshError(f"{k['seeds']} contains duplicate seeds")

    g = _typical_grain_size(spec) if n_image is None else float(np.prod(spec.size) / n_image) ** 0.5
    grains_key = k["n_grains"] if spec.seeds is None else f"len({k['seeds']})"
    if n_image is not None:
        grains_key = f"{n_image} grains of {k['image']}"
    if spec.gb_width >= g:
        root = "sqrt(area" if dim == 2 else "cbrt(volume"
        raise MeshError(
            f"{k['gb_width']} ({format_length(spec.gb_width)}) is not smaller than the typical grain size "
            f"{root}/{grains_key}) = {format_length(g)}"
        )
    if spec.h_gb > spec.gb_width:
        raise MeshError(
            f"{k['h_gb']} ({format_length(spec.h_gb)}) is larger than {k['gb_width']} ({format_length(spec.gb_width)})"
        )
    if spec.nuclei is not None:
        for p in spec.nuclei:
            if len(p) != dim:
                raise MeshError(f"{k['nuclei']}: point {tuple(p)} has {len(p)} coordinates, {k['size']} has {dim}")
            if not all(0.0 <= p[a] <= box[a] for a in range(dim)):
                raise MeshError(
                    f"{k['nuclei']}: nucleus {format_point(p)} is outside the domain {k['size']} = {format_point(box)}"
                )


# --------------------------------------------------------------------------- cache key


def _canonical(spec: PolycrystalSpec) -> dict:
    """JSON-able form of the spec: floats normalised, ignored inputs dropped."""

    def pts(v):
        return None if v is None else [[float(c) for c in p] for p in v]

    out = {
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
    # Only when set, so that existing meshes keep their keys.
    if spec.junction_nuclei:
        out["junction_nuclei"] = True
    if spec.electrode_band > 0:
        out["electrode_band"] = float(spec.electrode_band)
    if spec.image is not None:  # the labels, not the file name or format, make the mesh
        out.update(n_grains=None, rng_seed=None, seeds=None, image_format=IMAGE_FORMAT_VERSION)
        out.update(image=label_digest(read_labels(spec.image)), pixel_size=float(spec.pixel_size))
    return out


def spec_key(spec: PolycrystalSpec) -> str:
    """16 hex digits of sha256 over the canonical JSON of the spec and FORMAT_VERSION."""
    text = json.dumps(_canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spec_from_config(cfg: Config) -> PolycrystalSpec:
    """The mesh inputs of a run config."""
    ms, mh, nu = cfg.microstructure, cfg.mesh, cfg.nuclei
    nuclei = None if nu.positions == "grain_centres" else tuple(tuple(p) for p in nu.positions)
    seeds = None if ms.seeds is None else tuple(tuple(s) for s in ms.seeds)
    return PolycrystalSpec(
        size=tuple(cfg.domain.size),
        n_grains=ms.grains,
        seeds=seeds,
        rng_seed=ms.rng_seed,
        gb_width=ms.gb_width,
        h_grain=mh.size_grain,
        h_gb=mh.size_gb,
        h_nucleus=mh.size_nucleus,
        nuclei=nuclei,
        nucleus_radius=nu.radius,
        length_scale=cfg.scales.length,
        representation=ms.gb_representation,
        image=ms.image,
        pixel_size=ms.pixel_size,
        junction_nuclei=nu.at_electrode_junctions,
        electrode_band=mh.electrode_band,
    )
