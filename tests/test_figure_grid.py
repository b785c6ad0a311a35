"""The field figure's grid (io/figures.plot_fields, io/drawing.grid_shape): the panels of
a final-state figure are laid out so that the figure is near 4:3 whatever the domain's
aspect ratio, each map with its own colour bar beside it in the same style.

Drawing only (pyvista grids built here, no DOLFINx mesh), on rank 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mpi4py import MPI

from nzsp_fem.io.drawing import _layout_sizes, bar_gap, grid_shape, panel_size
from nzsp_fem.io.figures import Panel, plot_fields

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.rank != 0, reason="drawing happens on one rank")

DOMAINS = {"wide": (4.0, 1.0), "demo": (2.0, 1.0), "square": (1.0, 1.0), "tall": (1.0, 3.0)}  # µm
SIX = [
    Panel("eta", "η (-)", "viridis", (0.0, 1.0)),
    Panel("c", "c (mol/m³)", "cividis"),
    Panel("phi_i", "φ_i (V)", "coolwarm"),
    Panel("phi_e", "φ_e (V)", "coolwarm"),
    Panel("i", "|i| (A/m²)", "inferno", log=True),
    Panel("i_e", "|i_e| (A/m²)", "inferno", log=True),
]


def domain_grid(lx: float, ly: float):
    """A triangulated lx x ly µm rectangle with the fields of SIX (mesh unit 1 µm)."""
    import pyvista as pv

    grid = pv.Plane(center=(lx / 2, ly / 2, 0), i_size=lx, j_size=ly, i_resolution=24, j_resolution=24)
    grid = grid.triangulate().cast_to_unstructured_grid()
    x, y = np.asarray(grid.points)[:, 0] / lx, np.asarray(grid.points)[:, 1] / ly
    grid.point_data["eta"] = 0.5 * (1 - np.tanh((np.hypot(x, y - 0.5) - 0.3) / 0.05))
    grid.point_data["c"] = 1e4 * (1 - 0.1 * x)
    grid.point_data["phi_i"] = -0.45 * (1 - x)
    grid.point_data["phi_e"] = -0.45 + 0.1 * y
    grid.point_data["i"] = 1e3 * np.exp(4 * x)
    grid.point_data["i_e"] = 1e2 * np.exp(4 * y)
    grid.field_data["metres_per_unit"] = np.array([1e-6])
    grid.field_data["topological_dimension"] = np.array([2])
    return grid


def panel_pixels(name: str) -> tuple[int, int]:
    return panel_size(domain_grid(*DOMAINS[name]), 1000)


@pytest.mark.parametrize(
    "name, n, expected",
    [
        ("wide", 3, (3, 1)),  # stacked
        ("square", 3, (2, 2)),
        ("tall", 3, (1, 3)),  # side by side
        ("demo", 6, (3, 2)),
        ("square", 6, (3, 2)),
        ("tall", 6, (2, 3)),
    ],
)
def test_grid_shape_follows_the_domain(name, n, expected):
    """Catches a fixed layout (the single column: (n, 1) everywhere) and a choice that
    ignores the domain's aspect ratio (the same shape for wide and tall)."""
    assert grid_shape(n, *panel_pixels(name), header_lines=1) == expected


def test_grid_shape_prefers_full_grids():
    """Four tall panels: 2 x 2, not 2 x 3 with two empty slots (nearer 4:3 by itself);
    one panel: 1 x 1."""
    assert grid_shape(4, 300, 850, header_lines=1) == (2, 2)
    assert grid_shape(1, 300, 900) == (1, 1)


@pytest.mark.parametrize("name", ["demo", "square", "tall"])
def test_figure_is_near_four_thirds_with_a_bar_beside_every_panel(name, tmp_path):
    """The PNG of six fields: within 1.5x of 4:3 for the demo's 2:1 domain, a square and
    a tall one (a single column of six was 0.2-0.4), its size that of the chosen grid, and every panel's colour
    bar drawn in the column beside it (coloured pixels there), the empty slots blank.
    Catches the old tall column, colour bars only beside the first column, and bars
    drawn over a neighbouring panel."""
    out = plot_fields(domain_grid(*DOMAINS[name]), SIX, tmp_path / "fields.png", title=name, contour="eta")
    rows, cols = out["shape"]
    assert rows * cols >= 6 and (rows - 1) * cols < 6
    img = np.asarray(Image.open(out["path"]).convert("RGB")).astype(int)
    height, width = img.shape[:2]
    assert abs(np.log(width / height / (4 / 3))) < np.log(1.5), (width, height, out["shape"])

    panel_w, panel_h = panel_pixels(name)
    _, cbar_w, _, header_h = _layout_sizes(rows, cols, panel_w, panel_h, 1, True)
    group = panel_w + cbar_w + bar_gap(cbar_w)  # map, its colour bar, a blank gap
    assert (width, height) == (cols * group - bar_gap(cbar_w), header_h + rows * panel_h)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        top = header_h + r * panel_h
        bar = img[top : top + panel_h, c * group + panel_w :][:, :cbar_w]
        coloured = np.ptp(bar, axis=2) > 40  # saturated pixels: the colour map, not text
        if k < 6:
            assert coloured.sum() > 0.01 * bar.shape[0] * bar.shape[1], f"no colour bar beside panel {k}"
        else:
            assert not coloured.any(), f"empty slot {k} is not blank"
