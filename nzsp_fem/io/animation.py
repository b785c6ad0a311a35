"""An animated GIF of a run's phase field (and optionally |i|) over its output times, read
back from the run's own VTX outputs (``fields/nodal*.bp``, ``fields/cells*.bp``).

Reading the outputs rather than keeping images during the run means any results
directory can be animated afterwards (``nzsp-fem animate DIR``), including runs made
before this existed and restarted runs, whose later series (``nodal-restart1.bp``)
replace the frames they recomputed. Serial: call it on one rank.

Each frame is a :func:`figures.plot_fields` figure with colour limits fixed over all
frames, so colours compare between frames.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np
import yaml

from . import checkpoint  # noqa: F401  (selects adios2's MPI bindings before _read_steps imports it)
from .drawing import data_range, finish_clim
from .figures import Panel, plot_fields

__all__ = ["AnimationError", "read_frames", "write_animation", "animate_results", "unclosed_series"]

ETA = "eta"
CURRENT = "current_density_magnitude"
# VTX writes Lagrange cell types; the degree-1 ones are VTK's linear cells.
# Lagrange type: (nodes per cell, linear type)
_LINEAR = {69: (3, 5), 70: (4, 9), 71: (4, 10), 72: (8, 12)}
_SERIES = re.compile(r"^(?P<group>[a-z_]+)(?:-restart(?P<k>\d+))?\.bp$")


class AnimationError(Exception):
    """A results directory that cannot be animated (no VTX fields, no eta)."""


def _series(fields_dir: Path, group: str) -> list[Path]:
    """``group.bp`` then ``group-restart1.bp``, ``group-restart2.bp``, ... in order."""
    found = []
    for p in fields_dir.glob(f"{group}*.bp"):
        m = _SERIES.match(p.name)
        if m and m["group"] == group:
            found.append((int(m["k"] or 0), p))
    return [p for _, p in sorted(found)]


def writer_active(path: Path) -> bool:
    """True if the BP4 series' writer never closed it (killed): the index header's
    "writer active" byte (offset 38 of md.idx) is still set."""
    try:
        with open(path / "md.idx", "rb") as f:
            header = f.read(64)
    except OSError:
        return False
    return len(header) > 38 and header[38] != 0


def unclosed_series(outdir) -> list[Path]:
    """The run's VTX series whose writer was killed (read up to their last complete step)."""
    fields = Path(outdir) / "fields"
    return sorted(p for p in fields.glob("*.bp") if writer_active(p)) if fields.is_dir() else []


def _read_steps(path: Path, names: list[str]) -> list[tuple[float, list[dict]]]:
    """Every step of one VTX file: (t, one dict per rank block with geometry, connectivity,
    cell type and the requested arrays that the file has).

    Random access, not a stream: a streaming reader of a series whose writer was killed
    waits forever for the step that never comes; random access reads the steps that were
    completed (their index entries are written last) and stops there."""
    import adios2

    steps = []
    with adios2.FileReader(str(path)) as reader:
        available = reader.available_variables()
        if "step" not in available:
            return []
        count = int(available["step"]["AvailableStepsCount"])
        present = [n for n in names if n in available]
        for k in range(count):
            at = [k, 1]
            t = float(np.asarray(reader.read("step", step_selection=at)).ravel()[0])
            cell_type = int(np.asarray(reader.read("types", step_selection=at)).ravel()[0])
            blocks = []
            for b in range(len(reader.engine.blocks_info("geometry", k))):
                block = {
                    "geometry": np.asarray(reader.read("geometry", block_id=b, step_selection=at)),
                    "connectivity": np.asarray(reader.read("connectivity", block_id=b, step_selection=at)),
                    "type": cell_type,
                }
                for n in present:
                    block[n] = np.asarray(reader.read(n, block_id=b, step_selection=at)).ravel()
                blocks.append(block)
            steps.append((t, blocks))
    return steps


def _merge_series(paths: list[Path], names: list[str]) -> list[tuple[float, list[dict]]]:
    """The steps of a run's series in time order; a restart's series wins from its first
    time on (the run recomputed those times from an earlier checkpoint)."""
    merged: list[tuple[float, list[dict]]] = []
    for path in paths:
        steps = _read_steps(path, names)
        if steps:
            t0 = steps[0][0]
            merged = [s for s in merged if s[0] < t0 * (1 - 1e-12)] + steps
    return merged


