"""The animation of a run (io/animation.py): figures/eta.gif written at the end of a run
(``output.animation``), and ``nzsp-fem animate DIR`` on any results directory, both read
back from the run's VTX fields.

One tiny run (0.4 x 0.2 um bicrystal, no mechanics, outputs at 10, 20, 30 us, in which
the nucleus grows); serially and under ``mpirun -n 2`` (then the VTX files hold one block
per rank, which the reader must join without seams). Files are checked on rank 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import child_environment

from mpi4py import MPI

from nzsp_fem.config import parse_config
from nzsp_fem.io import animation
from nzsp_fem.run import run_single

COMM = MPI.COMM_WORLD
US = 1e-6
OUTPUT_TIMES = [0.0, 10 * US, 20 * US, 30 * US]  # t = 0 is written too

CONFIG = {
    "name": "anim",
    "domain": {"size": ["0.4 um", "0.2 um"]},
    "microstructure": {"grains": 2, "seeds": [["0.1 um", "0.1 um"], ["0.3 um", "0.1 um"]]},
    "mesh": {"size_grain": "40 nm", "size_gb": "25 nm", "size_nucleus": "30 nm"},
    "nuclei": {"positions": [[0, "0.1 um"]], "radius": "40 nm"},
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m"},
    "mechanics": {"enabled": False},
    "time": {"t_end": "30 us", "dt_initial": "1 us", "dt_max": "5 us", "n_outputs": 3},
    "output": {"figures": True, "animation": True, "verbosity": 0},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = str(tmp_path_factory.mktemp("anim")) if COMM.rank == 0 else None
    base = Path(COMM.bcast(base, root=0))
    cfg = parse_config(CONFIG | {"mesh": CONFIG["mesh"] | {"cache_dir": str(base / "meshes")}})
    summary = run_single(cfg, base / "run", COMM)
    assert summary["status"] == "completed"
    return base / "run"


def gif_frames(path: Path) -> list[np.ndarray]:
    frames = []
    with Image.open(path) as im:
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
    return frames


def below_title(frame: np.ndarray) -> np.ndarray:
    """The maps and colour bars, without the title line (which always differs)."""
    return frame[frame.shape[0] // 10 :]


def test_run_writes_one_frame_per_output_time(run_dir):
    """figures/eta.gif of the run: one frame per output time (t = 0 and the three), each
    showing a different phase field. Catches the switch ignored, frames missing or
    repeated, and frames that differ only in their title (the same state drawn again)."""
    if COMM.rank:
        return
    path = run_dir / "figures" / "eta.gif"
    assert path.exists(), (run_dir / "run.log").read_text()
    frames = gif_frames(path)
    assert len(frames) == len(OUTPUT_TIMES)
    for a, b in zip(frames, frames[1:]):
        assert np.abs(below_title(a) - below_title(b)).sum(axis=2).astype(bool).mean() > 0.002


def test_frames_are_the_output_times_without_seams(run_dir):
    """The frames' times are the VTX output times; the joined grid has each mesh cell
    once (the rank blocks overlap by their ghost cells) and the nucleus grows from frame
    to frame. Catches duplicated ghost cells (seams outlined as boundaries on 2 ranks) and
    a reader that returns the same step each time."""
    if COMM.rank:
        return
    frames = animation.read_frames(run_dir, current=True)
    assert [t for t, _ in frames] == pytest.approx(OUTPUT_TIMES, rel=1e-9, abs=1e-15)
    cells = int(re.search(r"mesh: (\d+) cells", (run_dir / "run.log").read_text())[1])
    metal = []
    for _, grid in frames:
        assert grid.n_cells == cells
        assert "current_density_magnitude" in grid.cell_data
        eta = np.asarray(grid.point_data["eta"])
        assert len(eta) == grid.n_points and 0 <= eta.min() and eta.max() <= 1 + 1e-6
        metal.append(float(np.mean(eta)))
    assert all(b > a for a, b in zip(metal, metal[1:])), metal
    edges = frames[-1][1].extract_feature_edges(
        boundary_edges=True, feature_edges=False, manifold_edges=False, non_manifold_edges=False
    )
    lo, hi = np.asarray(edges.points).min(axis=0), np.asarray(edges.points).max(axis=0)
    interior = (edges.points[:, 0] > lo[0] + 1e-6) & (edges.points[:, 0] < hi[0] - 1e-6)
    interior &= (edges.points[:, 1] > lo[1] + 1e-6) & (edges.points[:, 1] < hi[1] - 1e-6)
    assert not interior.any(), "boundary edges inside the domain: rank blocks not joined"


def test_restarted_series_replace_the_frames_they_recomputed(monkeypatch):
    """nodal.bp then nodal-restart1.bp: a restart from an earlier checkpoint rewrote 20 us,
    so the first series' 20 and 25 us frames go and the restart's come in their place."""
    series = {"nodal.bp": [0.0, 10.0, 20.0, 25.0], "nodal-restart1.bp": [20.0, 30.0]}
    monkeypatch.setattr(animation, "_read_steps", lambda path, names: [(t, path.name) for t in series[path.name]])
    merged = animation._merge_series([Path("nodal.bp"), Path("nodal-restart1.bp")], ["eta"])
    assert merged == [(0.0, "nodal.bp"), (10.0, "nodal.bp"), (20.0, "nodal-restart1.bp"), (30.0, "nodal-restart1.bp")]


@pytest.mark.serial
def test_animate_command_with_current(run_dir, tmp_path):
    """``nzsp-fem animate DIR --current -o FILE``: exit 0, the file has one frame per
    output time with eta and |i| (a taller frame than eta alone); a directory without
    fields is a one-line error."""
    out = tmp_path / "both.gif"
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "nzsp_fem", "animate", *args],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    r = run(str(run_dir), "--current", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"{out}: {len(OUTPUT_TIMES)} frames" in r.stdout
    both, eta_only = gif_frames(out), gif_frames(run_dir / "figures" / "eta.gif")
    assert len(both) == len(OUTPUT_TIMES)
    assert both[0].shape[0] > 1.5 * eta_only[0].shape[0]  # two panels stacked for this wide domain
    r = run(str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("nzsp-fem: error: ") and "no VTX fields" in r.stderr
