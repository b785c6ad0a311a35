"""Publication-style PNG figures of DOLFINx results, rendered off-screen with pyvista.

Two steps, so that the MPI part and the drawing part stay apart:

1. :func:`gather_grid` (collective) collects the mesh and chosen fields from every rank
   onto rank 0 as one ``pyvista.UnstructuredGrid`` (owned cells only, shared vertices
   merged, cells in the original input order, so the grid does not depend on the number
   of ranks). Other ranks get ``None``.
2. :func:`plot_fields`, :func:`plot_initial_state`, :func:`plot_comparison` draw such
   grids; they do nothing and return ``None`` when given ``None``, so every rank can call
   them. :func:`plot_probes` draws time series with matplotlib.

Coordinates: the grid keeps the mesh coordinates and records ``length_scale`` (metres per
mesh unit, e.g. 1e-6 for meshes in micrometres) in ``grid.field_data["metres_per_unit"]``;
figures are drawn in micrometres with a scale bar.

Off-screen rendering: Debian's VTK 9.3 has only the X11 (GLX) render window, no EGL or
OSMesa, so without a display :func:`ensure_offscreen` starts a private ``Xvfb`` server
(package ``xvfb``) for the life of the process. VTK builds with EGL/OSMesa need nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..mesh import GB_TAG
from .drawing import (
    Layout,
    Panel,
    colour_bar,
    contour_lines,
    data_range,
    display_mesh,
    draw_map,
    draw_text,
    field_values,
    finish_clim,
    grid_shape,
    nice_length,
    nucleus_circles,
    panel_size,
)
from .figures3d import slice_title
from .gather import gather_cell_field, gather_grid
from .offscreen import ensure_offscreen

__all__ = [
    "Panel",
    "gather_grid",
    "gather_cell_field",
    "plot_fields",
    "plot_initial_state",
    "plot_comparison",
    "plot_probes",
    "ensure_offscreen",
    "nice_length",
]


# --------------------------------------------------------------------------- figures


def plot_fields(
    grid,
    panels: Sequence[Panel],
    path,
    title: str | None = None,
    *,
    z: float | None = None,
    surface: bool = False,
    width: int = 1000,
    contour: str | None = None,
    columns: int | None = None,
    nuclei: Sequence | None = None,
) -> dict | None:
    """One map per field (top-down, parallel projection, scale bar in µm), each with a
    colour bar labelled with ``Panel.label`` beside it, in a grid of ``columns`` columns
    (default: the grid whose figure is nearest 4:3 for the domain's aspect ratio,
    :func:`drawing.grid_shape`), filled row by row.

    3D grids show the slice at height ``z`` (mesh units, default mid-height; the title
    names it; figures3d.nuclei_plane_z cuts through the nuclei) or, with
    ``surface=True``, the outer surface in an isometric view. ``contour`` names a field
    whose 0.5 iso-line is drawn in red on every panel (e.g. ``"eta"``). ``nuclei``:
    inserted nuclei as (centre, radius) in metres (drawing.read_nuclei), outlined in
    magenta on every panel.

    Returns ``{"path": Path, "clims": {field: (lo, hi)}, "shape": (rows, columns)}``, or
    ``None`` if ``grid`` is ``None`` (ranks other than the gathering one).
    """
    if grid is None:
        return None
    panels = [p if isinstance(p, Panel) else Panel(*p) for p in panels]
    if not panels:
        raise ValueError("plot_fields: no panels")
    disp, tdim = display_mesh(grid, z, surface)
    if tdim == 3 and not surface:
        title = slice_title(title, disp)
    panel_w, panel_h = panel_size(disp, width) if not surface else (width, int(0.8 * width))
    header = 1 if title else 0
    if columns is None:
        rows, columns = grid_shape(len(panels), panel_w, panel_h, header)
    else:
        columns = max(1, min(columns, len(panels)))
        rows = -(-len(panels) // columns)
    layout = Layout(rows, columns, panel_w, panel_h, header_lines=header, bar_each=True)
    iso = contour_lines(disp, contour)
    circles = None if surface else nucleus_circles(disp, tdim, nuclei)
    clims = {}
    for k, panel in enumerate(panels):
        r, c = divmod(k, columns)
        vals, _ = field_values(disp, panel.field)
        clim = tuple(panel.clim) if panel.clim else finish_clim(data_range(vals, panel.log), panel.log)
        clims[panel.field] = clim
        actor = draw_map(layout, r, c, disp, panel, clim, scale_bar=True, surface=surface, contour=iso, circles=circles)
        colour_bar(layout, r, actor.mapper, panel.label, panel.log, clim, col=c)
    if title:
        layout.header_text(title, 0.5 * layout.size[0], 0, 22)
    out = layout.save(path)
    return {"path": out, "clims": clims, "shape": (rows, columns)}


def plot_initial_state(
    grid,
    path,
    *,
    beta: str = "beta",
    eta: str = "eta",
    grain: str | None = "grain",
    title: str | None = "Initial state",
    z: float | None = None,
    width: int = 1000,
) -> dict | None:
    """Stacked maps of the grains (if ``grain`` cell data is present), the GB indicator
    ``beta`` and the phase field ``eta``, with the eta = 0.5 outline of the nuclei in red
    on the grain and beta maps. Grain ids above the number of grains (the GB tag of
    tagged meshes) are drawn dark grey. Returns like :func:`plot_fields`."""
    if grid is None:
        return None
    disp, tdim = display_mesh(grid, z, False)
    if tdim == 3:
        title = slice_title(title, disp)
    has = lambda f: f is not None and (f in disp.point_data or f in disp.cell_data)  # noqa: E731
    for f in (beta, eta):
        if not has(f):
            raise KeyError(f"plot_initial_state: the grid has no field '{f}'")
    panels: list[Panel] = []
    grain_ok = has(grain) and grain in disp.cell_data
    if grain_ok:
        from matplotlib import colormaps
        from matplotlib.colors import ListedColormap

        ids = np.asarray(disp.cell_data[grain])
        grains = np.unique(ids[(ids > 0) & (ids != GB_TAG)])
        # qualitative colours without the greys (GB cells are dark grey); cycled if needed
        palette = (
            [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
            if len(grains) <= 9
            else [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)]
        )
        m = max(1, min(len(grains), len(palette)))
        index = np.full(ids.shape, np.nan)
        for k, g in enumerate(grains):
            index[ids == g] = k % m + 1
        disp.cell_data["_grain_index"] = index
        panels.append(Panel("_grain_index", "grain", ListedColormap(palette[:m]), (0.5, m + 0.5)))
    panels += [Panel(beta, "GB indicator β", "Greys", (0.0, 1.0)), Panel(eta, "phase field η", "cividis", (0.0, 1.0))]
    panel_w, panel_h = panel_size(disp, width)
    layout = Layout(len(panels), 1, panel_w, panel_h, header_lines=1 if title else 0)
    iso = contour_lines(disp, eta)
    clims = {}
    for r, panel in enumerate(panels):
        clims[panel.field] = panel.clim
        actor = draw_map(
            layout,
            r,
            0,
            disp,
            panel,
            panel.clim,
            scale_bar=True,
            surface=False,
            contour=iso if panel.field != eta else None,
        )
        if panel.field == "_grain_index":
            n = len(grains)
            actor.mapper.lookup_table.SetNanColor(0.25, 0.25, 0.25, 1.0)
            ren = layout.renderer(r, 1)
            lines = [
                f"{n} grains",
                "GBs: dark grey" if np.isnan(index).any() else "",
                "η = 0.5: red" if iso is not None else "",
            ]
            draw_text(ren, "\n".join(s for s in lines if s), (0.1, 0.5), layout.font(17), h="left")
        else:
            colour_bar(layout, r, actor.mapper, panel.label, False, panel.clim)
    if title:
        layout.header_text(title, 0.5 * layout.size[0], 0, 22)
    out = layout.save(path)
    clims.pop("_grain_index", None)
    return {"path": out, "clims": clims}


def plot_comparison(
    grids: Sequence,
    case_labels: Sequence[str],
    panels: Sequence[Panel],
    path,
    title: str | None = None,
    *,
    z: float | None = None,
    panel_width: int = 560,
    contour: str | None = None,
) -> dict | None:
    """Paper-style comparison: cases as columns (headed by ``case_labels``), fields as
    rows, colour limits shared along each row (computed over all cases unless the panel
    fixes them) and one colour bar per row.

    Returns ``{"path": Path, "clims": {field: (lo, hi)}}``, or ``None`` when ``grids`` is
    ``None`` or all its entries are (ranks other than the gathering one).
    """
    if grids is None or all(g is None for g in grids):
        return None
    if any(g is None for g in grids):
        raise ValueError("plot_comparison: some grids are None; gather all cases onto the same rank")
    if len(grids) != len(case_labels):
        raise ValueError("plot_comparison: one label per grid")
    panels = [p if isinstance(p, Panel) else Panel(*p) for p in panels]
    disps = [display_mesh(g, z, False)[0] for g in grids]
    clims: dict[str, tuple[float, float]] = {}
    for panel in panels:
        if panel.clim:
            clims[panel.field] = tuple(panel.clim)
            continue
        rngs = [r for r in (data_range(field_values(d, panel.field)[0], panel.log) for d in disps) if r is not None]
        rng = (min(r[0] for r in rngs), max(r[1] for r in rngs)) if rngs else None
        clims[panel.field] = finish_clim(rng, panel.log)
    sizes = [panel_size(d, panel_width) for d in disps]
    panel_width, panel_h = max(s[0] for s in sizes), max(s[1] for s in sizes)
    layout = Layout(len(panels), len(grids), panel_width, panel_h, header_lines=2 if title else 1)
    if title:
        layout.header_text(title, 0.5 * len(grids) * panel_width, 0, 22)
    for c, (disp, label) in enumerate(zip(disps, case_labels)):
        layout.header_text(str(label), (c + 0.5) * panel_width, 1 if title else 0, 19)
        iso = contour_lines(disp, contour)
        for r, panel in enumerate(panels):
            actor = draw_map(
                layout, r, c, disp, panel, clims[panel.field], scale_bar=(c == 0), surface=False, contour=iso
            )
            if c == len(grids) - 1:
                colour_bar(layout, r, actor.mapper, panel.label, panel.log, clims[panel.field])
    out = layout.save(path)
    return {"path": out, "clims": clims}


def plot_probes(
    series: dict,
    quantity_label: str,
    path,
    *,
    time_label: str = "t (s)",
    time_scale: float = 1.0,
    logy: bool = False,
    title: str | None = None,
) -> dict:
    """Time series at probe points: one subplot per probe (stacked, shared time axis),
    one line per case, same colour for a case in every subplot.

    ``series``: {case label: {probe name: (t, values)}}. ``time_scale`` multiplies t
    (e.g. 1e3 with ``time_label="t (ms)"``). Works on any rank (pure matplotlib, no
    display needed). Returns ``{"path": Path, "probes": [names]}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("plot_probes: no series")
    probes: list[str] = []
    for per_case in series.values():
        for name in per_case:
            if name not in probes:
                probes.append(name)
    n = len(probes)
    fig = Figure(figsize=(6.4, 1.9 * n + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(series))]
    for ax, probe in zip(axes, probes):
        for (case, per_case), colour in zip(series.items(), colours):
            if probe not in per_case:
                continue
            t, v = (np.asarray(a, dtype=float) for a in per_case[probe])
            ax.plot(t * time_scale, v, color=colour, lw=1.6, label=str(case))
        ax.set_ylabel(quantity_label)
        ax.set_title(probe, fontsize=10, loc="left")
        if logy:
            ax.set_yscale("log")
        ax.grid(True, lw=0.4, alpha=0.5)
    axes[-1].set_xlabel(time_label)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(series) > 1 or labels:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(series), 4), frameon=False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(path, dpi=150, facecolor="white")
    return {"path": path, "probes": probes}
