"""Microstructures from a labelled image (nzsp_fem/mesh/image.py): the grains against the
pixels and against the Voronoi tessellation an image rasterises, the tagged mesh (the
GB-area and tag checks of test_mesh.py), the cache key, bad images (one-line CLI errors)
and the shipped example on 2 ranks. In-process tests run serially and under
``mpirun -n 2``; the CLI tests are serial."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import REPO, assert_one_line_error, child_environment, rprint
from test_mesh import SPEC2D, cell_measure, integrate, junction_deficit

from mpi4py import MPI

import ufl
from dolfinx import fem

from nzsp_fem.config import load_config
from nzsp_fem.mesh import (
    BOTTOM,
    GB_TAG,
    LEFT,
    RIGHT,
    TOP,
    MeshError,
    build_polycrystal,
    gb_indicator,
    spec_from_config,
    spec_key,
)
from nzsp_fem.mesh.image import image_geometry, voronoi_labels, write_labels
from nzsp_fem.mesh.labels import read_labels
from nzsp_fem.mesh.voronoi import voronoi_geometry

COMM = MPI.COMM_WORLD
EXAMPLE = REPO / "configs" / "examples" / "from_image.yaml"
PIXEL = 10e-9


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One directory for all ranks: rank 0's tmp dir, broadcast."""
    path = tmp_path_factory.mktemp("image") if COMM.rank == 0 else None
    return COMM.bcast(path, root=0)


def write_on_rank0(path: Path, labels: np.ndarray) -> Path:
    if COMM.rank == 0:
        write_labels(path, labels)
    COMM.barrier()
    return path


@pytest.fixture(scope="module")
def voronoi_pair(shared):
    """test_mesh's 5-grain Voronoi polycrystal, meshed directly and from its 200 x 100
    pixel rasterisation (10 nm pixels), with the same GB width and mesh sizes."""
    seeds = voronoi_geometry(SPEC2D).seeds * SPEC2D.length_scale
    png = write_on_rank0(shared / "voronoi.png", voronoi_labels(SPEC2D.size, PIXEL, seeds))
    spec = dataclasses.replace(SPEC2D, image=str(png), pixel_size=PIXEL)
    direct = build_polycrystal(SPEC2D, COMM, cache_dir=shared / "meshes")
    image = build_polycrystal(spec, COMM, cache_dir=shared / "meshes")
    return direct, image, spec


@pytest.fixture(scope="module")
def example(shared):
    """The shipped example's polycrystal (configs/examples/grains.png)."""
    spec = spec_from_config(load_config(EXAMPLE))
    return build_polycrystal(spec, COMM, cache_dir=shared / "meshes"), spec


def tag_areas(poly) -> dict[int, float]:
    dx = cell_measure(poly)
    one = fem.Constant(poly.mesh, 1.0)
    return {tag: integrate(one * dx(tag)) for tag in [*poly.grain_ids, GB_TAG]}


# Geometry against the pixels and against Voronoi -----------------------------------------


def test_rasterised_voronoi_reproduces_the_voronoi_mesh(voronoi_pair):
    direct, image, _ = voronoi_pair
    assert image.grain_ids == direct.grain_ids == [1, 2, 3, 4, 5]
    assert image.grain_neighbours == direct.grain_neighbours
    # GB length: of the simplified polylines, and as GB-tagged area / gb_width
    assert image.gb_length == pytest.approx(direct.gb_length, rel=0.05)
    a_direct, a_image = tag_areas(direct), tag_areas(image)
    w = direct.gb_width
    assert a_image[GB_TAG] / w == pytest.approx(a_direct[GB_TAG] / w, rel=0.05)
    for g in direct.grain_ids:  # label g is the pixels nearest seed g
        assert a_image[g] == pytest.approx(a_direct[g], rel=0.03), g
    rprint(
        f"\nGB length: image {image.gb_length:.5f} vs Voronoi {direct.gb_length:.5f} um "
        f"({image.gb_length / direct.gb_length - 1:+.3%}); GB area / w {a_image[GB_TAG] / w:.5f} vs "
        f"{a_direct[GB_TAG] / w:.5f} ({a_image[GB_TAG] / a_direct[GB_TAG] - 1:+.3%}); grain areas: worst "
        f"{max(abs(a_image[g] / a_direct[g] - 1) for g in direct.grain_ids):.3%}"
    )


