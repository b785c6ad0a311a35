"""Figures of 3D runs (pyvista, off-screen): where the slice maps cut the box, and a
perspective view of the metal (eta = 0.5 iso-surface) inside the GB network.

A map of one face, or of a slice that misses the nuclei, shows nothing of a dendrite that
grows inside the box; the slice maps (figures.plot_fields with ``z``) therefore cut through
the nuclei (:func:`nuclei_plane_z`), and :func:`plot_view_3d` shows the metal in 3D.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .drawing import MICROMETRE, draw_text
from .offscreen import ensure_offscreen

METAL_COLOUR = (0.72, 0.72, 0.76)  # sodium is a silvery metal
GB_COLOUR = (0.1, 0.42, 0.85)
ELECTRODE_COLOUR = (0.85, 0.65, 0.13)


def nuclei_plane_z(nuclei, tol: float = 1e-9) -> float | None:
    """The height (mesh units) of the horizontal slice through the nuclei centres: the z
    shared by most nuclei, ties going to the one nearest the nuclei's mean z (so a single
    plane of nuclei is cut exactly, and scattered nuclei at least through a central one).
    None for 2D nuclei or no nuclei (the maps then keep their default plane)."""
    pts = np.asarray(nuclei if nuclei is not None else [], dtype=float)
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] != 3:
        return None
    zs = pts[:, 2]
    scale = max(float(np.ptp(zs)), float(np.abs(zs).max()), 1e-300)
    counts = np.array([(np.abs(zs - z) <= tol * scale).sum() for z in zs])
    candidates = zs[counts == counts.max()]
    return float(candidates[np.argmin(np.abs(candidates - zs.mean()))])


def slice_title(title: str | None, disp) -> str:
    """``title`` naming the height of the slice ``disp`` (in micrometres) that it heads."""
    b = disp.bounds
    # rounded: a cut at a face is moved inside by a hair (drawing.display_mesh)
    label = f"slice z = {round(0.5 * (b[4] + b[5]), 5):.3g} µm" if disp.n_points else "empty slice"
    return f"{title}; {label}" if title else label


def _plotter(width: int, height: int, **kwargs):
    """An off-screen pyvista plotter on a white background with black text."""
    import pyvista as pv

    theme = pv.themes.DocumentTheme()
    theme.background = "white"
    theme.font.color = "black"
    return pv.Plotter(off_screen=True, window_size=(width, height), theme=theme, **kwargs)


def _display_grid(grid, eta: str, caller: str):
    """A copy of ``grid`` with coordinates in micrometres (see drawing.display_mesh), for
    ``caller``'s off-screen figure of ``eta``; a one-line KeyError if the grid lacks it."""
    if eta not in grid.point_data and eta not in grid.cell_data:
        raise KeyError(f"{caller}: the grid has no field '{eta}'")
    ensure_offscreen()
    per_unit = float(grid.field_data["metres_per_unit"][0]) if "metres_per_unit" in grid.field_data else 1.0
    disp = grid.copy()
    disp.points = np.asarray(grid.points) * (per_unit / MICROMETRE)
    return disp


def iso_surface(mesh, field: str, level: float = 0.5):
    """The ``field = level`` iso-surface, or None if the field never crosses ``level``.

    Cell fields (beta of tagged GBs) are averaged to the points first: a contour needs
    nodal values."""
    if field in mesh.point_data:
        src = mesh
    elif field in mesh.cell_data:
        src = mesh.cell_data_to_point_data()
    else:
        return None
    v = np.asarray(src.point_data[field], dtype=float)
    if v.ndim != 1 or not (np.nanmin(v) < level < np.nanmax(v)):
        return None
    surf = src.contour([level], scalars=field, compute_normals=True)
    return surf if surf.n_points else None


