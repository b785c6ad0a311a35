"""Everything one run writes into its directory: log, resolved config, VTX fields,
timeseries.csv, probes.csv, figures, checkpoints, final_state.vtu and summary.json.

The time loop (nzsp_fem.run.Simulation) calls these through its standard observers; rank 0 writes text files, collective
writers are called on every rank. Every write is checked on every rank together: a full
disk, a quota, a read-only, unwritable or removed output directory stops the run on all
ranks with one StorageError naming the path, the cause and the checkpoint to resume from
(a rank that raised alone would leave the others waiting in the next collective call).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from ..config import Config
from ..problem import CoupledProblem, Diagnostics, DiagnosticsEvaluator
from ..solver.state import RunState
from . import checkpoint as ckpt
from .drawing import read_nuclei
from .figures import plot_fields, plot_initial_state
from .figures3d import nuclei_plane_z, plot_view_3d
from .output_fields import OutputFields, field_panels, gather_state
from .postprocess import run_step
from .probes import ProbeSeries
from .rundir import (
    TIMESERIES_COLUMNS,
    CsvTable,
    FieldWriter,
    OutputError,
    RunLog,
    release_directory,
    write_json,
    write_yaml,
)
from .storage import NoSpace, StorageError, describe, is_storage_error

#: summary.json keys about the run itself; the physical ones are Diagnostics.names("summary").
RUN_SUMMARY_KEYS = [
    "status",
    "reason",
    "t_final",
    "charge_passed_C",
    "steps",
    "newton_iterations",
    "failed_attempts",
    "wall_time_s",
    "mpi_size",
    "dofs",
    "short_circuit",
    "short_circuit_time_s",
    "critical_current_density_A_m2",
    "voltage_collapse_time_s",
    "restarts",
]


class RunRecord:
    def __init__(self, cfg: Config, outdir: Path, comm):
        self.cfg, self.outdir, self.comm = cfg, outdir, comm
        self.log = RunLog(outdir / "run.log", comm, cfg.output.verbosity)
        self.checkpoints = outdir / "checkpoints"
        self.wall0 = time.perf_counter()
        self.t, self.steps = 0.0, 0
        self.writer = self.table = self.probes = None
        # A field output refused for lack of space: the checkpoint due at the same step is
        # still written if it fits (a restart needs it, not the fields), then the run stops.
        self._deferred: str | None = None
        # The directory as it was made: one removed (or replaced) under the run is noticed.
        self._identity = comm.bcast(_identity(outdir) if comm.rank == 0 else None, root=0)

    # Restart ------------------------------------------------------------------------------
    def resume(self, problem: CoupledProblem, restart: bool) -> dict | None:
        """Read the latest intact checkpoint into the problem; its run metadata, or None
        (fresh run). A checkpoint whose files differ from the record it wrote (cut short,
        damaged) is passed over, with a warning naming the file, for the one before it."""
        comm, resolved = self.comm, self.cfg.model_dump(mode="json")
        if not restart:
            self._checked(write_yaml, self.outdir / "config.resolved.yaml", resolved, comm)
            return None
        found = comm.bcast([str(p) for p in ckpt.restart_candidates(self.checkpoints)] if comm.rank == 0 else None)
        if not found:
            raise OutputError(f"--restart: no complete checkpoint in {self.checkpoints}")
        damaged, meta, resumed = [], None, None
        for resumed in map(Path, found):
            # Checked before ADIOS2 opens any of its files: it waits forever on a BP file cut short.
            fault = comm.bcast(ckpt.verify(resumed) if comm.rank == 0 else None, root=0)
            if fault is None:
                try:
                    meta = ckpt.read_checkpoint(resumed, problem.mesh, run_state_functions(problem), comm)
                    break
                except ckpt.CheckpointError as err:
                    fault = f"{resumed / 'fields.bp'} cannot be read ({err})"
                except (KeyError, ValueError) as err:
                    raise OutputError(f"--restart: {err}") from None
            damaged.append(fault)
            self.log(f"warning: {resumed.name} is damaged: {fault}; trying the checkpoint before it", 0)
        if meta is None:
            raise OutputError(f"--restart: no intact checkpoint in {self.checkpoints}: " + "; ".join(damaged))
        stored = meta.get("fields")
        if stored is not None:  # written before the ionic potential was named phi_i in both models
            stored = [["phi_i", *f[1:]] if f[0] == "phi" else f for f in stored]
        if stored is not None and stored != field_layout(problem):
            raise OutputError(
                f"--restart: {resumed.name} holds the fields {stored}, this config solves {field_layout(problem)}"
            )
        problem.after_restore()
        # The config of the original run stays; the restart's (it may carry --set) goes beside it.
        restarts = meta["run"].get("restarts", 0) + 1
        self._checked(write_yaml, self.outdir / f"config.resolved-restart{restarts}.yaml", resolved, comm)
        self.log(f"restarted from {resumed.name}: t={meta['run']['t']:.6e} s, step {meta['run']['steps']}")
        self.t, self.steps = meta["run"]["t"], meta["run"]["steps"]
        return meta["run"]

    # Outputs along the run ----------------------------------------------------------------
    def open(
        self, problem: CoupledProblem, diagnostics: DiagnosticsEvaluator, t_resumed: float | None, restarts: int
    ) -> None:
        cfg, comm = self.cfg, self.comm
        self.problem = problem
        self.figures_dir = self.outdir / "figures"
        fields_dir = self.outdir / "fields"
        resumed = t_resumed is not None
        # A restarted run writes new VTX series next to the old ones instead of truncating them.
        self.writer = FieldWriter(fields_dir, comm, suffix=f"-restart{restarts}" if resumed else "")
        self.fields = OutputFields(problem, diagnostics)

        def make_files():
            if comm.rank == 0:
                fields_dir.mkdir(exist_ok=True)
                self.figures_dir.mkdir(exist_ok=True)
            self.table = CsvTable(
                self.outdir / "timeseries.csv", TIMESERIES_COLUMNS, comm, append=resumed, keep_until=t_resumed
            )

        self._checked(make_files)
        self.probes = ProbeSeries(
            cfg.output.probes, self.fields, problem.scaling.length, self.outdir / "probes.csv", resumed, t_resumed
        )

    def write_fields(self, t: float) -> None:
        if self._deferred is None:
            self._checked(self.writer.write, self.fields.update(), t, defer=True)

    def figure(self, name: str, t: float, initial: bool = False) -> None:
        if not self.cfg.output.figures or self._deferred is not None:
            return
        grid = gather_state(self.fields)
        z = nuclei_plane_z(self.problem.poly.nuclei)  # 3D: the maps cut through the nuclei
        title = f"{self.cfg.name}, " + ("initial state" if initial else f"t = {t:.4g} s")

        def draw():
            if grid is None:
                return
            if initial:
                plot_initial_state(grid, self.figures_dir / name, z=z)
            else:
                nuclei = read_nuclei(self.outdir / "nuclei.csv")  # discrete nucleation's, if on
                panels = field_panels([grid])
                plot_fields(grid, panels, self.figures_dir / name, title=title, contour="eta", z=z, nuclei=nuclei)
            if self.problem.dim == 3 and initial:
                plot_view_3d(grid, self.figures_dir / name.replace(".png", "_3d.png"), title=title)

        self._checked(draw, optional=f"{name} not written")

    def step(self, t: float, dt: float, report, diag: Diagnostics, **columns) -> None:
        """One row of timeseries.csv; ``columns``: the protocol's (segment, applied current)."""
        if self._deferred is not None:
            self._fail(self._deferred)
        self.t, self.steps = t, self.steps + 1
        row = dict(
            vars(diag),
            t=t,
            dt=dt,
            newton_iterations=report.newton_iterations,
            linear_iterations=report.linear_iterations,
            error_estimate=report.error_estimate,
            interface_change=report.interface_change,
            **columns,
        )

        def write():
            self.table.row(row)
            self.probes.record(t)

        self._checked(write)

    def write_file(self, name: str, writer, *args, **kwargs) -> None:
        """``writer(outdir / name, *args, **kwargs)`` on every rank, checked like the run's
        own files (an observer's table, e.g. nuclei.csv)."""
        self._checked(writer, self.outdir / name, *args, **kwargs)

    def checkpoint(self, run_state: dict) -> None:
        if run_state["steps"] == getattr(self, "_last_checkpoint_step", None):
            return  # already written at this step (a periodic one on the last step)
        self._last_checkpoint_step = run_state["steps"]
        meta = {"run": run_state, "config_name": self.cfg.name, "fields": field_layout(self.problem)}
        self._checked(
            ckpt.write_checkpoint,
            self.checkpoints,
            self.problem.mesh,
            run_state_functions(self.problem),
            meta,
            self.comm,
            step=run_state["steps"],
        )
        if self._deferred is not None:
            self._fail(self._deferred)

    # End of run ---------------------------------------------------------------------------
    def close(self, run_state: RunState, status: str, reason: str | None, diag: Diagnostics) -> dict:
        """The results (fields, tables, final_state.vtu, summary.json; the final checkpoint
        is already written), then the optional post-processing, which cannot change them."""
        if self._deferred is not None:
            self._fail(self._deferred)
        self._checked(self._close_outputs)
        grid = gather_state(self.fields)  # None on ranks other than 0
        self._checked(_save_grid, grid, self.outdir / "final_state.vtu")
        summary = {
            "status": status,
            "reason": reason,
            "t_final": run_state.t,
            "charge_passed_C": run_state.charge_C,
            "steps": run_state.steps,
            "newton_iterations": run_state.newton_iterations,
            "failed_attempts": run_state.failed_attempts,
            "wall_time_s": time.perf_counter() - self.wall0,
            "mpi_size": self.comm.size,
            "dofs": self.problem.dofs,
            "short_circuit": run_state.short_circuit_time_s is not None,
            "short_circuit_time_s": run_state.short_circuit_time_s,
            "critical_current_density_A_m2": run_state.critical_current_density_A_m2,
            "voltage_collapse_time_s": run_state.voltage_collapse_time_s,
            "restarts": run_state.restarts,
        }
        summary.update({k: getattr(diag, k) for k in Diagnostics.names("summary")})
        self._checked(write_json, self.outdir / "summary.json", summary, self.comm)
        self.log(
            f"{status}: t={run_state.t:.4e} s in {run_state.steps} steps, "
            f"{run_state.newton_iterations} Newton iterations, {summary['wall_time_s']:.1f} s wall",
            0,
        )
        if reason == "signal" and self.cfg.output.figures:
            # A batch system that sent SIGTERM sends SIGKILL soon after: leave now.
            self.log("figures skipped after the signal (nzsp-fem animate DIR makes eta.gif later)", 0)
        elif self.comm.rank == 0:
            self._postprocess(summary)
        self.log.close()
        release_directory(self.outdir, self.comm)
        return summary

    def _close_outputs(self) -> None:
        self.writer.close()
        self.table.close()
        self.probes.close()

    def _postprocess(self, summary: dict) -> None:
        """Rank 0: the optional figures and the animation, each in a child process with a
        time limit (io/postprocess.py); a failure is logged and changes nothing else."""
        out = self.cfg.output
        if not out.figures:
            return
        title = f"{self.cfg.name}, t = {summary['t_final']:.4g} s"
        z = nuclei_plane_z(self.problem.poly.nuclei)
        run_step("final-figure", self.outdir, {"title": title, "z": z, "dim": self.problem.dim}, self.log)
        if self.cfg.protocol is not None:
            events = {
                "short circuit": summary["short_circuit_time_s"],
                "voltage collapse": summary["voltage_collapse_time_s"],
            }
            run_step("voltage", self.outdir, {"name": self.cfg.name, "events": events}, self.log)
        if out.animation:
            run_step("animation", self.outdir, {"title": self.cfg.name}, self.log)

    # Faults ---------------------------------------------------------------------------------
    def _checked(self, action, *args, optional: str | None = None, defer: bool = False, **kwargs):
        """Run a write on every rank; if it fails on any (or the directory is gone, or
        run.log could not be written), raise StorageError on all. ``optional``: other
        failures of this write are logged under that text and the run goes on. ``defer``:
        a write refused for lack of space (on every rank, before it began) stops the run
        at the next checkpoint, after writing it, or at the next step."""
        comm = self.comm
        error = comm.bcast(self._gone() if comm.rank == 0 else None, root=0)
        if error:
            self._fail(error)
        result, other = None, None
        try:
            result = action(*args, **kwargs)
        except NoSpace as err:
            if defer:
                self._deferred = str(err)
                self.log(f"not written: {err}; writing the checkpoint before stopping", 0)
            else:
                error = str(err)
        except StorageError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - sorted below, then raised on every rank
            if is_storage_error(err):
                error = describe(err, self.outdir)
            elif optional is None:
                raise
            else:
                other = f"{type(err).__name__}: {err}".splitlines()[0]
        errors = [e for e in comm.allgather(error) if e]
        if errors:
            self._fail(errors[0])
        if other:
            self.log(f"{optional}: {other}", 0)
        return result

    def _gone(self) -> str | None:
        """Rank 0: why nothing more can be written, found before trying (a removed output
        directory would be silently recreated by the next mkdir), or None."""
        if _identity(self.outdir) != self._identity:
            return f"output directory {self.outdir} was removed (or replaced) during the run"
        return self.log.failed

    def _fail(self, error: str):
        """Leave the results as they are, say what to resume from, raise on every rank."""
        for table in (self.table, getattr(self.probes, "table", None)):
            if table is not None:
                table.abandon()
        if self.writer is not None:
            self.writer.abandon()
        self.log(f"error: {error}", 4)  # run.log only, if it can still be written
        self.log.close()
        hint = None
        if self.comm.rank == 0:
            try:
                hint = self._resume_hint(error)
            except OSError:
                hint = None
        hint = self.comm.bcast(hint, root=0)
        release_directory(self.outdir, self.comm)
        raise StorageError(f"{error} (t = {self.t:.4g} s, step {self.steps}){hint or ''}")

    def _resume_hint(self, error: str) -> str:
        if "removed (or replaced)" in error:
            return ""
        ckpt.discard_unfinished(self.checkpoints)  # its space back; it was never complete
        # Checked, not assumed: the one the pointer names may be one a restart passed over.
        for found in ckpt.restart_candidates(self.checkpoints):
            if ckpt.verify(found) is None:
                return f"; {found.relative_to(self.outdir)} is intact: rerun with --restart once this is fixed"
        return "; no checkpoint was written: rerun with --overwrite once this is fixed"


