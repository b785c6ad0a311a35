"""Drawing helpers of the figures: panels, text, layout, colour bars, scale bars, contours
(pyvista/VTK off-screen)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .offscreen import ensure_offscreen

MICROMETRE = 1e-6


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


def draw_text(
    renderer,
    text: str,
    pos,
    size: int,
    *,
    world: bool = False,
    h: str = "center",
    v: str = "center",
    bold: bool = False,
    angle: float = 0.0,
):
    from vtkmodules.vtkRenderingCore import vtkTextActor

    actor = vtkTextActor()
    actor.SetInput(text)
    prop = actor.GetTextProperty()
    _style_text(prop, size, bold)
    {
        "left": prop.SetJustificationToLeft,
        "center": prop.SetJustificationToCentered,
        "right": prop.SetJustificationToRight,
    }[h]()
    {
        "bottom": prop.SetVerticalJustificationToBottom,
        "center": prop.SetVerticalJustificationToCentered,
        "top": prop.SetVerticalJustificationToTop,
    }[v]()
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


def display_mesh(grid, z: float | None, surface: bool):
    """Copy of ``grid`` in micrometres, reduced to what is drawn: 2D as is; 3D a slice at
    height ``z`` (mesh units; default mid-height) or the outer surface."""
    scale = (
        float(grid.field_data["metres_per_unit"][0]) / MICROMETRE
        if "metres_per_unit" in grid.field_data
        else 1.0 / MICROMETRE
    )
    tdim = (
        int(grid.field_data["topological_dimension"][0])
        if "topological_dimension" in grid.field_data
        else (3 if np.ptp(np.asarray(grid.points)[:, 2]) > 0 else 2)
    )
    disp = grid.copy()
    disp.points = np.asarray(grid.points) * scale
    if tdim == 3:
        if surface:
            disp = disp.extract_surface()
        else:
            b = disp.bounds
            zc = 0.5 * (b[4] + b[5]) if z is None else z * scale
            # a cut exactly on a face (a nucleus on the bottom face) can come out empty
            inset = 1e-6 * (b[5] - b[4])
            zc = min(max(zc, b[4] + inset), b[5] - inset)
            disp = disp.slice(normal="z", origin=(0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3]), zc))
    return disp, tdim


def field_values(disp, field: str) -> tuple[np.ndarray, str]:
    if field in disp.point_data:
        return np.asarray(disp.point_data[field]), "point"
    if field in disp.cell_data:
        return np.asarray(disp.cell_data[field]), "cell"
    available = sorted(set(disp.point_data.keys()) | set(disp.cell_data.keys()))
    raise KeyError(f"field '{field}' not in the grid (has: {', '.join(available)})")


def data_range(values: np.ndarray, log: bool) -> tuple[float, float] | None:
    v = np.asarray(values, dtype=float)
    if v.ndim == 2:
        v = np.linalg.norm(v, axis=1)
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return None
    return float(v.min()), float(v.max())


def finish_clim(rng: tuple[float, float] | None, log: bool) -> tuple[float, float]:
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


class Layout:
    """A plotter whose subplots form a grid of fixed pixel sizes: an optional header row
    spanning the figure (title, column titles), rows of map panels, and a last column of
    colour bars (one per row), or with ``bar_each`` a colour bar right of every panel."""

    LINE = 40  # header line height in pixels at scale 1

    def __init__(
        self, n_rows: int, n_cols: int, panel_w: int, panel_h: int, header_lines: int = 0, bar_each: bool = False
    ):
        import pyvista as pv

        ensure_offscreen()
        self.scale, cbar_w, self.line_h, header_h = _layout_sizes(
            n_rows, n_cols, panel_w, panel_h, header_lines, bar_each
        )
        self.header = 1 if header_lines else 0
        self.panel_w, self.panel_h, self.cbar_w, self.header_h = panel_w, panel_h, cbar_w, header_h
        rows = [header_h] * self.header + [panel_h] * n_rows
        if bar_each:
            # a blank column after each colour bar: its rotated label would sit against the
            # next map and read as that map's
            cols = [panel_w, cbar_w, bar_gap(cbar_w)] * n_cols
            cols.pop()
        else:
            cols = [panel_w] * n_cols + [cbar_w]
        self.size = (int(sum(cols)), int(sum(rows)))
        self.bar_each = bar_each
        theme = pv.themes.DocumentTheme()
        theme.background = "white"
        theme.font.color = "black"
        groups = [(0, np.s_[:])] if self.header else None
        self.plotter = pv.Plotter(
            off_screen=True,
            shape=(len(rows), len(cols)),
            row_weights=rows,
            col_weights=cols,
            groups=groups,
            window_size=self.size,
            border=False,
            theme=theme,
            lighting="none",
        )
        self.n_cols = n_cols

    def renderer(self, row: int, col: int):
        self.plotter.subplot(row + self.header, 3 * col if self.bar_each else col)
        return self.plotter.renderer

    def bar_renderer(self, row: int, col: int = 0):
        """The colour-bar subplot of the panel at (row, col): beside it, or the row's last."""
        self.plotter.subplot(row + self.header, 3 * col + 1 if self.bar_each else self.n_cols)
        return self.plotter.renderer

    def header_text(self, text: str, x_px: float, line: int, size: float, bold: bool = False) -> None:
        """Text centred at ``x_px`` pixels from the left on header line ``line`` (0 = top)."""
        self.plotter.subplot(0, 0)
        y_px = int(0.3 * self.line_h) + (line + 0.5) * self.line_h
        draw_text(
            self.plotter.renderer, text, (x_px / self.size[0], 1.0 - y_px / self.header_h), self.font(size), bold=bold
        )

    def font(self, base: float) -> int:
        return int(round(base * self.scale))

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plotter.screenshot(str(path))
        self.plotter.close()
        return path