def plot_view_3d(
    grid,
    path,
    *,
    eta: str = "eta",
    beta: str | None = "beta",
    title: str | None = None,
    width: int = 1200,
    electrode: bool = True,
) -> dict | None:
    """Perspective view of a 3D grid: the metal (``eta`` = 0.5 iso-surface, opaque silver),
    the GB network (``beta`` = 0.5 iso-surface, translucent blue), the box outline with its
    electrode face (x = min, faint gold) and axes in micrometres.

    The camera looks from the front (-y), right and above, so the electrode is on the left
    and growth runs left to right. Returns ``{"path", "metal", "gb"}`` (whether each surface
    was drawn), or ``None`` when ``grid`` is ``None`` (ranks other than the gathering one).
    """
    if grid is None:
        return None
    import pyvista as pv

    disp = _display_grid(grid, eta, "plot_view_3d")
    b = disp.bounds
    height = int(0.8 * width)
    scale = width / 1200.0
    p = _plotter(width, height)

    metal = iso_surface(disp, eta)
    gbs = iso_surface(disp, beta) if beta else None
    if metal is not None:
        p.add_mesh(metal, color=METAL_COLOUR, smooth_shading=True, specular=0.4, specular_power=20.0)
    if gbs is not None:
        p.add_mesh(gbs, color=GB_COLOUR, opacity=0.3, smooth_shading=True, ambient=0.3, diffuse=0.7)
    if electrode:
        face = pv.Rectangle([(b[0], b[2], b[4]), (b[0], b[3], b[4]), (b[0], b[3], b[5])])
        p.add_mesh(face, color=ELECTRODE_COLOUR, opacity=0.18, lighting=False)
    p.add_mesh(disp.outline(), color="black", line_width=max(1.0, 1.5 * scale), lighting=False)

    size = max(b[1] - b[0], b[3] - b[2], b[5] - b[4])
    centre = np.array([0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3]), 0.5 * (b[4] + b[5])])
    direction = np.array([0.55, -1.35, 0.8])
    direction /= np.linalg.norm(direction)
    p.camera.focal_point = tuple(centre)
    p.camera.position = tuple(centre + 3.2 * size * direction)
    p.camera.up = (0.0, 0.0, 1.0)
    p.camera.view_angle = 30.0
    p.reset_camera()
    p.camera.zoom(0.92)  # room for the tick labels and axis titles outside the box

    ren = p.renderer
    font = lambda base: int(round(base * scale))  # noqa: E731
    _axes(p, b, font, line_width=max(1.0, 1.5 * scale))
    if title:
        draw_text(ren, title, (0.5, 0.96), font(20), v="top")
    lines = [
        ("Na metal, η = 0.5" if metal is not None else "no metal (η < 0.5 everywhere)", METAL_COLOUR),
        ("grain boundaries, β = 0.5", GB_COLOUR) if gbs is not None else None,
        (f"electrode, x = {b[0]:g} µm", ELECTRODE_COLOUR) if electrode else None,
    ]
    y = 0.9 if title else 0.95  # top left, where the box leaves room
    for text, colour in [ln for ln in lines if ln]:
        # the square in the surface's colour, the words in black
        square = draw_text(ren, "■", (0.03, y), font(18), h="left", v="top")
        square.GetTextProperty().SetColor(*_darker(colour))
        draw_text(ren, text, (0.055, y), font(16), h="left", v="top")
        y -= 0.045

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p.screenshot(str(path))
    p.close()
    return {"path": path, "metal": metal is not None, "gb": gbs is not None}


def _darker(colour, factor: float = 0.85) -> tuple[float, float, float]:
    """Flat legend squares look lighter than the shaded surfaces they stand for."""
    return tuple(factor * c for c in colour)


def _axis_ticks(lo: float, hi: float) -> np.ndarray:
    from matplotlib import ticker

    t = np.asarray(ticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi))
    eps = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    t = t[(t >= lo - eps) & (t <= hi + eps)]
    t[np.abs(t) < eps] = 0.0
    return t


def _axes(p, b, font, line_width: float) -> None:
    """Ticks, tick labels and titles (µm) on the three box edges nearest the viewer of
    :func:`plot_view_3d`'s camera: x along the front bottom edge, y along the right bottom
    edge, z up the front left edge. Drawn by hand: VTK's cube axes put their 2D labels on
    the axis lines, and their 3D text lacks the µ glyph or scales badly."""
    import pyvista as pv

    ren = p.renderer
    size = max(b[1] - b[0], b[3] - b[2], b[5] - b[4])
    tick, gap = 0.02 * size, 0.045 * size
    segments = []
    for x in _axis_ticks(b[0], b[1]):
        segments.append(((x, b[2], b[4]), (x, b[2] - tick, b[4])))
        draw_text(ren, f"{x:g}", (x, b[2] - gap, b[4] - 0.5 * gap), font(14), world=True, v="top")
    for y in _axis_ticks(b[2], b[3]):
        segments.append(((b[1], y, b[4]), (b[1] + tick, y, b[4])))
        draw_text(ren, f"{y:g}", (b[1] + gap, y, b[4]), font(14), world=True, h="left")
    for z in _axis_ticks(b[4], b[5]):
        segments.append(((b[0], b[2], z), (b[0] - tick, b[2], z)))
        draw_text(ren, f"{z:g}", (b[0] - gap, b[2], z), font(14), world=True, h="right")
    xm, ym, zm = 0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3]), 0.5 * (b[4] + b[5])
    draw_text(ren, "x (µm)", (xm, b[2] - 3.2 * gap, b[4] - 1.6 * gap), font(17), world=True, v="top")
    draw_text(ren, "y (µm)", (b[1] + 3.2 * gap, ym, b[4]), font(17), world=True, h="left")
    draw_text(ren, "z (µm)", (b[0] - 3.5 * gap, b[2], zm), font(17), world=True, h="center", angle=90.0)
    ticks = pv.merge([pv.Line(a, c) for a, c in segments]) if segments else None
    if ticks is not None:
        p.add_mesh(ticks, color="black", line_width=line_width, lighting=False)