@pytest.mark.parametrize("which", ["example", "voronoi"])
def test_grain_count_and_areas_match_the_pixels(which, voronoi_pair, example):
    spec = example[1] if which == "example" else voronoi_pair[2]
    labels = read_labels(spec.image)
    geo = image_geometry(spec)
    values, counts = np.unique(labels, return_counts=True)
    assert geo.n == len(values)
    np.testing.assert_array_equal(geo.label_values, values)
    pixel = spec.pixel_size / spec.length_scale
    np.testing.assert_allclose(geo.pixel_area, counts * pixel**2, rtol=1e-9)
    error = geo.grain_area / geo.pixel_area - 1
    assert np.abs(error).max() < 0.03, error
    assert geo.grain_area.sum() == pytest.approx(np.prod(geo.box), rel=1e-9)
    rprint(f"\n{which}: {geo.n} grains, polygon vs pixel area worst {np.abs(error).max():.3%}")


def test_four_grain_junction_and_an_enclosed_grain(shared):
    """Quadrants meeting at one pixel corner, and a grain inside one quadrant: a node of
    degree 4 and a closed chain become an exact cross and a hole. A stray pixel of
    label 4 inside quadrant 1 (a second, tiny part of label 4) joins quadrant 1."""
    labels = np.repeat(np.repeat(np.array([[1, 2], [3, 4]]), 40, axis=0), 60, axis=1)
    labels[10:20, 10:20] = 5
    labels[37, 57] = 4
    npy = write_on_rank0(shared / "quadrants.npy", labels)
    spec = dataclasses.replace(SPEC2D, size=(1.2e-6, 0.8e-6), image=str(npy), pixel_size=PIXEL)
    geo = image_geometry(spec)
    assert geo.n == 5
    np.testing.assert_allclose(geo.grain_area[1:4], 0.24, rtol=1e-9)  # straight GBs are exact
    assert geo.grain_area[4] == pytest.approx(0.01, rel=0.03)
    assert [len(loops) for loops in geo.loops] == [2, 1, 1, 1, 1]  # grain 1 has a hole
    assert sorted(geo.neighbours[0]) == [1, 2, 4]  # diagonal quadrant 4 touches at a point only
    assert geo.gb_measure == pytest.approx(1.2 + 0.8 + 0.4, rel=0.03)


def test_grain_thinner_than_the_gb_is_reported_on_every_rank(shared):
    labels = np.ones((50, 100), dtype=np.uint8)
    labels[:, 50:] = 2
    labels[20:22, 20:22] = 3  # 20 nm across, GBs 40 nm wide
    npy = write_on_rank0(shared / "speck.npy", labels)
    spec = dataclasses.replace(SPEC2D, size=(1e-6, 0.5e-6), image=str(npy), pixel_size=PIXEL)
    with pytest.raises(MeshError, match=r"grain 3 \(label 3, 20 nm across\) vanishes .*microstructure\.gb_width"):
        build_polycrystal(spec, COMM, cache_dir=shared / "meshes")


def test_cache_key_follows_the_labels(shared):
    labels = voronoi_labels(SPEC2D.size, 20e-9, voronoi_geometry(SPEC2D).seeds * SPEC2D.length_scale)
    png = write_on_rank0(shared / "key.png", labels)
    npy = write_on_rank0(shared / "key.npy", labels.astype(np.int64))
    changed = labels.copy()
    changed[0, 0] = changed[0, 1] if changed[0, 0] != changed[0, 1] else changed[-1, -1]
    other = write_on_rank0(shared / "key2.png", changed)
    spec = dataclasses.replace(SPEC2D, image=str(png), pixel_size=20e-9)
    assert spec_key(spec) == spec_key(dataclasses.replace(spec, image=str(npy)))  # labels, not format
    assert spec_key(spec) != spec_key(dataclasses.replace(spec, image=str(other)))
    assert spec_key(spec) != spec_key(SPEC2D)


