"""Nuclei where GBs meet the electrode (nuclei.at_electrode_junctions) and the refined band
along it (mesh.electrode_band), on a 3-grain geometry whose only GB meeting x = 0 is the
one between seeds 1 and 2, along y = 0.2 um (equidistant from both seeds).

Catches: junctions taken from box corners or from every ridge vertex, a junction not on
the electrode face, junction nuclei dropped when the explicit list is empty, a band that
does not refine (or refines beyond its width), and a mesh key that ignores either option.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mpi4py import MPI

from dolfinx import mesh as dmesh

from nzsp_fem.mesh import PolycrystalSpec, build_polycrystal, spec_key

COMM = MPI.COMM_WORLD
H_NUCLEUS, H_GRAIN, BAND = 10e-9, 60e-9, 100e-9
SPEC = PolycrystalSpec(
    size=(0.6e-6, 0.4e-6),
    n_grains=3,
    seeds=((0.2e-6, 0.1e-6), (0.2e-6, 0.3e-6), (0.5e-6, 0.2e-6)),
    rng_seed=0,
    gb_width=30e-9,
    h_grain=H_GRAIN,
    h_gb=15e-9,
    h_nucleus=H_NUCLEUS,
    nuclei=(),
    nucleus_radius=40e-9,
    junction_nuclei=True,
    electrode_band=BAND,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return Path(COMM.bcast(str(tmp_path_factory.mktemp("electrode-mesh")) if COMM.rank == 0 else None, root=0))


def _largest_cell(poly, x_max: float, y_min: float) -> float:
    """The largest cell diameter (m) among cells whose midpoint has x < x_max, y > y_min
    (m): a corner far from the GB (y = 0.2 um) and from the junction nucleus."""
    msh = poly.mesh
    tdim = msh.topology.dim
    n = msh.topology.index_map(tdim).size_local
    cells = np.arange(n, dtype=np.int32)
    mid = dmesh.compute_midpoints(msh, tdim, cells) * SPEC.length_scale
    chosen = cells[(mid[:, 0] < x_max) & (mid[:, 1] > y_min)]
    local = float(msh.h(tdim, chosen).max()) * SPEC.length_scale if chosen.size else 0.0
    return COMM.allreduce(local, op=MPI.MAX)


def test_junction_nucleus_is_where_the_gb_meets_the_electrode(cache):
    poly = build_polycrystal(SPEC, COMM, cache_dir=cache)
    np.testing.assert_allclose(poly.nuclei * SPEC.length_scale, [[0.0, 0.2e-6]], atol=1e-12)


def test_band_refines_the_electrode_region_only(cache):
    banded = build_polycrystal(SPEC, COMM, cache_dir=cache)
    plain = build_polycrystal(dataclasses.replace(SPEC, electrode_band=0.0), COMM, cache_dir=cache)
    # Inside the band, away from the GB and the nucleus: the nucleus size (with the
    # mesher's slack), where the plain mesh has grain-sized cells.
    assert _largest_cell(banded, 0.8 * BAND, 0.33e-6) <= 2.0 * H_NUCLEUS
    assert _largest_cell(plain, 0.8 * BAND, 0.33e-6) >= 3.0 * H_NUCLEUS
    # Beyond the band's transition the two meshes are alike: grain-sized.
    assert _largest_cell(banded, 0.6e-6, 0.33e-6) >= 3.0 * H_NUCLEUS


def test_both_options_change_the_mesh_key():
    assert spec_key(SPEC) != spec_key(dataclasses.replace(SPEC, electrode_band=0.0))
    assert spec_key(SPEC) != spec_key(dataclasses.replace(SPEC, junction_nuclei=False))
