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

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..mesh import GB_TAG
from .gather import gather_cell_field, gather_grid
from .offscreen import ensure_offscreen

MICROMETRE = 1e-6

__all__ = [
    "Panel", "gather_grid", "gather_cell_field", "plot_fields", "plot_initial_state",
    "plot_comparison", "plot_probes", "ensure_offscreen", "nice_length",
]


# --------------------------------------------------------------------------- drawing helpers


@dataclass(frozen=True)
class Panel:
    """One field to draw: array ``field`` of the grid (point or cell data), colour-bar
    ``label`` with units, e.g. ``"|i| (A/m²)"``, matplotlib colormap name, optional fixed
    colour limits, log colour scale."""

    field: str
    label: str
    cmap: object = "viridis"  # matplotlib colormap name or object
    clim: tuple[float, float] | None = None
    log: bool = False


_FONT_FILE: str | None = None


def _font_file() -> str | None:
    """A TrueType font with the glyphs we print (µ, ², ³, ·): matplotlib's DejaVu Sans."""
    global _FONT_FILE
    if _FONT_FILE is None:
        try:
            from matplotlib import font_manager

            _FONT_FILE = font_manager.findfont("DejaVu Sans", fallback_to_default=True)
        except Exception:
            _FONT_FILE = ""
    return _FONT_FILE or None


def _style_text(prop, size: int, bold: bool = False, color=(0.0, 0.0, 0.0)) -> None:
    prop.SetFontSize(int(size))
    prop.SetBold(bold)
    prop.SetItalic(False)
    prop.SetShadow(False)
    prop.SetColor(*color)
    font = _font_file()
    if font:
        prop.SetFontFamily(4)  # VTK_FONT_FILE
        prop.SetFontFile(font)