def test_image_path_is_relative_to_the_config_that_names_it(tmp_workdir):
    (tmp_workdir / "base").mkdir(exist_ok=True)
    (tmp_workdir / "runs").mkdir(exist_ok=True)
    if COMM.rank == 0:
        (tmp_workdir / "base" / "base.yaml").write_text("microstructure: {image: grains.png, pixel_size: 20 nm}\n")
        (tmp_workdir / "runs" / "run.yaml").write_text("extends: ../base/base.yaml\n")
        (tmp_workdir / "runs" / "own.yaml").write_text("microstructure: {image: sub/g.npy, pixel_size: 20 nm}\n")
    COMM.barrier()
    assert load_config(tmp_workdir / "runs" / "run.yaml").microstructure.image == str(
        tmp_workdir / "base" / "grains.png"
    )
    own = load_config(tmp_workdir / "runs" / "own.yaml").microstructure.image
    assert own == str(tmp_workdir / "runs" / "sub" / "g.npy")


# The tagged mesh: test_mesh.py's checks ----------------------------------------------------


def test_example_mesh_gb_area(example):
    poly, _ = example
    a = tag_areas(poly)
    one = fem.Constant(poly.mesh, 1.0)
    Lx, Ly = poly.box
    assert integrate(one * ufl.dx(domain=poly.mesh)) == pytest.approx(Lx * Ly, rel=1e-10)
    assert sum(a.values()) == pytest.approx(Lx * Ly, rel=1e-10)
    w = poly.gb_width
    segments = np.asarray(poly.gb_segments)
    length = float(np.sum(np.linalg.norm(segments[:, 1] - segments[:, 0], axis=1)))
    assert poly.gb_length == pytest.approx(length, rel=1e-12)
    nominal = length * w
    # Mitred offsets of the polylines: test_mesh's junction deficit (bends between two
    # grains cancel), exact to round-off as long as no polyline edge is shorter than its
    # mitres (none in this image; such an edge vanishes and takes a little more area).
    expected = nominal - junction_deficit(segments, w)
    assert a[GB_TAG] == pytest.approx(expected, rel=1e-9)
    assert a[GB_TAG] == pytest.approx(nominal, rel=0.05)
    assert integrate(gb_indicator(poly) * ufl.dx(domain=poly.mesh)) == pytest.approx(a[GB_TAG], rel=1e-12)
    rprint(
        f"\nexample GB area {a[GB_TAG]:.6g} vs gb_length*gb_width {nominal:.6g} ({a[GB_TAG] / nominal - 1:+.3%}), "
        f"vs less the junction deficit {expected:.6g} ({a[GB_TAG] / expected - 1:+.3%})"
    )


def test_example_mesh_tags_and_facets(example):
    poly, _ = example
    local = set(np.unique(poly.cell_tags.values).tolist())
    assert set().union(*COMM.allgather(local)) == set(poly.grain_ids) | {GB_TAG}
    assert poly.grain_ids == list(range(1, 8))
    a = tag_areas(poly)
    for g in poly.grain_ids:
        assert a[g] > 0.005, g  # the enclosed grain is the smallest, about 0.009 um^2
    tdim = poly.mesh.topology.dim
    owned = poly.mesh.topology.index_map(tdim).size_local
    n_tagged = COMM.allreduce(int(np.sum(poly.cell_tags.indices < owned)))
    assert n_tagged == poly.mesh.topology.index_map(tdim).size_global
    ds = ufl.Measure("ds", domain=poly.mesh, subdomain_data=poly.facet_tags)
    one = fem.Constant(poly.mesh, 1.0)
    Lx, Ly = poly.box
    for tag, length in ((LEFT, Ly), (RIGHT, Ly), (BOTTOM, Lx), (TOP, Lx)):
        assert integrate(one * ds(tag)) == pytest.approx(length, rel=1e-10)


