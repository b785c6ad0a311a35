"""3D figures (io/figures3d.py with io/figures.plot_fields): the slice maps cut through the
nuclei, and the perspective view shows the metal (eta = 0.5 iso-surface) inside the box.

On a synthetic grid (tetrahedra of a 0.3 um cube): a tanh sphere of metal centred below
mid-height, so the default mid-height slice misses it, and a planar GB (beta) beside it.
Catches: a slice that is not through the nuclei (the eta map would show no metal; the
same check on a slice at the box's face or mid-height must fail), a 3D view without the
metal (compared with the same view of a grid without metal), a nuclei plane chosen wrongly.
Pure pyvista, no MPI: serial.
"""

from __future__ import annotations

import numpy as np
import pytest

from nzsp_fem.io.figures import Panel, plot_fields
from nzsp_fem.io.figures3d import dendrite_slice, nuclei_plane_z, plot_dendrite_3d, plot_view_3d

pytestmark = pytest.mark.serial

L = 0.3  # box edge (um, the mesh unit)
NUCLEUS, RADIUS, WIDTH = np.array([0.12, 0.15, 0.07]), 0.05, 0.008
GB_X, GB_HALF = 0.21, 0.015


def cube_grid(metal: bool = True):
    """A tetrahedral grid of the cube, as gather_grid makes them (mesh in um)."""
    import pyvista as pv

    n = 25
    img = pv.ImageData(dimensions=(n, n, n), spacing=(L / (n - 1),) * 3)
    grid = img.triangulate().cast_to_unstructured_grid()
    x = np.asarray(grid.points)
    r = np.linalg.norm(x - NUCLEUS, axis=1)
    eta = 0.5 * (1.0 - np.tanh((r - RADIUS) / WIDTH)) if metal else np.zeros(len(x))
    grid.point_data["eta"] = eta
    grid.point_data["beta"] = 0.5 * (1.0 - np.tanh((np.abs(x[:, 0] - GB_X) - GB_HALF) / 0.004))
    grid.field_data["metres_per_unit"] = np.array([1e-6])
    grid.field_data["topological_dimension"] = np.array([3])
    return grid


def pixels(path) -> np.ndarray:
    """(rows, columns, 3) RGB of a PNG, with a check that it is one."""
    import pyvista as pv

    assert path.exists() and path.stat().st_size > 1000
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    img = pv.read(str(path))
    nx, ny, _ = img.dimensions
    rgb = np.asarray(img.point_data[img.point_data.keys()[0]])[:, :3].astype(float)
    return rgb.reshape(ny, nx, 3)


def viridis_ends(rgb: np.ndarray) -> tuple[float, float]:
    """Fractions of pixels in viridis' top (yellow, eta ~ 1) and bottom (dark purple,
    eta ~ 0) colours. The red eta = 0.5 line, black text and scale bar match neither."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yellow = (r > 180) & (g > 180) & (b < 120)
    purple = (r < 110) & (g < 60) & (b > 50) & (b < 140)
    return float(yellow.mean()), float(purple.mean())


def eta_map(grid, path, z):
    """The eta slice panel as the run's final_state.png draws it, but with fixed colour
    limits (the run's adapt to the slice, so colours alone could not tell eta ~ 1 from
    eta ~ 0.006); its map (the left part, without the colour bar, which shows both colours
    whatever the slice), and the colour limits the run's own panel would get."""
    out = plot_fields(grid, [Panel("eta", "η (-)", "viridis", (0.0, 1.0))], path, title="final", contour="eta", z=z)
    rgb = pixels(out["path"])
    ny, nx, _ = rgb.shape
    assert 700 < nx < 1400 and 850 < ny < 1100  # one map (a square domain) and its bar
    auto = plot_fields(grid, [Panel("eta", "η (-)", "viridis")], path.with_name("auto.png"), z=z)
    return rgb[:, : int(0.55 * nx)], auto["clims"]["eta"]


