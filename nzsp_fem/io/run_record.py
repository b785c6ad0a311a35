"""Everything one run writes into its directory: log, resolved config, VTX fields,
timeseries.csv, probes.csv, figures, checkpoints, final_state.vtu and summary.json.

The time loop (nzsp_fem.run) only calls these; rank 0 writes text files, collective
writers are called on every rank.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import Config
from ..problem import CoupledProblem, Diagnostics, DiagnosticsEvaluator
from . import checkpoint as ckpt
from .figures import plot_fields, plot_initial_state
from .figures3d import nuclei_plane_z, plot_view_3d
from .output_fields import OutputFields, field_panels, gather_state
from .probes import ProbeSeries
from .protocol_figures import plot_voltage
from .rundir import TIMESERIES_COLUMNS, CsvTable, FieldWriter, OutputError, RunLog, write_json, write_yaml

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

    # Restart ------------------------------------------------------------------------------
    def resume(self, problem: CoupledProblem, restart: bool) -> dict | None:
        """Read the latest checkpoint into the problem; its run metadata, or None (fresh run)."""
        if not restart:
            write_yaml(self.outdir / "config.resolved.yaml", self.cfg.model_dump(mode="json"), self.comm)
            return None
        resumed = ckpt.latest_checkpoint(self.checkpoints, self.comm)
        if resumed is None:
            raise OutputError(f"--restart: no complete checkpoint in {self.checkpoints}")
        meta = ckpt.read_checkpoint(resumed, problem.mesh, run_state_functions(problem), self.comm)
        stored = meta.get("fields")
        if stored is not None and stored != field_layout(problem):
            raise OutputError(
                f"--restart: {resumed.name} holds the fields {stored}, this config solves {field_layout(problem)}"
            )
        problem.after_restore()
        # The config of the original run stays; the restart's (it may carry --set) goes beside it.
        restarts = meta["run"].get("restarts", 0) + 1
        write_yaml(self.outdir / f"config.resolved-restart{restarts}.yaml", self.cfg.model_dump(mode="json"), self.comm)
        self.log(f"restarted from {resumed.name}: t={meta['run']['t']:.6e} s, step {meta['run']['steps']}")
        return meta["run"]

    # Outputs along the run ----------------------------------------------------------------
    def open(
        self, problem: CoupledProblem, diagnostics: DiagnosticsEvaluator, t_resumed: float | None, restarts: int
    ) -> None:
        cfg, comm = self.cfg, self.comm
        self.problem = problem
        self.figures_dir = self.outdir / "figures"
        fields_dir = self.outdir / "fields"
        if comm.rank == 0:
            fields_dir.mkdir(exist_ok=True)
            self.figures_dir.mkdir(exist_ok=True)
        comm.barrier()
        resumed = t_resumed is not None
        # A restarted run writes new VTX series next to the old ones instead of truncating them.
        self.writer = FieldWriter(fields_dir, comm, suffix=f"-restart{restarts}" if resumed else "")
        self.fields = OutputFields(problem, diagnostics)
        self.table = CsvTable(
            self.outdir / "timeseries.csv", TIMESERIES_COLUMNS, comm, append=resumed, keep_until=t_resumed
        )
        self.probes = ProbeSeries(
            cfg.output.probes, self.fields, problem.scaling.length, self.outdir / "probes.csv", resumed, t_resumed
        )

    def write_fields(self, t: float) -> None:
        self.writer.write(self.fields.update(), t)

    def figure(self, name: str, t: float, initial: bool = False) -> None:
        if not self.cfg.output.figures:
            return
        grid = gather_state(self.fields)
        z = nuclei_plane_z(self.problem.poly.nuclei)  # 3D: the maps cut through the nuclei
        title = f"{self.cfg.name}, " + ("initial state" if initial else f"t = {t:.4g} s")
        if initial:
            plot_initial_state(grid, self.figures_dir / name, z=z)
        else:
            plot_fields(grid, field_panels([grid]), self.figures_dir / name, title=title, contour="eta", z=z)
        if self.problem.dim == 3 and name in ("initial_state.png", "final_state.png"):
            plot_view_3d(grid, self.figures_dir / name.replace(".png", "_3d.png"), title=title)

    def step(self, t: float, dt: float, report, diag: Diagnostics, **columns) -> None:
        """One row of timeseries.csv; ``columns``: the protocol's (segment, applied current)."""
        self.table.row(
            dict(
                vars(diag),
                t=t,
                dt=dt,
                newton_iterations=report.newton_iterations,
                linear_iterations=report.linear_iterations,
                error_estimate=report.error_estimate,
                interface_change=report.interface_change,
                **columns,
            )
        )
        self.probes.record(t)

    def checkpoint(self, run_state: dict) -> None:
        if run_state["steps"] == getattr(self, "_last_checkpoint_step", None):
            return  # already written at this step (a periodic one on the last step)
        self._last_checkpoint_step = run_state["steps"]
        meta = {"run": run_state, "config_name": self.cfg.name, "fields": field_layout(self.problem)}
        ckpt.write_checkpoint(
            self.checkpoints,
            self.problem.mesh,
            run_state_functions(self.problem),
            meta,
            self.comm,
            step=run_state["steps"],
        )

    # End of run ---------------------------------------------------------------------------
    def close(self, run_state: dict, status: str, reason: str | None, diag: Diagnostics) -> dict:
        self.writer.close()
        self.table.close()
        self.probes.close()
        grid = gather_state(self.fields)
        if grid is not None:
            grid.save(str(self.outdir / "final_state.vtu"))
        self.figure("final_state.png", run_state["t"])
        if self.cfg.output.figures and self.cfg.output.animation and self.comm.rank == 0:
            self._animate()
        summary = {
            "status": status,
            "reason": reason,
            "t_final": run_state["t"],
            "charge_passed_C": run_state.get("charge_C", 0.0),
            "steps": run_state["steps"],
            "newton_iterations": run_state["newton_total"],
            "failed_attempts": run_state.get("failed_attempts", 0),
            "wall_time_s": time.perf_counter() - self.wall0,
            "mpi_size": self.comm.size,
            "dofs": self.problem.dofs,
            "short_circuit": run_state["short_circuit_time"] is not None,
            "short_circuit_time_s": run_state["short_circuit_time"],
            "critical_current_density_A_m2": run_state.get("critical_current_density_A_m2"),
            "voltage_collapse_time_s": run_state.get("voltage_collapse_time_s"),
            "restarts": run_state["restarts"],
        }
        summary.update({k: getattr(diag, k) for k in Diagnostics.names("summary")})
        write_json(self.outdir / "summary.json", summary, self.comm)
        if self.cfg.protocol is not None and self.cfg.output.figures and self.comm.rank == 0:
            events = {
                "short circuit": summary["short_circuit_time_s"],
                "voltage collapse": summary["voltage_collapse_time_s"],
            }
            plot_voltage(self.outdir / "timeseries.csv", self.figures_dir / "voltage.png", self.cfg.name, events)
        self.log(
            f"{status}: t={run_state['t']:.4e} s in {run_state['steps']} steps, "
            f"{run_state['newton_total']} Newton iterations, {summary['wall_time_s']:.1f} s wall",
            0,
        )
        self.log.close()
        return summary

    def _animate(self) -> None:
        """figures/eta.gif from the VTX fields just closed (rank 0 only)."""
        from .animation import write_animation

        try:
            path, frames = write_animation(self.outdir, title=self.cfg.name)
        except Exception as err:  # noqa: BLE001
            # the run's results are complete; a failed animation must not fail the run
            self.log(f"animation not written: {type(err).__name__}: {err}", 0)
            return
        self.log(f"animation: {path} ({frames} frames)", 2)


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