def _layout_sizes(
    n_rows: int, n_cols: int, panel_w: int, panel_h: int, header_lines: int, bar_each: bool
) -> tuple[float, int, int, int]:
    """(font scale, colour-bar column width, header line height, header height) of a Layout."""
    # fonts grow with the figure (geometric mean size), for a figure shown at page width
    area = (n_cols * panel_w + 250 * (n_cols if bar_each else 1)) * n_rows * panel_h
    scale = float(np.clip(math.sqrt(area) / 1000.0, 0.8, 2.5))
    cbar_w = int(round(175 * scale))  # bar, tick labels and the rotated label
    line_h = int(round(Layout.LINE * scale))
    header_h = header_lines * line_h + (int(0.3 * line_h) if header_lines else 0)
    return scale, cbar_w, line_h, header_h


def bar_gap(cbar_w: int) -> int:
    """Blank width between a colour bar and the next map of a ``bar_each`` Layout."""
    return cbar_w // 2


def grid_shape(n: int, panel_w: int, panel_h: int, header_lines: int = 0, aspect: float = 4 / 3) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels, each with its colour bar beside it, whose figure
    is nearest ``aspect`` (width / height, in log scale): wide domains stack, tall ones
    line up. Empty slots count against a shape: twice their fraction of ``n`` adds to that
    distance."""
    best = None
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        if (rows - 1) * cols >= n:
            continue  # a whole empty row
        _, cbar_w, _, header_h = _layout_sizes(rows, cols, panel_w, panel_h, header_lines, True)
        w, h = cols * (panel_w + cbar_w) + (cols - 1) * bar_gap(cbar_w), rows * panel_h + header_h
        score = (abs(math.log(w / h / aspect)) + 2 * (rows * cols - n) / n, rows * cols - n)
        if best is None or score < best[0]:
            best = (score, (rows, cols))
    assert best is not None  # n >= 1: one row holds every panel
    return best[1]


def panel_size(disp, width: int) -> tuple[int, int]:
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


def draw_map(
    layout: Layout,
    row: int,
    col: int,
    disp,
    panel: Panel,
    clim,
    *,
    scale_bar: bool,
    surface: bool,
    contour=None,
    circles=None,
):
    """Draw one field on one subplot; returns the mesh actor (its mapper feeds the colour
    bar). ``contour``: lines drawn in red (the metal front); ``circles``: in magenta (the
    inserted nuclei, :func:`nucleus_circles`)."""
    import pyvista as pv

    p = layout.plotter
    ren = layout.renderer(row, col)
    vals, where = field_values(disp, panel.field)
    scalars = panel.field
    if vals.ndim == 2:  # a vector: draw its magnitude
        mag = f"{panel.field}_magnitude"
        data = disp.point_data if where == "point" else disp.cell_data
        if mag not in data:
            data[mag] = np.linalg.norm(vals, axis=1)
        scalars = mag
    # a shallow copy per actor: actors sharing one dataset would all show its active array
    actor = p.add_mesh(
        disp.copy(deep=False),
        scalars=scalars,
        preference=where,
        cmap=panel.cmap,
        clim=clim,
        log_scale=panel.log,
        show_scalar_bar=False,
        lighting=False,
        nan_color="lightgrey",
        show_edges=False,
        interpolate_before_map=True,
    )
    if contour is not None and contour.n_points:
        p.add_mesh(contour, color="red", line_width=2.5, lighting=False)
    if circles is not None and circles.n_points:
        p.add_mesh(circles, color="magenta", line_width=2.0, lighting=False)
    b = disp.bounds
    lx, ly = b[1] - b[0], b[3] - b[2]
    if not surface:
        edges = disp.extract_feature_edges(
            boundary_edges=True, feature_edges=False, manifold_edges=False, non_manifold_edges=False
        )
        if edges.n_points:
            p.add_mesh(edges, color="black", line_width=1.0, lighting=False)
        cam = ren.camera
        w_px, h_px = layout.panel_w, layout.panel_h
        k = max(lx / (_FRAME["w"] * w_px), ly / (_FRAME["h"] * h_px))  # um per pixel
        xc, yc = 0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3])
        fy = _FRAME["y0"] + 0.5 * _FRAME["h"]  # where the domain centre sits, as a viewport fraction
        # in the slice's plane: a scale bar at z = 0 would fall outside the clipping range
        zs = b[4] if np.isfinite(b[4]) else 0.0
        focal = (xc, yc - (fy - 0.5) * h_px * k, zs)
        cam.SetParallelProjection(True)
        cam.SetFocalPoint(*focal)
        cam.SetPosition(focal[0], focal[1], zs + 1.0 + max(lx, ly) * 10)
        cam.SetViewUp(0, 1, 0)
        cam.SetParallelScale(0.5 * h_px * k)
        ren.ResetCameraClippingRange()
        ren.camera_set = True  # or pyvista replaces this camera by its default view
        if scale_bar:
            length = nice_length(0.25 * lx)
            x_left = xc - 0.5 * w_px * k + _FRAME["x0"] * w_px * k
            x0 = max(b[0], x_left)
            y_bar = focal[1] - (0.5 - _FRAME["bar_y"]) * h_px * k
            bar = pv.Line((x0, y_bar, zs), (x0 + length, y_bar, zs))
            p.add_mesh(bar, color="black", line_width=max(3, int(round(4 * layout.scale))), lighting=False)
            draw_text(
                ren,
                _fmt_length(length),
                (x0 + length + 0.015 * w_px * k, y_bar, zs),
                layout.font(17),
                world=True,
                h="left",
                v="center",
            )
    else:
        edges = disp.extract_feature_edges(
            feature_angle=30, boundary_edges=True, feature_edges=True, manifold_edges=False, non_manifold_edges=False
        )
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
            draw_text(
                ren, _fmt_length(length), (b[0] + 0.5 * length, y + 0.1 * ly, zb), layout.font(17), world=True, v="top"
            )
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


def colour_bar(layout: Layout, row: int, mapper, label: str, log: bool, clim, col: int = 0) -> None:
    """A vertical colour bar for ``mapper`` in the colour-bar column (or beside panel
    ``col`` of a ``bar_each`` layout), with round ticks and ``label`` rotated along its
    right side (like matplotlib's colorbar label)."""
    from vtkmodules.vtkCommonCore import vtkDoubleArray
    from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor

    ren = layout.bar_renderer(row, col)
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
    draw_text(ren, label, (0.87, y0 + 0.5 * (y1 - y0)), layout.font(17), angle=90.0)


def read_nuclei(path) -> list[tuple[tuple[float, ...], float]]:
    """The nuclei of a run's nuclei.csv (problem/nucleation.py writes it) as (centre,
    radius) in metres; [] when the file is missing."""
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    axes = [a for a in ("x_m", "y_m", "z_m") if rows and a in rows[0]]
    return [(tuple(float(row[a]) for a in axes), float(row["radius_m"])) for row in rows]


def nucleus_circles(disp, tdim: int, nuclei, sides: int = 48):
    """Outlines (µm) of inserted nuclei on a map: each nucleus's circle, in 3D its cut by
    the slice's plane (nuclei the slice misses are left out); None when there is none."""
    import pyvista as pv

    if not nuclei:
        return None
    z = disp.bounds[4] if tdim == 3 else 0.0
    angle = np.linspace(0.0, 2 * np.pi, sides + 1)
    rings = []
    for centre, radius in nuclei:
        c = np.asarray(centre, dtype=float) / MICROMETRE
        r = radius / MICROMETRE
        if tdim == 3:
            r = np.sqrt(max(r**2 - (c[2] - z) ** 2, 0.0))
            if r == 0.0:
                continue
        rings.append(np.column_stack([c[0] + r * np.cos(angle), c[1] + r * np.sin(angle), np.full_like(angle, z)]))
    if not rings:
        return None
    points = np.concatenate(rings)
    lines = np.concatenate([[sides + 1, *range(k * (sides + 1), (k + 1) * (sides + 1))] for k in range(len(rings))])
    return pv.PolyData(points, lines=lines)


def contour_lines(disp, field: str | None, level: float = 0.5):
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