def _grid(blocks: list[dict], cell_blocks: list[dict] | None, length_scale: float):
    """One pyvista grid of all rank blocks. Each rank wrote its own copy of the nodes on
    partition boundaries and of its ghost cells: coincident nodes are merged and repeated
    cells kept once, or the partition boundaries would be outlined as domain edges."""
    import pyvista as pv

    points, cells, point_data, cell_data = [], [], {}, {}
    offset = 0
    for i, block in enumerate(blocks):
        conn = block["connectivity"].astype(np.int64)[:, 1:]
        cells.append(conn + offset)
        points.append(block["geometry"])
        offset += len(block["geometry"])
        for name, values in block.items():
            if name not in ("geometry", "connectivity", "type"):
                point_data.setdefault(name, []).append(values)
        for name, values in (cell_blocks[i] if cell_blocks is not None else {}).items():
            # same rank, same local cell order as the nodal file (only node numbering differs)
            if name not in ("geometry", "connectivity", "type") and len(values) == len(conn):
                cell_data.setdefault(name, []).append(values)
    xyz = np.vstack(points).astype(float)
    tol = 1e-9 * max(float(np.ptp(xyz, axis=0).max()), 1e-300)
    _, first, node = np.unique(np.round(xyz / tol), axis=0, return_index=True, return_inverse=True)
    node = node.ravel()
    conn = node[np.vstack(cells)]
    _, keep = np.unique(np.sort(conn, axis=1), axis=0, return_index=True)
    keep = np.sort(keep)
    conn = conn[keep]
    vtk_type = blocks[0]["type"]
    if vtk_type in _LINEAR and _LINEAR[vtk_type][0] == conn.shape[1]:
        vtk_type = _LINEAR[vtk_type][1]
    cell_array = np.hstack([np.full((len(conn), 1), conn.shape[1]), conn]).ravel()
    grid = pv.UnstructuredGrid(cell_array, np.full(len(conn), vtk_type, dtype=np.uint8), xyz[first])
    for name, parts in point_data.items():
        grid.point_data[name] = np.concatenate(parts)[first]
    for name, parts in cell_data.items():
        if len(parts) == len(blocks):
            grid.cell_data[name] = np.concatenate(parts)[keep]
    grid.field_data["metres_per_unit"] = np.array([length_scale])
    grid.field_data["topological_dimension"] = np.array([3 if vtk_type in (10, 12, 71, 72) else 2])
    return grid


def _length_scale(outdir: Path) -> float:
    """Metres per mesh unit, from the run's resolved config (VTX stores mesh units)."""
    try:
        resolved = yaml.safe_load((outdir / "config.resolved.yaml").read_text()) or {}
        return float(resolved["scales"]["length"])
    except (OSError, KeyError, TypeError, ValueError):
        return 1e-6


def read_frames(outdir, current: bool = False) -> list[tuple[float, object]]:
    """(t, pyvista grid with eta, and |i| as cell data if ``current``) at every output time
    of the run in ``outdir``, in time order."""
    outdir = Path(outdir)
    nodal = _series(outdir / "fields", "nodal")
    if not nodal:
        raise AnimationError(f"{outdir}: no VTX fields (fields/nodal.bp) to animate")
    steps = _merge_series(nodal, [ETA])
    if not steps or ETA not in steps[0][1][0]:
        raise AnimationError(f"{outdir / 'fields'}: the VTX fields have no eta")
    cell_steps = {}
    if current:
        for t, blocks in _merge_series(_series(outdir / "fields", "cells"), [CURRENT]):
            cell_steps[round(t, 15)] = blocks
    scale = _length_scale(outdir)
    return [(t, _grid(blocks, cell_steps.get(round(t, 15)), scale)) for t, blocks in steps]


def _panels(frames: list, current: bool) -> list[Panel]:
    from .output_fields import field_panels

    known = {p.field: p for p in field_panels()}
    panels = [dataclasses.replace(known[ETA], clim=(0.0, 1.0))]
    if current:
        values = [np.asarray(g.cell_data[CURRENT]) for _, g in frames if CURRENT in g.cell_data]
        if not values:
            raise AnimationError("the VTX cell fields have no current_density_magnitude")
        # one log scale for all frames: the tip's current grows by orders of magnitude
        clim = finish_clim(data_range(np.concatenate(values), True), True)
        panels.append(dataclasses.replace(known[CURRENT], clim=clim, log=True))
    return panels


def write_animation(
    outdir, path=None, *, current: bool = False, frame_ms: int = 500, width: int = 600, title: str | None = None
) -> tuple[Path, int]:
    """Write the GIF (default ``outdir/figures/eta.gif``, or ``eta_current.gif`` with
    ``current``); returns its path and number of frames (one per output time)."""
    from PIL import Image

    outdir = Path(outdir)
    frames = read_frames(outdir, current)
    panels = _panels(frames, current)
    name = title or outdir.name
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (t, grid) in enumerate(frames):
            png = Path(tmp) / f"frame{k:05d}.png"
            plot_fields(grid, panels, png, title=f"{name}, t = {t:.4g} s", width=width, contour=ETA)
            with Image.open(png) as im:
                images.append(im.convert("RGB"))
    path = Path(path) if path else outdir / "figures" / ("eta_current.gif" if current else "eta.gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path, len(images)


def animate_results(directory, path=None, **options) -> list[tuple[Path, int]]:
    """Animate one run, or each case of a study (``case-*/`` with fields)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AnimationError(f"{directory}: no such results directory")
    if (directory / "fields").is_dir():
        return [write_animation(directory, path, **options)]
    cases = sorted(p for p in directory.glob("case-*") if (p / "fields").is_dir())
    if not cases:
        raise AnimationError(f"{directory}: no VTX fields (fields/nodal.bp) and no study cases to animate")
    if path is not None:
        raise AnimationError(f"{directory}: a study has one animation per case; leave out -o")
    return [write_animation(case, **options) for case in cases]
