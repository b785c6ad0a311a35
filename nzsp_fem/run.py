"""One run: config -> mesh -> problem -> solver -> adaptive time loop, with the outputs of
io.run_record along the way."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

from mpi4py import MPI

from .config import Config
from .io.run_record import RunRecord
from .io.rundir import prepare_directory
from .mesh import build_polycrystal, spec_from_config, validate
from .physics.parameters import interface_width
from .problem import CoupledProblem, DiagnosticsEvaluator, metal_connects_electrodes
from .solver import CoupledSolver, StepController
from .solver.protocol import ElectrodeProtocol


def output_directory(cfg: Config, output: str | None) -> Path:
    if output:
        return Path(output)
    if cfg.output.directory:
        return Path(cfg.output.directory)
    return Path("results") / cfg.name


class _Interrupt:
    """SIGTERM/SIGINT set a flag; the loop stops at the next step boundary on all ranks."""

    def __init__(self):
        self.flag = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_single(cfg: Config, outdir: Path, comm, overwrite=False, restart=False) -> dict:
    """Run one simulation into ``outdir``; returns its summary (status completed, diverged
    or interrupted). Collective on ``comm``."""
    spec = spec_from_config(cfg)
    validate(spec)  # bad geometry is reported before the output directory exists
    prepare_directory(outdir, comm, overwrite, restart)
    record = RunRecord(cfg, outdir, comm)
    log = record.log
    log(f"nzsp-fem: {cfg.name} on {comm.size} rank(s) -> {outdir}")
    poly = build_polycrystal(spec, comm, cache_dir=cfg.mesh.cache_dir)
    problem = CoupledProblem(cfg, poly)
    solver = CoupledSolver(problem)
    diagnostics = DiagnosticsEvaluator(problem)
    log(
        "dimensionless groups: "
        + ", ".join(f"{k.split('  ')[0]}={v:.4g}" for k, v in problem.scaling.groups().items()),
        2,
    )
    log(
        f"mesh: {poly.mesh.topology.index_map(poly.mesh.topology.dim).size_global} cells, "
        f"{problem.dofs} dofs, {solver.preset} solver preset; interface width {interface_width(cfg) * 1e9:.3g} nm"
    )

    protocol = ElectrodeProtocol(problem)
    controller = StepController.from_config(cfg.time, breakpoints=protocol.breakpoints)
    state = {"t": 0.0, "steps": 0, "newton_total": 0, "short_circuit_time": None, "restarts": 0}
    state.update(failed_attempts=0)
    state.update(critical_current_density_A_m2=None, voltage_collapse_time_s=None)
    # Charge through the electrode (C, or C/m in 2D), backward-Euler like the steps: each
    # step passes its end-of-step current for dt.
    state.update(charge_C=0.0)
    target_charge = cfg.time.stop_at_charge
    resumed = record.resume(problem, restart)
    if resumed is not None:
        state.update(resumed)
        state["restarts"] += 1
        controller.dt = resumed["controller_dt"]
        controller.last_error = resumed.get("controller_last_error")
        controller.after_retry = resumed.get("controller_after_retry", False)
        solver.dt_previous = resumed.get("dt_previous")
    else:
        solver.initialize()
    record.open(problem, diagnostics, state["t"] if resumed is not None else None, state["restarts"])

    def save_checkpoint():
        # The step rule's and the predictor's history, read where they live.
        history = dict(
            controller_dt=controller.dt,
            controller_last_error=controller.last_error,
            controller_after_retry=controller.after_retry,
            dt_previous=solver.dt_previous,
        )
        record.checkpoint(dict(state, **history))

    if resumed is None:
        record.write_fields(0.0)
        record.figure("initial_state.png", 0.0, initial=True)
        record.probes.record(0.0)
    diag = diagnostics()
    status, reason = "completed", None
    last_checkpoint_wall = time.perf_counter()
    with _Interrupt() as interrupt:
        while not controller.finished(state["t"]):
            t = state["t"]
            if state["steps"] >= cfg.time.max_steps:
                status, reason = "interrupted", "max_steps reached"
                break
            dt, landed = controller.propose(t)
            current = diag.electrode_current_A
            if target_charge is not None and current > 0:
                # Land on the target charge: exact while the current is steady (galvanostatic).
                to_target = (target_charge - state["charge_C"]) / current
                if to_target < dt:
                    dt, landed = max(to_target, cfg.time.dt_min), True
            segment_before = protocol.current_segment
            segment = protocol.apply(t)
            if segment_before is not None and segment != segment_before:
                solver.forget_history()
            report = solver.try_step(t, dt)
            if not report.converged:
                state["failed_attempts"] += 1
                log(
                    f"  step failed at t={t:.6e} s, dt={dt:.3e} s: {report.reason_name} "
                    f"after {report.newton_iterations} Newton iterations; cutting dt",
                    2,
                )
                if not controller.failed(dt):
                    status, reason = "diverged", report.reason_name
                    log(
                        f"stopping: dt would fall below dt_min={cfg.time.dt_min:.3e} s (last SNES reason "
                        f"{report.reason_name})",
                        0,
                    )
                    break
                continue
            if controller.too_inaccurate(report.error_estimate):
                problem.rollback()
                state["failed_attempts"] += 1
                log(
                    f"  step rejected at t={t:.6e} s, dt={dt:.3e} s: error estimate "
                    f"{report.error_estimate:.3g} > {cfg.time.error_tolerance:.3g}; shrinking dt",
                    2,
                )
                if not controller.rejected(dt, report.error_estimate):
                    status, reason = "diverged", "error estimate above tolerance at dt_min"
                    log(f"stopping: dt would fall below dt_min={cfg.time.dt_min:.3e} s (error estimate)", 0)
                    break
                continue
            solver.accept(dt)
            t += dt
            state["t"] = t
            state["steps"] += 1
            state["newton_total"] += report.newton_iterations
            controller.accepted(report.newton_iterations, dt, landed, report.error_estimate, report.interface_change)
            diag = diagnostics()
            state["charge_C"] += diag.electrode_current_A * dt
            shorted = (
                state["short_circuit_time"] is None
                and diag.connected_penetration_m >= 0.5 * cfg.domain.size[0]
                and metal_connects_electrodes(problem)
            )
            collapsed = state["voltage_collapse_time_s"] is None and protocol.voltage_collapsed(
                segment, diag.cell_voltage_V, state
            )
            if collapsed:
                state["voltage_collapse_time_s"] = t
                log(f"voltage collapse: |V| = {abs(diag.cell_voltage_V):.4g} V at t={t:.6e} s", 0)
            if (shorted or collapsed) and state["critical_current_density_A_m2"] is None:
                state["critical_current_density_A_m2"] = protocol.critical_current_density(segment)
            if shorted:
                state["short_circuit_time"] = t
                log(f"short circuit: metal connects the electrodes at t={t:.6e} s", 0)
            record.step(t, dt, report, diag, charge_passed_C=state["charge_C"], **protocol.columns(segment))
            elapsed = time.perf_counter() - record.wall0
            remaining = elapsed / t * (cfg.time.t_end - t) if t > 0 else math.inf
            if target_charge is not None and state["charge_C"] > 0:
                # A run that stops on charge ends long before t_end: estimate by charge.
                remaining = min(remaining, elapsed / state["charge_C"] * (target_charge - state["charge_C"]))
            log(
                f"step {state['steps']:5d} t={t:.4e}/{cfg.time.t_end:.3e} s dt={dt:.2e} "
                f"newton={report.newton_iterations:2d} linear={report.linear_iterations:3d} "
                f"metal={diag.metal_fraction:.4f} depth={diag.connected_penetration_m * 1e9:.0f} nm "
                f"GB={diag.gb_penetration_m * 1e9:.0f} nm "
                f"I={diag.electrode_current_A:.3e} ETA {_hms(remaining)}"
            )
            if controller.is_output_time(t):
                record.write_fields(t)
                if cfg.output.figures_at_output_times and not controller.finished(t):
                    record.figure(f"fields_t{t:.4e}.png", t)
            if target_charge is not None and state["charge_C"] >= target_charge * (1 - _CHARGE_TOL):
                reason = CHARGE_REACHED
                log(f"charge reached: {state['charge_C']:.6g} {charge_unit(problem.dim)} at t={t:.6e} s", 0)
                break
            if shorted and cfg.time.stop_at_short_circuit:
                reason = "short circuit"
                break
            if collapsed:
                reason = "voltage collapse"
                break
            if comm.allreduce(interrupt.flag, op=MPI.LOR):
                status, reason = "interrupted", "signal"
                log("signal received: writing a checkpoint and stopping", 0)
                break
            every = cfg.output.checkpoint_every_steps
            minutes = cfg.output.checkpoint_every_minutes
            # The last output time is followed by the final checkpoint after the loop.
            at_output = (
                cfg.output.checkpoint_at_output_times and controller.is_output_time(t) and not controller.finished(t)
            )
            due = (
                at_output
                or (every and state["steps"] % every == 0)
                or (minutes and comm.bcast(time.perf_counter() - last_checkpoint_wall > 60 * minutes, root=0))
            )
            if due:
                save_checkpoint()
                last_checkpoint_wall = time.perf_counter()

    if target_charge is not None and reason is None and status == "completed":
        reason = "t_end reached before time.stop_at_charge"
        log(
            f"warning: t_end reached with {state['charge_C']:.4g} of {target_charge:.4g} "
            f"{charge_unit(problem.dim)} passed; raise time.t_end to reach the charge",
            0,
        )
    if reason is not None and not controller.is_output_time(state["t"]):
        record.write_fields(state["t"])  # stopped early: keep what was computed
    if status != "diverged":
        save_checkpoint()
    summary = record.close(state, status, reason, diag)
    solver.destroy()
    return summary


# A target charge counts as reached within this fraction (round-off of the landing step).
_CHARGE_TOL = 1e-9
#: summary.json's reason for a run that stopped at time.stop_at_charge (studies read it).
CHARGE_REACHED = "charge reached"


def charge_unit(dim: int) -> str:
    """The unit of charge_passed_C: per metre of depth in 2D."""
    return "C/m" if dim == 2 else "C"


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
