"""Optional post-processing of a finished run: final_state.png, voltage.png, eta.gif.

It runs after summary.json, final_state.vtu and the final checkpoint are written, each
step in a child process with a time limit (``NZSP_POSTPROCESS_TIME_LIMIT`` seconds,
default 600). A step that fails, crashes (a VTK abort) or hangs (a file a killed process
left behind) is logged and the run keeps its exit status: the results are complete
before any of it starts. In-process rendering could be neither interrupted (a thread
blocked in C ignores Python signals) nor stopped from aborting the run.

The child reads what the run wrote (final_state.vtu, timeseries.csv, fields/*.bp), so
``python -m nzsp_fem.io.postprocess STEP OUTDIR OPTIONS_JSON`` also works by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .offscreen import _die_with_parent

#: Seconds per step unless NZSP_POSTPROCESS_TIME_LIMIT says otherwise.
TIME_LIMIT_S = 600.0
#: The child's command; STEP, OUTDIR and the options follow.
CHILD = [sys.executable, "-m", "nzsp_fem.io.postprocess"]

_LABELS = {"final-figure": "final_state.png", "voltage": "voltage.png", "animation": "animation"}


def time_limit() -> float:
    try:
        return float(os.environ.get("NZSP_POSTPROCESS_TIME_LIMIT", TIME_LIMIT_S))
    except ValueError:
        return TIME_LIMIT_S


def _child_environment() -> dict:
    """Without the MPI job's variables: under mpirun the child would try to join the job."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMIX_", "PRTE_"))
        and not (k.startswith("OMPI_") and not k.startswith(("OMPI_MCA_", "OMPI_ALLOW")))
    }


def run_step(step: str, outdir: Path, options: dict, log) -> bool:
    """Run one step in a child process (rank 0 only); log its outcome. True if it worked."""
    label, limit = _LABELS.get(step, step), time_limit()
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            [*CHILD, step, str(outdir), json.dumps(options)],
            env=_child_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a timeout stops all of it
            preexec_fn=_die_with_parent,  # and it does not outlive a run that is killed meanwhile
        )
    except OSError as exc:
        log(f"{label} not written: {exc}", 0)
        return False
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log(f"{label} not written: stopped at its time limit of {limit:.0f} s (NZSP_POSTPROCESS_TIME_LIMIT)", 0)
        return False
    for line in out.splitlines():
        log(line, 2)
    if proc.returncode != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if proc.returncode < 0:
            cause = f"the drawing process died ({signal.Signals(-proc.returncode).name})"
        else:
            cause = lines[-1] if lines else f"exit status {proc.returncode}"
        log(f"{label} not written: {cause}", 0)
        return False
    log(f"{label}: {time.perf_counter() - t0:.1f} s", 2)
    return True


# ------------------------------------------------------------------------------------------
# the child
# ------------------------------------------------------------------------------------------
def _final_figure(outdir: Path, options: dict) -> None:
    import pyvista as pv

    from .drawing import read_nuclei
    from .figures import plot_fields
    from .figures3d import plot_dendrite_3d, plot_view_3d
    from .output_fields import field_panels

    grid = pv.read(outdir / "final_state.vtu")
    figures, title = outdir / "figures", options["title"]
    nuclei = read_nuclei(outdir / "nuclei.csv")  # inserted by discrete nucleation, if on
    plot_fields(
        grid,
        field_panels([grid]),
        figures / "final_state.png",
        title=title,
        contour="eta",
        z=options["z"],
        nuclei=nuclei,
    )
    if options.get("dim") == 3:
        plot_view_3d(grid, figures / "final_state_3d.png", title=title)
        plot_dendrite_3d(grid, figures / "final_dendrite_3d.png", title=title)


def _voltage(outdir: Path, options: dict) -> None:
    from .protocol_figures import plot_voltage

    plot_voltage(outdir / "timeseries.csv", outdir / "figures" / "voltage.png", options["name"], options["events"])


def _animation(outdir: Path, options: dict) -> None:
    from .animation import unclosed_series, write_animation

    for series in (p for p in unclosed_series(outdir) if p.name.startswith("nodal")):  # what eta.gif reads
        print(f"animation: fields/{series.name} was not closed (its run was killed): read up to its last complete step")
    path, frames = write_animation(outdir, title=options["title"])
    print(f"animation: {path} ({frames} frames)")


STEPS = {"final-figure": _final_figure, "voltage": _voltage, "animation": _animation}


def main(argv: list[str]) -> int:
    step, outdir, options = argv[0], Path(argv[1]), json.loads(argv[2])
    try:
        STEPS[step](outdir, options)
    except Exception as err:  # noqa: BLE001 - reported to the parent as one line
        print(f"{type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