def grey_fraction(rgb: np.ndarray) -> float:
    """Fraction of the central half of the picture covered by grey areas (the metal's
    shades). Pixels of thin lines (the box's edges) are grey too: an erosion by one pixel
    in each direction removes them."""
    ny, nx, _ = rgb.shape
    c = rgb[ny // 4 : 3 * ny // 4, nx // 4 : 3 * nx // 4]
    spread, level = c.max(axis=2) - c.min(axis=2), c.mean(axis=2)
    m = (spread < 15) & (level > 40) & (level < 235)
    core = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return float(core.sum() / m.size)


def test_nuclei_plane_z():
    assert nuclei_plane_z([[0.1, 0.15, 0.07], [0.2, 0.1, 0.07], [0.05, 0.05, 0.25]]) == 0.07  # most nuclei
    assert nuclei_plane_z([[0, 0, 0.1], [0, 0, 0.25], [0, 0, 0.3]]) == 0.25  # nearest the mean
    assert nuclei_plane_z(np.array([[0.0, 0.1, 0.05]])) == 0.05
    assert nuclei_plane_z([[0.0, 0.1]]) is None  # 2D: the map is the domain itself
    assert nuclei_plane_z(np.zeros((0, 3))) is None
    assert nuclei_plane_z(None) is None


def test_slice_through_the_nucleus(tmp_path):
    grid = cube_grid()
    z = nuclei_plane_z([NUCLEUS])
    rgb, clim = eta_map(grid, tmp_path / "final_state.png", z)
    yellow, purple = viridis_ends(rgb)
    assert yellow > 0.01 and purple > 0.1, (yellow, purple)
    assert clim[1] > 0.95
    # the check sees the slice: at the bottom face and at mid-height (0.08 um above the
    # centre, beyond the 0.05 um radius) there is no metal to see
    for name, z_off in (("face", 0.0), ("mid", None)):
        rgb, clim = eta_map(grid, tmp_path / f"{name}.png", z_off)
        yellow, purple = viridis_ends(rgb)
        assert yellow < 1e-4 and purple > 0.1, (name, yellow, purple)
        assert clim[1] < 0.1, (name, clim)


def test_view_3d_shows_the_metal(tmp_path):
    out = plot_view_3d(cube_grid(), tmp_path / "final_state_3d.png", title="final", width=800)
    assert out["metal"] and out["gb"]
    rgb = pixels(out["path"])
    assert rgb.shape == (640, 800, 3)
    assert np.all(rgb[[0, 0, -1, -1], [0, -1, 0, -1]] > 250), "background is not white"
    none = plot_view_3d(cube_grid(metal=False), tmp_path / "no_metal_3d.png", title="none", width=800)
    assert not none["metal"] and none["gb"]
    with_metal, without = grey_fraction(rgb), grey_fraction(pixels(none["path"]))
    # the sphere covers some 4 % of the centre, nothing else there is a grey area
    assert with_metal > 0.01 and without < 0.001, (with_metal, without)
    assert plot_view_3d(None, tmp_path / "x.png") is None


def gb_finger_grid(finger: bool = True):
    """The cube with a GB slab z = 0.07 +- 0.015 um and, if ``finger``, an ellipsoid of
    metal from the electrode (x = 0) along it, 0.12 um deep, flat across the slab."""
    grid = cube_grid(metal=False)
    x = np.asarray(grid.points)
    grid.point_data["beta"] = 0.5 * (1.0 - np.tanh((np.abs(x[:, 2] - 0.07) - GB_HALF) / 0.004))
    r = np.linalg.norm((x - [0.0, 0.15, 0.07]) * [0.5, 1.0, 2.5], axis=1)
    grid.point_data["eta"] = 0.5 * (1.0 - np.tanh((r - 0.06) / WIDTH)) if finger else np.zeros(len(x))
    return grid


def test_dendrite_figure_slices_across_the_gb(tmp_path):
    """final_dendrite_3d.png: the slice goes through the deepest metal inside the GB and
    across the GB (normal y for a GB plane z = const: a slice along the GB plane would show
    the GB everywhere and the finger's thickness nowhere); its panel shows the metal
    (viridis' yellow) on the right half. Without metal in a GB there is no slice."""
    grid = gb_finger_grid()
    axis, pos = dendrite_slice(grid)
    assert axis == 1 and pos == pytest.approx(0.15, abs=L / 24)
    out = plot_dendrite_3d(grid, tmp_path / "d.png", title="finger")
    assert out["metal"] and out["gb"] and out["slice"][0] == 1
    rgb = pixels(out["path"])
    right = rgb[:, rgb.shape[1] // 2 : int(0.9 * rgb.shape[1])]  # the slice, without its colour bar
    yellow, purple = viridis_ends(right)
    assert yellow > 0.005 and purple > 0.05, (yellow, purple)
    assert dendrite_slice(gb_finger_grid(finger=False)) is None
    assert plot_dendrite_3d(gb_finger_grid(finger=False), tmp_path / "none.png")["slice"] is None