def _identity(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


#: vtkErrorCode::OutOfDiskSpaceError (vtkErrorCode itself is not wrapped for Python).
_VTK_OUT_OF_DISK_SPACE = 20007


def _save_grid(grid, path: Path) -> None:
    """final_state.vtu (rank 0). VTK reports a failed write on stderr only, over several
    lines, and deletes the file; here it is an OSError."""
    if grid is None:
        return
    from vtkmodules.vtkCommonCore import vtkObject
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    writer = vtkXMLUnstructuredGridWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(grid)
    writer.SetDataModeToBinary()
    shown = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        ok = writer.Write()
    finally:
        vtkObject.SetGlobalWarningDisplay(shown)
    code = writer.GetErrorCode()
    if not ok or code:
        full = code == _VTK_OUT_OF_DISK_SPACE
        raise OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC if full else errno.EIO), str(path))


def run_state_functions(problem: CoupledProblem) -> dict:
    """Everything a restart needs besides t/dt/step: the state and the plastic history."""
    funcs = {"state": problem.w, "state_previous": problem.w_prev}
    if problem.plastic is not None:
        funcs["plastic_strain_tensor"] = problem.plastic.eps_p
        funcs["equivalent_plastic_strain"] = problem.plastic.p
    return funcs


def field_layout(problem: CoupledProblem) -> list[list]:
    """The unknowns of the state as [name, shape, degree, logarithmic], from the field table:
    a restart refuses a checkpoint whose mixed space has another layout."""
    return [[f.name, list(f.shape), f.degree, f.logarithmic] for f in problem.table]
