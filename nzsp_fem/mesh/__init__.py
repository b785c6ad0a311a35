"""Mesh layer: the polycrystal spec, its Voronoi geometry and GB indicator, and the gmsh
mesh (cached .msh) loaded into DOLFINx. Imports only nzsp_fem.config."""

from .generate import build_polycrystal
from .spec import (
    BACK,
    BOTTOM,
    FACE_NAMES,
    FRONT,
    GB_TAG,
    LEFT,
    RIGHT,
    TOP,
    MeshError,
    Polycrystal,
    PolycrystalSpec,
    spec_from_config,
    spec_key,
    validate,
)
from .voronoi import gb_distance, gb_indicator

__all__ = [
    "BACK",
    "BOTTOM",
    "FACE_NAMES",
    "FRONT",
    "GB_TAG",
    "LEFT",
    "RIGHT",
    "TOP",
    "MeshError",
    "Polycrystal",
    "PolycrystalSpec",
    "build_polycrystal",
    "gb_distance",
    "gb_indicator",
    "spec_from_config",
    "spec_key",
    "validate",
]