def _text(renderer, text: str, pos, size: int, *, world: bool = False, h: str = "center", v: str = "center",
          bold: bool = False, angle: float = 0.0):
    from vtkmodules.vtkRenderingCore import vtkTextActor

    actor = vtkTextActor()
    actor.SetInput(text)
    prop = actor.GetTextProperty()
    _style_text(prop, size, bold)
    {"left": prop.SetJustificationToLeft, "center": prop.SetJustificationToCentered,
     "right": prop.SetJustificationToRight}[h]()
    {"bottom": prop.SetVerticalJustificationToBottom, "center": prop.SetVerticalJustificationToCentered,
     "top": prop.SetVerticalJustificationToTop}[v]()
    prop.SetOrientation(angle)
    coord = actor.GetPositionCoordinate()
    if world:
        coord.SetCoordinateSystemToWorld()
        coord.SetValue(float(pos[0]), float(pos[1]), float(pos[2]) if len(pos) > 2 else 0.0)
    else:
        coord.SetCoordinateSystemToNormalizedViewport()
        coord.SetValue(float(pos[0]), float(pos[1]))
    renderer.AddActor2D(actor)
    return actor


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``target`` (> 0)."""
    if not target > 0:
        raise ValueError("nice_length: target must be positive")
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10.0**k <= target * (1 + 1e-9):
            return m * 10.0**k
    return 10.0**k


def _fmt_length(um: float) -> str:
    if um >= 1000:
        return f"{um / 1000:g} mm"
    if um < 0.1:
        return f"{um * 1000:g} nm"
    return f"{um:g} µm"


def _display_mesh(grid, z: float | None, surface: bool):
    """Copy of ``grid`` in micrometres, reduced to what is drawn: 2D as is; 3D a slice at
    height ``z`` (mesh units; default mid-height) or the outer surface."""
    scale = float(grid.field_data["metres_per_unit"][0]) / MICROMETRE if "metres_per_unit" in grid.field_data \
        else 1.0 / MICROMETRE
    tdim = int(grid.field_data["topological_dimension"][0]) if "topological_dimension" in grid.field_data \
        else (3 if np.ptp(np.asarray(grid.points)[:, 2]) > 0 else 2)
    disp = grid.copy()
    disp.points = np.asarray(grid.points) * scale
    if tdim == 3:
        if surface:
            disp = disp.extract_surface()
        else:
            b = disp.bounds
            zc = 0.5 * (b[4] + b[5]) if z is None else z * scale
            disp = disp.slice(normal="z", origin=(0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3]), zc))
    return disp, tdim


def _values(disp, field: str) -> tuple[np.ndarray, str]:
    if field in disp.point_data:
        return np.asarray(disp.point_data[field]), "point"
    if field in disp.cell_data:
        return np.asarray(disp.cell_data[field]), "cell"
    available = sorted(set(disp.point_data.keys()) | set(disp.cell_data.keys()))
    raise KeyError(f"field '{field}' not in the grid (has: {', '.join(available)})")


def _data_range(values: np.ndarray, log: bool) -> tuple[float, float] | None:
    v = np.asarray(values, dtype=float)
    if v.ndim == 2:
        v = np.linalg.norm(v, axis=1)
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return None
    return float(v.min()), float(v.max())


def _finish_clim(rng: tuple[float, float] | None, log: bool) -> tuple[float, float]:
    if rng is None:
        return (1e-12, 1.0) if log else (0.0, 1.0)
    lo, hi = rng
    if hi <= lo:
        if log:
            lo, hi = lo / 2, hi * 2
        else:
            d = 0.01 * abs(lo) if lo != 0 else 1.0
            lo, hi = lo - d, hi + d
    return lo, hi


class _Layout:
    """A plotter whose subplots form a grid of fixed pixel sizes: an optional header row
    spanning the figure (title, column titles), rows of map panels, and a last column of
    colour bars."""

    LINE = 40  # header line height in pixels at scale 1

    def __init__(self, n_rows: int, n_cols: int, panel_w: int, panel_h: int, header_lines: int = 0):
        import pyvista as pv

        ensure_offscreen()
        # fonts grow with the figure (geometric mean size), for a figure shown at page width
        area = (n_cols * panel_w + 250) * n_rows * panel_h
        self.scale = float(np.clip(math.sqrt(area) / 1000.0, 0.8, 2.5))
        cbar_w = int(round(175 * self.scale))  # bar, tick labels and the rotated label
        self.header = 1 if header_lines else 0
        self.line_h = int(round(self.LINE * self.scale))
        header_h = header_lines * self.line_h + (int(0.3 * self.line_h) if header_lines else 0)
        self.panel_w, self.panel_h, self.cbar_w, self.header_h = panel_w, panel_h, cbar_w, header_h
        rows = [header_h] * self.header + [panel_h] * n_rows
        cols = [panel_w] * n_cols + [cbar_w]
        self.size = (int(sum(cols)), int(sum(rows)))
        theme = pv.themes.DocumentTheme()
        theme.background = "white"
        theme.font.color = "black"
        groups = [(0, np.s_[:])] if self.header else None
        self.plotter = pv.Plotter(off_screen=True, shape=(len(rows), len(cols)), row_weights=rows,
                                  col_weights=cols, groups=groups, window_size=self.size, border=False,
                                  theme=theme, lighting="none")
        self.n_cols = n_cols

    def renderer(self, row: int, col: int):
        self.plotter.subplot(row + self.header, col)
        return self.plotter.renderer

    def header_text(self, text: str, x_px: float, line: int, size: float, bold: bool = False) -> None:
        """Text centred at ``x_px`` pixels from the left on header line ``line`` (0 = top)."""
        self.plotter.subplot(0, 0)
        y_px = int(0.3 * self.line_h) + (line + 0.5) * self.line_h
        _text(self.plotter.renderer, text, (x_px / self.size[0], 1.0 - y_px / self.header_h), self.font(size),
              bold=bold)

    def font(self, base: float) -> int:
        return int(round(base * self.scale))

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plotter.screenshot(str(path))
        self.plotter.close()
        return path


def _panel_size(disp, width: int) -> tuple[int, int]:
    """(width, height) of a map panel at most ``width`` wide and 0.85 ``width`` high,
    fitted to the domain's aspect ratio (tall domains get narrower panels)."""
    b = disp.bounds
    lx, ly = max(b[1] - b[0], 1e-30), max(b[3] - b[2], 1e-30)
    h = width * _FRAME["w"] * ly / lx / _FRAME["h"]
    if h > 0.85 * width:
        h = 0.85 * width
        return int(max(0.3 * width, h * _FRAME["h"] * lx / ly / _FRAME["w"])), int(h)
    return int(width), int(max(h, 0.3 * width))


# fractions of a map panel: domain inside [x0, x0 + w] x [y0, y0 + h], scale bar below
_FRAME = dict(x0=0.04, w=0.92, y0=0.15, h=0.81, bar_y=0.07)