def _point_field(mesh, name: str) -> np.ndarray | None:
    """``name`` at the points (cell fields, e.g. tagged beta, averaged to them)."""
    if name in mesh.point_data:
        return np.asarray(mesh.point_data[name], dtype=float)
    if name in mesh.cell_data:
        return np.asarray(mesh.cell_data_to_point_data().point_data[name], dtype=float)
    return None


def dendrite_slice(grid, eta: str = "eta", beta: str = "beta") -> tuple[int, float] | None:
    """(axis, position) of the slice that shows a GB deposit: through the metal point that
    is deepest (largest x) inside a GB, normal to y or z, whichever cuts the GB layers
    most nearly across (the smaller share of GB points within a cell of the plane).
    None without metal inside a GB."""
    e, b = _point_field(grid, eta), _point_field(grid, beta)
    if e is None or b is None:
        return None
    x = np.asarray(grid.points)
    inside = (e > 0.5) & (b > 0.5)
    if not inside.any():
        return None
    tip = x[inside][np.argmax(x[inside, 0])]
    span = np.ptp(x, axis=0)
    band = 0.02 * float(span.max())
    shares = []
    for axis in (1, 2):
        near = np.abs(x[:, axis] - tip[axis]) <= band
        shares.append((float((b[near] > 0.5).mean()) if near.any() else 1.0, axis))
    _, axis = min(shares)
    return axis, float(tip[axis])