# Bad images: one-line CLI errors -------------------------------------------------------------


def _bad_inputs(directory: Path) -> None:
    np.save(directory / "one.npy", np.full((20, 30), 3, dtype=np.int32))
    halves = np.ones((20, 30))
    halves[:, 15:] = 2.5
    np.save(directory / "float.npy", halves)
    halves[:, 15:] = 2.0
    np.save(directory / "ok.npy", halves.astype(np.int64))
    split = np.ones((20, 30), dtype=np.int64)
    split[:, 10:20] = 2
    np.save(directory / "split.npy", split)
    from PIL import Image

    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, 15:, 0] = 255
    Image.fromarray(rgb).save(directory / "colour.png")


BASE = "domain: {size: [0.6 um, 0.4 um]}\n"
BAD = {
    "single-label": (
        BASE + "microstructure: {image: one.npy, pixel_size: 20 nm}",
        ("microstructure.image", "every pixel has the label 3"),
    ),
    "non-integer": (BASE + "microstructure: {image: float.npy, pixel_size: 20 nm}", ("non-integer", "2.5")),
    "pixel-size-in-seconds": (
        BASE + "microstructure: {image: ok.npy, pixel_size: 20 s}",
        ("microstructure.pixel_size", "length", "20 s"),
    ),
    "missing-file": (BASE + "microstructure: {image: none.png, pixel_size: 20 nm}", ("no such file", "none.png")),
    "no-pixel-size": (BASE + "microstructure: {image: ok.npy}", ("microstructure.pixel_size", "required")),
    "split-grain": (BASE + "microstructure: {image: split.npy, pixel_size: 20 nm}", ("label 1", "2 separate")),
    "colour": (BASE + "microstructure: {image: colour.png, pixel_size: 20 nm}", ("colour", "one channel")),
    "size-mismatch": (
        "domain: {size: [1 um, 0.4 um]}\nmicrostructure: {image: ok.npy, pixel_size: 20 nm}",
        ("domain.size", "does not match", "30 x 20 pixels", "[600 nm, 400 nm]"),
    ),
    "3d": (
        "domain: {dim: 3, size: [0.6 um, 0.4 um, 0.4 um]}\nmicrostructure: {image: ok.npy, pixel_size: 20 nm}",
        ("microstructure.image", "2D only"),
    ),
}


@pytest.mark.serial
@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_one_line_error(case, tmp_path):
    _bad_inputs(tmp_path)
    text, expected = BAD[case]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.yaml").write_text(text.replace("image: ", "image: ../") + "\n")
    # run from elsewhere: the image is found relative to the config file
    r = subprocess.run(
        [sys.executable, "-m", "nzsp_fem", str(tmp_path / "sub" / "run.yaml"), "-o", str(tmp_path / "out")],
        cwd=REPO,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(r, *expected)
    assert not (tmp_path / "out").exists()


# The example, end to end on 2 ranks -------------------------------------------------------


@pytest.mark.serial
@pytest.mark.skipif(COMM.size > 1, reason="starts mpirun itself: serial only")
def test_example_runs_on_two_ranks(tmp_path):
    out = tmp_path / "from_image"
    r = subprocess.run(
        ["mpirun", "-n", "2", sys.executable, "-m", "nzsp_fem", str(EXAMPLE), "-o", str(out), "-q"]
        + ["--set", "time.t_end=2e-6", "--set", f"mesh.cache_dir={tmp_path / 'meshes'}"],
        cwd=tmp_path,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["mpi_size"] == 2
    assert summary["t_final"] == pytest.approx(2e-6)
    assert (out / "figures" / "final_state.png").exists()