def _draw_map(layout: _Layout, row: int, col: int, disp, panel: Panel, clim, *, scale_bar: bool, surface: bool,
              contour=None):
    """Draw one field on one subplot; returns the mesh actor (its mapper feeds the colour bar)."""
    import pyvista as pv

    p = layout.plotter
    ren = layout.renderer(row, col)
    vals, where = _values(disp, panel.field)
    scalars = panel.field
    if vals.ndim == 2:  # a vector: draw its magnitude
        mag = f"{panel.field}_magnitude"
        data = disp.point_data if where == "point" else disp.cell_data
        if mag not in data:
            data[mag] = np.linalg.norm(vals, axis=1)
        scalars = mag
    # a shallow copy per actor: actors sharing one dataset would all show its active array
    actor = p.add_mesh(disp.copy(deep=False), scalars=scalars, preference=where, cmap=panel.cmap, clim=clim, log_scale=panel.log,
                       show_scalar_bar=False, lighting=False, nan_color="lightgrey", show_edges=False,
                       interpolate_before_map=True)
    if contour is not None and contour.n_points:
        p.add_mesh(contour, color="red", line_width=2.5, lighting=False)
    b = disp.bounds
    lx, ly = b[1] - b[0], b[3] - b[2]
    if not surface:
        edges = disp.extract_feature_edges(boundary_edges=True, feature_edges=False, manifold_edges=False,
                                           non_manifold_edges=False)
        if edges.n_points:
            p.add_mesh(edges, color="black", line_width=1.0, lighting=False)
        cam = ren.camera
        w_px, h_px = layout.panel_w, layout.panel_h
        k = max(lx / (_FRAME["w"] * w_px), ly / (_FRAME["h"] * h_px))  # um per pixel
        xc, yc = 0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3])
        fy = _FRAME["y0"] + 0.5 * _FRAME["h"]  # where the domain centre sits, as a viewport fraction
        focal = (xc, yc - (fy - 0.5) * h_px * k, 0.0)
        cam.SetParallelProjection(True)
        cam.SetFocalPoint(*focal)
        cam.SetPosition(focal[0], focal[1], 1.0 + max(lx, ly) * 10)
        cam.SetViewUp(0, 1, 0)
        cam.SetParallelScale(0.5 * h_px * k)
        ren.ResetCameraClippingRange()
        ren.camera_set = True  # or pyvista replaces this camera by its default view
        if scale_bar:
            length = nice_length(0.25 * lx)
            x_left = xc - 0.5 * w_px * k + _FRAME["x0"] * w_px * k
            x0 = max(b[0], x_left)
            y_bar = focal[1] - (0.5 - _FRAME["bar_y"]) * h_px * k
            bar = pv.Line((x0, y_bar, 0.0), (x0 + length, y_bar, 0.0))
            p.add_mesh(bar, color="black", line_width=max(3, int(round(4 * layout.scale))), lighting=False)
            _text(ren, _fmt_length(length), (x0 + length + 0.015 * w_px * k, y_bar, 0.0), layout.font(17),
                  world=True, h="left", v="center")
    else:
        edges = disp.extract_feature_edges(feature_angle=30, boundary_edges=True, feature_edges=True,
                                           manifold_edges=False, non_manifold_edges=False)
        if edges.n_points:  # the box edges: the flat-coloured faces have no shading
            p.add_mesh(edges, color="black", line_width=1.0, lighting=False)
        p.view_isometric()
        p.enable_parallel_projection()
        p.reset_camera()
        ren.camera.zoom(1.1)
        ren.camera_set = True
        if scale_bar:  # along x, in front of the bottom edge facing the viewer (+y side)
            length = nice_length(0.25 * lx)
            y, zb = b[3] + 0.12 * ly, b[4]
            bar = pv.Line((b[0], y, zb), (b[0] + length, y, zb))
            p.add_mesh(bar, color="black", line_width=max(3, int(round(4 * layout.scale))), lighting=False)
            _text(ren, _fmt_length(length), (b[0] + 0.5 * length, y + 0.1 * ly, zb), layout.font(17), world=True,
                  v="top")
    return actor