def plot_dendrite_3d(
    grid,
    path,
    *,
    eta: str = "eta",
    beta: str = "beta",
    title: str | None = None,
    width: int = 1800,
) -> dict | None:
    """Two panels: the perspective view of :func:`plot_view_3d` (the eta = 0.5 surface among
    the GB layers), and the slice of :func:`dendrite_slice` (through the deepest metal in a
    GB, across the GB), coloured by eta with the eta = 0.5 line (black) and the GB's
    beta = 0.5 lines (blue). The slice's plane is drawn in the 3D view as a thin frame.
    Returns ``{"path", "metal", "gb", "slice"}`` (``slice``: (axis, position in µm) or None),
    or ``None`` when ``grid`` is ``None``."""
    if grid is None:
        return None
    import pyvista as pv

    disp = _display_grid(grid, eta, "plot_dendrite_3d")
    b = disp.bounds
    height = int(0.42 * width)
    scale = width / 1800.0
    font = lambda base: int(round(base * scale))  # noqa: E731
    p = _plotter(width, height, shape=(1, 2), border=False)

    # left: the metal among the GB layers
    p.subplot(0, 0)
    metal = iso_surface(disp, eta)
    gbs = iso_surface(disp, beta) if beta else None
    if metal is not None:
        p.add_mesh(metal, color=METAL_COLOUR, smooth_shading=True, specular=0.4, specular_power=20.0)
    if gbs is not None:
        p.add_mesh(gbs, color=GB_COLOUR, opacity=0.3, smooth_shading=True, ambient=0.3, diffuse=0.7)
    face = pv.Rectangle([(b[0], b[2], b[4]), (b[0], b[3], b[4]), (b[0], b[3], b[5])])
    p.add_mesh(face, color=ELECTRODE_COLOUR, opacity=0.18, lighting=False)
    p.add_mesh(disp.outline(), color="black", line_width=max(1.0, 1.5 * scale), lighting=False)
    cut = dendrite_slice(disp, eta, beta)
    if cut is not None:
        axis, pos = cut
        corners = [[b[0], b[2], b[4]], [b[1], b[2], b[4]], [b[1], b[3], b[5]], [b[0], b[3], b[5]]]
        corners = np.array(corners, dtype=float)
        other = 2 if axis == 1 else 1
        corners[:, axis] = pos
        corners[:, other] = [b[2 * other], b[2 * other], b[2 * other + 1], b[2 * other + 1]]
        frame = pv.lines_from_points(np.vstack([corners, corners[:1]]))
        p.add_mesh(frame, color="black", line_width=max(1.0, 1.2 * scale), lighting=False)
    size = max(b[1] - b[0], b[3] - b[2], b[5] - b[4])
    centre = np.array([0.5 * (b[0] + b[1]), 0.5 * (b[2] + b[3]), 0.5 * (b[4] + b[5])])
    direction = np.array([0.55, -1.35, 0.8])
    direction /= np.linalg.norm(direction)
    p.camera.focal_point = tuple(centre)
    p.camera.position = tuple(centre + 3.2 * size * direction)
    p.camera.up = (0.0, 0.0, 1.0)
    p.camera.view_angle = 30.0
    p.reset_camera()
    p.camera.zoom(0.92)
    _axes(p, b, font, line_width=max(1.0, 1.5 * scale))
    ren = p.renderer
    y = 0.93
    legend = [
        ("Na metal, η = 0.5" if metal is not None else "no metal (η < 0.5 everywhere)", METAL_COLOUR),
        ("grain boundaries, β = 0.5", GB_COLOUR),
        (f"electrode, x = {b[0]:g} µm", ELECTRODE_COLOUR),
    ]
    if gbs is None:
        del legend[1]
    for text, colour in legend:
        square = draw_text(ren, "■", (0.03, y), font(18), h="left", v="top")
        square.GetTextProperty().SetColor(*_darker(colour))
        draw_text(ren, text, (0.065, y), font(16), h="left", v="top")
        y -= 0.06

    # right: the slice across the GB through the deepest GB metal
    p.subplot(0, 1)
    label = "no metal in a GB: no slice"
    if cut is not None:
        axis, pos = cut
        normal = (0.0, 1.0, 0.0) if axis == 1 else (0.0, 0.0, 1.0)
        src = disp if eta in disp.point_data else disp.cell_data_to_point_data()
        sl = src.slice(normal=normal, origin=(b[0], pos, pos))
        if sl.n_points:
            p.add_mesh(
                sl,
                scalars=eta,
                cmap="viridis",
                clim=(0.0, 1.0),
                lighting=False,
                scalar_bar_args={
                    "title": "η",
                    "vertical": True,
                    "position_x": 0.88,
                    "position_y": 0.15,
                    "height": 0.7,
                    "title_font_size": font(18),
                    "label_font_size": font(14),
                },
            )
            line = sl.contour([0.5], scalars=eta)
            if line.n_points:
                p.add_mesh(line, color="black", line_width=max(1.5, 2.5 * scale), lighting=False)
            bsl = _point_field(sl, beta)
            if bsl is not None and np.nanmin(bsl) < 0.5 < np.nanmax(bsl):
                sl.point_data["_beta"] = bsl
                gl = sl.contour([0.5], scalars="_beta")
                if gl.n_points:
                    p.add_mesh(gl, color=GB_COLOUR, line_width=max(1.5, 2.5 * scale), lighting=False)
            p.add_mesh(sl.outline(), color="black", line_width=max(1.0, 1.2 * scale), lighting=False)
            p.enable_parallel_projection()
            c = np.array(sl.center)
            view = np.array(normal)
            p.camera.focal_point = tuple(c)
            p.camera.position = tuple(c - 3 * size * view if axis == 1 else c + 3 * size * view)
            p.camera.up = (0.0, 0.0, 1.0) if axis == 1 else (0.0, 1.0, 0.0)
            p.reset_camera()
            p.camera.zoom(0.9)
        name = "y" if axis == 1 else "z"
        up = "z" if axis == 1 else "y"
        label = f"slice {name} = {pos:.3g} µm across the GB (x to the right, {up} up): η; η = 0.5 black, β = 0.5 blue"
    draw_text(p.renderer, label, (0.5, 0.06), font(16), v="bottom")
    if title:
        p.subplot(0, 0)
        draw_text(p.renderer, title, (0.03, 0.99), font(20), h="left", v="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p.screenshot(str(path))
    p.close()
    return {"path": path, "metal": metal is not None, "gb": gbs is not None, "slice": cut}