def _ticks(lo: float, hi: float, log: bool) -> np.ndarray:
    """Round tick values inside [lo, hi] (matplotlib's locators)."""
    from matplotlib import ticker

    eps = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    inside = lambda t: t[(t >= lo - eps) & (t <= hi + eps)]  # noqa: E731
    if log and lo > 0:
        for subs in ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)):
            t = inside(np.asarray(ticker.LogLocator(base=10, subs=subs, numticks=12).tick_values(lo, hi)))
            if len(t) >= 3:
                return t[:: max(1, len(t) // 6)]
    t = inside(np.asarray(ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)))
    t[np.abs(t) < 1e-12 * max(abs(lo), abs(hi))] = 0.0
    return t if len(t) >= 2 else np.array([lo, hi])


def _tick_format(ticks: np.ndarray) -> str:
    """printf format giving short, exact labels for ``ticks``."""
    big = np.max(np.abs(ticks)) if len(ticks) else 1.0
    nonzero = np.abs(ticks[ticks != 0])
    if big >= 1e4 or (nonzero.size and nonzero.min() < 1e-3):
        for digits in (0, 1, 2):
            fmt = f"%.{digits}e"
            if all(abs(float(fmt % t) - t) <= 1e-9 * max(abs(t), 1e-300) for t in ticks):
                return fmt
        return "%.2e"
    return "%.4g"


def _colour_bar(layout: _Layout, row: int, mapper, label: str, log: bool, clim) -> None:
    """A vertical colour bar for ``mapper`` in the colour-bar column, with round ticks and
    ``label`` rotated along its right side (like matplotlib's colorbar label)."""
    from vtkmodules.vtkCommonCore import vtkDoubleArray
    from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor

    ren = layout.renderer(row, layout.n_cols)
    bar = vtkScalarBarActor()
    bar.SetLookupTable(mapper.GetLookupTable())
    bar.SetOrientationToVertical()
    bar.SetMaximumNumberOfColors(256)
    ticks = _ticks(float(clim[0]), float(clim[1]), log)
    custom = vtkDoubleArray()
    for t in ticks:
        custom.InsertNextValue(float(t))
    bar.SetUseCustomLabels(True)
    bar.SetCustomLabels(custom)
    bar.SetLabelFormat(_tick_format(ticks))
    bar.SetDrawTickLabels(True)
    bar.SetTextPositionToSucceedScalarBar()
    bar.SetUnconstrainedFontSize(True)
    bar.SetBarRatio(0.2)
    bar.SetTitle("")
    bar.SetDrawFrame(False)
    bar.SetDrawBackground(False)
    bar.SetAnnotationTextScaling(False)
    bar.SetTextPad(4)
    _style_text(bar.GetLabelTextProperty(), layout.font(15))
    coord = bar.GetPositionCoordinate()
    coord.SetCoordinateSystemToNormalizedViewport()
    y0, y1 = _FRAME["y0"], _FRAME["y0"] + _FRAME["h"]
    coord.SetValue(0.02, y0)
    bar.GetPosition2Coordinate().SetValue(0.75, y1 - y0)
    ren.AddActor2D(bar)
    _text(ren, label, (0.87, y0 + 0.5 * (y1 - y0)), layout.font(17), angle=90.0)


def _contour(disp, field: str | None, level: float = 0.5):
    """The ``field = level`` iso-lines (e.g. the eta = 0.5 metal front), or None."""
    if not field:
        return None
    if field in disp.point_data:
        src = disp
    elif field in disp.cell_data:
        src = disp.cell_data_to_point_data()
    else:
        return None
    v = np.asarray(src.point_data[field])
    if v.ndim != 1 or not (np.nanmin(v) < level < np.nanmax(v)):
        return None
    try:
        return src.contour([level], scalars=field)
    except Exception:  # a contour is decoration only
        return None


# --------------------------------------------------------------------------- figures


def plot_fields(grid, panels: Sequence[Panel], path, title: str | None = None, *, z: float | None = None,
                surface: bool = False, width: int = 1000, contour: str | None = None) -> dict | None:
    """One row per field: map (top-down, parallel projection, scale bar in µm) and a
    colour bar labelled with ``Panel.label``.

    3D grids show the slice at height ``z`` (mesh units, default mid-height) or, with
    ``surface=True``, the outer surface in an isometric view. ``contour`` names a field
    whose 0.5 iso-line is drawn in red on every panel (e.g. ``"eta"``).

    Returns ``{"path": Path, "clims": {field: (lo, hi)}}``, or ``None`` if ``grid`` is
    ``None`` (ranks other than the gathering one).
    """
    if grid is None:
        return None
    panels = [p if isinstance(p, Panel) else Panel(*p) for p in panels]
    if not panels:
        raise ValueError("plot_fields: no panels")
    disp, _ = _display_mesh(grid, z, surface)
    panel_w, panel_h = _panel_size(disp, width) if not surface else (width, int(0.8 * width))
    layout = _Layout(len(panels), 1, panel_w, panel_h, header_lines=1 if title else 0)
    iso = _contour(disp, contour)
    clims = {}
    for r, panel in enumerate(panels):
        vals, _ = _values(disp, panel.field)
        clim = tuple(panel.clim) if panel.clim else _finish_clim(_data_range(vals, panel.log), panel.log)
        clims[panel.field] = clim
        actor = _draw_map(layout, r, 0, disp, panel, clim, scale_bar=True, surface=surface, contour=iso)
        _colour_bar(layout, r, actor.mapper, panel.label, panel.log, clim)
    if title:
        layout.header_text(title, 0.5 * layout.size[0], 0, 22)
    out = layout.save(path)
    return {"path": out, "clims": clims}


def plot_initial_state(grid, path, *, beta: str = "beta", eta: str = "eta", grain: str | None = "grain",
                       title: str | None = "Initial state", z: float | None = None, width: int = 1000) -> dict | None:
    """Stacked maps of the grains (if ``grain`` cell data is present), the GB indicator
    ``beta`` and the phase field ``eta``, with the eta = 0.5 outline of the nuclei in red
    on the grain and beta maps. Grain ids above the number of grains (the GB tag of
    tagged meshes) are drawn dark grey. Returns like :func:`plot_fields`."""
    if grid is None:
        return None
    disp, _ = _display_mesh(grid, z, False)
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
        palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7] if len(grains) <= 9 else \
            [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)]
        m = max(1, min(len(grains), len(palette)))
        index = np.full(ids.shape, np.nan)
        for k, g in enumerate(grains):
            index[ids == g] = k % m + 1
        disp.cell_data["_grain_index"] = index
        panels.append(Panel("_grain_index", "grain", ListedColormap(palette[:m]), (0.5, m + 0.5)))
    panels += [Panel(beta, "GB indicator β", "Greys", (0.0, 1.0)), Panel(eta, "phase field η", "cividis", (0.0, 1.0))]
    panel_w, panel_h = _panel_size(disp, width)
    layout = _Layout(len(panels), 1, panel_w, panel_h, header_lines=1 if title else 0)
    iso = _contour(disp, eta)
    clims = {}
    for r, panel in enumerate(panels):
        clims[panel.field] = panel.clim
        actor = _draw_map(layout, r, 0, disp, panel, panel.clim, scale_bar=True, surface=False,
                          contour=iso if panel.field != eta else None)
        if panel.field == "_grain_index":
            n = len(grains)
            actor.mapper.lookup_table.SetNanColor(0.25, 0.25, 0.25, 1.0)
            ren = layout.renderer(r, 1)
            lines = [f"{n} grains", "GBs: dark grey" if np.isnan(index).any() else "",
                     "η = 0.5: red" if iso is not None else ""]
            _text(ren, "\n".join(s for s in lines if s), (0.1, 0.5), layout.font(17), h="left")
        else:
            _colour_bar(layout, r, actor.mapper, panel.label, False, panel.clim)
    if title:
        layout.header_text(title, 0.5 * layout.size[0], 0, 22)
    out = layout.save(path)
    clims.pop("_grain_index", None)
    return {"path": out, "clims": clims}


def plot_comparison(grids: Sequence, case_labels: Sequence[str], panels: Sequence[Panel], path,
                    title: str | None = None, *, z: float | None = None, panel_width: int = 560,
                    contour: str | None = None) -> dict | None:
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
    disps = [_display_mesh(g, z, False)[0] for g in grids]
    clims: dict[str, tuple[float, float]] = {}
    for panel in panels:
        if panel.clim:
            clims[panel.field] = tuple(panel.clim)
            continue
        rngs = [r for r in (_data_range(_values(d, panel.field)[0], panel.log) for d in disps) if r is not None]
        rng = (min(r[0] for r in rngs), max(r[1] for r in rngs)) if rngs else None
        clims[panel.field] = _finish_clim(rng, panel.log)
    sizes = [_panel_size(d, panel_width) for d in disps]
    panel_width, panel_h = max(s[0] for s in sizes), max(s[1] for s in sizes)
    layout = _Layout(len(panels), len(grids), panel_width, panel_h, header_lines=2 if title else 1)
    if title:
        layout.header_text(title, 0.5 * len(grids) * panel_width, 0, 22)
    for c, (disp, label) in enumerate(zip(disps, case_labels)):
        layout.header_text(str(label), (c + 0.5) * panel_width, 1 if title else 0, 19)
        iso = _contour(disp, contour)
        for r, panel in enumerate(panels):
            actor = _draw_map(layout, r, c, disp, panel, clims[panel.field], scale_bar=(c == 0), surface=False,
                              contour=iso)
            if c == len(grids) - 1:
                _colour_bar(layout, r, actor.mapper, panel.label, panel.log, clims[panel.field])
    out = layout.save(path)
    return {"path": out, "clims": clims}


def plot_probes(series: dict, quantity_label: str, path, *, time_label: str = "t (s)", time_scale: float = 1.0,
                logy: bool = False, title: str | None = None) -> dict:
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
