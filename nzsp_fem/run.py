"""The time loop, once: :class:`Simulation` owns the run state, the step control and the
rollback; everything a run writes (io.run_record: tables, fields, figures, probes,
checkpoints) watches the loop as an observer.

The CLI, studies, benchmarks and tests all step through :class:`Simulation`.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpi4py import MPI

from .config import Config, as_config
from .io.output_fields import Fields
from .io.run_record import RunRecord
from .io.rundir import prepare_directory
from .mesh import Polycrystal, build_polycrystal, spec_from_config, validate
from .problem import CoupledProblem, Diagnostics, DiagnosticsEvaluator, metal_connects_electrodes
from .problem.nucleation import NucleationObserver
from .solver import CoupledSolver, SolveReport, StepController
from .solver.protocol import ElectrodeProtocol
from .solver.state import Observer, RunState, StepFailed, StepInfo

# A target charge counts as reached within this fraction (round-off of the landing step).
_CHARGE_TOL = 1e-9
#: summary.json's reason for a run that stopped at time.stop_at_charge (studies read it).
CHARGE_REACHED = "charge reached"
#: summary.json's reason for a run that reached t_end before time.stop_at_charge.
CHARGE_NOT_REACHED = "t_end reached before time.stop_at_charge"


def charge_unit(dim: int) -> str:
    """The unit of charge_passed_C: per metre of depth in 2D."""
    return "C/m" if dim == 2 else "C"


def output_directory(cfg: Config, output: str | Path | None) -> Path:
    """Where a run writes: ``output``, else output.directory, else results/<name>."""
    if output:
        return Path(output)
    if cfg.output.directory:
        return Path(cfg.output.directory)
    return Path("results") / cfg.name


# Run state -------------------------------------------------------------------------------


# Observers -------------------------------------------------------------------------------


def _key(observer: Any) -> str:
    return getattr(observer, "checkpoint_key", type(observer).__name__)


class _Callback:
    def __init__(self, fn: Callable[[Simulation, StepInfo], None]):
        self.fn = self.on_step_accepted = fn


class _Interrupt:
    """SIGTERM/SIGINT set a flag; the loop stops at the next step boundary on all ranks."""

    def __init__(self) -> None:
        self.flag = False
        self._previous: dict = {}

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _ConsoleLog:
    """Rank-0 lines to stdout by verbosity: the log of a simulation that writes no run
    directory (run() replaces it by run.log's)."""

    def __init__(self, comm, verbosity: int):
        self.comm, self.verbosity = comm, verbosity

    def __call__(self, message: str, level: int = 1) -> None:
        if self.comm.rank == 0 and level <= self.verbosity:
            print(message, flush=True)


# The simulation --------------------------------------------------------------------------


class Simulation:
    """One simulation: mesh, problem, solver and the adaptive backward-Euler time loop.

    Parameters
    ----------
    config:
        A :class:`~nzsp_fem.config.Config`, a mapping of sections, or the path of a YAML
        file; all three go through the same validation (:func:`nzsp_fem.load_config`).
    comm:
        The MPI communicator to run on (default ``MPI.COMM_WORLD``). Every method is
        collective on it.
    polycrystal:
        A mesh built before (``nzsp_fem.mesh.build_polycrystal``) for this config's
        geometry, to share between simulations on the same microstructure; by default
        it is built (or read from the mesh cache).

    Stepping by hand writes nothing::

        sim = Simulation(cfg)
        while not sim.finished:
            info = sim.step()  # one accepted step, or None when the run stopped without one

    and :meth:`run` is the same loop with the standard outputs (run directory,
    timeseries.csv, fields, figures, probes, checkpoints, summary.json).

    ``step(dt)`` takes one step of exactly ``dt`` instead (tests, benchmarks).

    Observers (:meth:`add_observer`, protocol :class:`Observer`) are called by the loop:
    ``max_dt``, ``next_breakpoint``, ``before_step``, ``on_step_rejected``,
    ``on_step_accepted``, ``on_finish`` and ``checkpoint_state`` /
    ``restore_checkpoint_state``, each optional. A model that changes the problem between
    steps (a nucleation model adding metal, say) sets its forcing in ``before_step``,
    modifies ``sim.problem`` in ``on_step_accepted`` and then calls
    :meth:`state_changed`, bounds the next step by ``max_dt``, makes a step land on a time
    by ``next_breakpoint``, and keeps its own state in the checkpoints.

    The run ends (``finished``) at t_end, at time.stop_at_charge, at a short circuit
    (time.stop_at_short_circuit), at a voltage collapse, at time.max_steps, when the step
    would fall below dt_min, on a signal during :meth:`run`, or by :meth:`stop`;
    ``status`` and ``reason`` say which.
    """

    def __init__(
        self,
        config: Config | dict | str | Path,
        comm: MPI.Comm | None = None,
        *,
        polycrystal: Polycrystal | None = None,
    ):
        self.cfg = cfg = as_config(config)
        self.comm = comm = MPI.COMM_WORLD if comm is None else comm
        if polycrystal is None:
            spec = spec_from_config(cfg)
            validate(spec)
            polycrystal = build_polycrystal(spec, comm, cache_dir=cfg.mesh.cache_dir)
        self.poly = polycrystal
        self.problem = CoupledProblem(cfg, self.poly)
        self.solver = CoupledSolver(self.problem)
        self.evaluator = DiagnosticsEvaluator(self.problem)
        self.protocol = ElectrodeProtocol(self.problem)
        self.controller = StepController.from_config(cfg.time, breakpoints=self.protocol.breakpoints)
        self.state = RunState()
        self.status = "completed"
        self.reason: str | None = None
        self.log: Callable[..., None] = _ConsoleLog(comm, cfg.output.verbosity)
        self.fields = Fields(self.problem)
        self._observers: list[Any] = []
        if cfg.nucleation.enabled:
            self.add_observer(NucleationObserver(self.problem, self.evaluator))
        #: The run directory's writer while run() runs (observers write their files through it).
        self.record: RunRecord | None = None
        self._diagnostics: Diagnostics | None = None
        self._stopped = False
        self._interrupt: _Interrupt | None = None
        self._wall0 = time.perf_counter()
        self._closed = False

    # State ---------------------------------------------------------------------------------
    @property
    def t(self) -> float:
        """Time reached (s)."""
        return self.state.t

    @property
    def finished(self) -> bool:
        """Whether the run has ended (t_end or a stop, see ``status`` and ``reason``)."""
        return self._stopped or self.controller.finished(self.state.t)

    @property
    def stopped(self) -> bool:
        """Whether the run ended before t_end (a stop rule, a failure, a signal or stop())."""
        return self._stopped

    @property
    def diagnostics(self) -> Diagnostics:
        """Scalar diagnostics of the current state (SI; evaluated after every step)."""
        self.start()
        assert self._diagnostics is not None
        return self._diagnostics

    def add_observer(self, observer: Any) -> Any:
        """Add an observer of the loop (see :class:`Observer`; a function is taken as
        ``on_step_accepted(sim, info)``); returns it. Observers are called in the order
        they were added."""
        self._observers.append(_Callback(observer) if callable(observer) else observer)
        return observer

    def remove_observer(self, observer: Any) -> None:
        """Remove an observer added by :meth:`add_observer`."""
        self._observers = [o for o in self._observers if o is not observer and getattr(o, "fn", None) is not observer]

    def stop(self, reason: str, status: str = "completed") -> None:
        """End the run after the current step (``status``: completed, interrupted or diverged)."""
        self._stopped, self.status, self.reason = True, status, reason

    def state_changed(self) -> None:
        """The state was changed outside a solve (by an observer): take it as the committed
        state, and do not extrapolate the next Newton guess across the jump."""
        self.problem.commit_state()
        self.solver.forget_history()

    def checkpoint_state(self) -> dict[str, Any]:
        """The run state, the step history and the observers' states, as a checkpoint
        stores them (the fields are stored beside it)."""
        saved = {**self.state.to_dict(), **self.controller.history(), **self.solver.history()}
        observers = {_key(o): o.checkpoint_state() for o in self._observers if hasattr(o, "checkpoint_state")}
        if observers:
            saved["observers"] = observers
        return saved

    def restore_state(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's run state (its fields already read into the problem)."""
        self.state = RunState.from_dict(saved)
        self.controller.restore_history(saved)
        self.solver.restore_history(saved)
        observers = saved.get("observers", {})
        for obs in self._observers:
            if hasattr(obs, "restore_checkpoint_state") and _key(obs) in observers:
                obs.restore_checkpoint_state(observers[_key(obs)])
        self._diagnostics = self.evaluator()

    def start(self) -> None:
        """Set the initial state (eta from the nuclei, then the start-up solves that make
        the potentials and u consistent with it). The first step() or run() does it;
        call it first to change the initial state by hand (then :meth:`state_changed`)."""
        if self._diagnostics is None:
            self.solver.initialize()
            self._diagnostics = self.evaluator()

    # The loop ------------------------------------------------------------------------------
    def step(self, dt: float | None = None) -> StepInfo | None:
        """Advance by one accepted step (failed or inaccurate attempts are rolled back and
        retried with a shorter dt); writes nothing. Returns None when the run stops
        without accepting a step (dt below dt_min, max_steps), with ``status`` and
        ``reason`` set.

        With ``dt`` (s), one step of exactly that length instead, whatever the step rule,
        the observers' limits and the run's end say (tests and benchmarks use fixed
        steps); if it fails, the state is rolled back and :class:`StepFailed` is raised.
        """
        if self._closed:
            raise RuntimeError("this simulation has been closed (run() closes it when it returns)")
        self.start()
        if dt is not None:
            return self._fixed_step(dt)
        if self.finished:
            raise RuntimeError(f"the run has finished at t = {self.t:.6g} s ({self.reason or 't_end reached'})")
        cfg, state, log = self.cfg, self.state, self.log
        controller, solver = self.controller, self.solver
        target_charge = cfg.time.stop_at_charge
        while True:
            t = state.t
            if state.steps >= cfg.time.max_steps:
                self.stop("max_steps reached", "interrupted")
                return None
            dt, landed = controller.propose(t)
            current = self.diagnostics.electrode_current_A
            if target_charge is not None and current > 0:
                # Land on the target charge: exact while the current is steady (galvanostatic).
                to_target = (target_charge - state.charge_C) / current
                if to_target < dt:
                    dt, landed = max(to_target, cfg.time.dt_min), True
            dt, landed = self._observer_limits(t, dt, landed)
            segment = self._attempt_setup(t, dt)
            report = solver.try_step(t, dt)
            if not report.converged:
                state.failed_attempts += 1
                self._notify("on_step_rejected", t, dt, report)
                log(
                    f"  step failed at t={t:.6e} s, dt={dt:.3e} s: {report.reason_name} "
                    f"after {report.newton_iterations} Newton iterations; cutting dt",
                    2,
                )
                if not controller.failed(dt):
                    log(
                        f"stopping: dt would fall below dt_min={cfg.time.dt_min:.3e} s (last SNES reason "
                        f"{report.reason_name})",
                        0,
                    )
                    self.stop(report.reason_name, "diverged")
                    return None
                continue
            if controller.too_inaccurate(report.error_estimate):
                solver.reject()
                state.failed_attempts += 1
                self._notify("on_step_rejected", t, dt, report)
                log(
                    f"  step rejected at t={t:.6e} s, dt={dt:.3e} s: error estimate "
                    f"{report.error_estimate:.3g} > {cfg.time.error_tolerance:.3g}; shrinking dt",
                    2,
                )
                assert report.error_estimate is not None
                if not controller.rejected(dt, report.error_estimate):
                    log(f"stopping: dt would fall below dt_min={cfg.time.dt_min:.3e} s (error estimate)", 0)
                    self.stop("error estimate above tolerance at dt_min", "diverged")
                    return None
                continue
            controller.accepted(report.newton_iterations, dt, landed, report.error_estimate, report.interface_change)
            return self._accept(t, dt, report, landed, segment)

    def _fixed_step(self, dt: float) -> StepInfo:
        t = self.state.t
        segment = self._attempt_setup(t, dt)
        report = self.solver.try_step(t, dt)
        if not report.converged:
            self.state.failed_attempts += 1
            self._notify("on_step_rejected", t, dt, report)
            raise StepFailed(t, dt, report)
        return self._accept(t, dt, report, False, segment)

    def _attempt_setup(self, t: float, dt: float) -> int:
        """The protocol's segment for an attempt from t (the predictor forgets the steps
        of another segment), then the observers' before_step."""
        segment_before = self.protocol.current_segment
        segment = self.protocol.apply(t)
        if segment_before is not None and segment != segment_before:
            self.solver.forget_history()
        self._notify("before_step", t, dt)
        return segment

    def _accept(self, t: float, dt: float, report: SolveReport, landed: bool, segment: int) -> StepInfo:
        state = self.state
        self.solver.accept(dt)
        t += dt
        state.t = t
        state.steps += 1
        state.newton_iterations += report.newton_iterations
        diag = self._diagnostics = self.evaluator()
        state.charge_C += diag.electrode_current_A * dt
        info = StepInfo(t, dt, state.steps, report, diag, landed, segment)
        self._after_step(info)
        self._notify("on_step_accepted", info)
        return info

    def _observer_limits(self, t: float, dt: float, landed: bool) -> tuple[float, bool]:
        """dt bounded by the observers' max_dt and shortened to their next breakpoint; a
        step shortened so is 'landed' (it does not shrink the controller's running dt)."""
        for obs in self._observers:
            cap = obs.max_dt(self) if hasattr(obs, "max_dt") else None
            if cap is not None and cap < dt:
                dt, landed = max(cap, self.cfg.time.dt_min), True
            when = obs.next_breakpoint(self) if hasattr(obs, "next_breakpoint") else None
            if when is not None and t < when < t + dt:
                dt, landed = when - t, True
        return dt, landed

    def _after_step(self, info: StepInfo) -> None:
        """Events of the new state (short circuit, voltage collapse), the log line, and
        whether the run ends here."""
        cfg, state, log, protocol = self.cfg, self.state, self.log, self.protocol
        t, diag = info.t, info.diagnostics
        shorted = (
            state.short_circuit_time_s is None
            and diag.connected_penetration_m >= 0.5 * cfg.domain.size[0]
            and metal_connects_electrodes(self.problem)
        )
        collapsed = state.voltage_collapse_time_s is None and protocol.voltage_collapsed(
            info.segment, diag.cell_voltage_V, state.voltage_peak
        )
        if collapsed:
            state.voltage_collapse_time_s = t
            log(f"voltage collapse: |V| = {abs(diag.cell_voltage_V):.4g} V at t={t:.6e} s", 0)
        if (shorted or collapsed) and state.critical_current_density_A_m2 is None:
            state.critical_current_density_A_m2 = protocol.critical_current_density(info.segment)
        if shorted:
            state.short_circuit_time_s = t
            log(f"short circuit: metal connects the electrodes at t={t:.6e} s", 0)
        log(self._progress_line(info))
        target_charge = cfg.time.stop_at_charge
        if target_charge is not None and state.charge_C >= target_charge * (1 - _CHARGE_TOL):
            log(f"charge reached: {state.charge_C:.6g} {charge_unit(self.problem.dim)} at t={t:.6e} s", 0)
            self.stop(CHARGE_REACHED)
        elif shorted and cfg.time.stop_at_short_circuit:
            self.stop("short circuit")
        elif collapsed:
            self.stop("voltage collapse")
        elif self._interrupt is not None and self.comm.allreduce(self._interrupt.flag, op=MPI.LOR):
            log("signal received: writing a checkpoint and stopping", 0)
            self.stop("signal", "interrupted")
        elif target_charge is not None and self.controller.finished(t):
            self.reason = CHARGE_NOT_REACHED
            log(
                f"warning: t_end reached with {state.charge_C:.4g} of {target_charge:.4g} "
                f"{charge_unit(self.problem.dim)} passed; raise time.t_end to reach the charge",
                0,
            )

    def _progress_line(self, info: StepInfo) -> str:
        cfg, state, t, diag, report = self.cfg, self.state, info.t, info.diagnostics, info.report
        elapsed = time.perf_counter() - self._wall0
        remaining = elapsed / t * (cfg.time.t_end - t) if t > 0 else math.inf
        target_charge = cfg.time.stop_at_charge
        if target_charge is not None and state.charge_C > 0:
            # A run that stops on charge ends long before t_end: estimate by charge.
            remaining = min(remaining, elapsed / state.charge_C * (target_charge - state.charge_C))
        return (
            f"step {state.steps:5d} t={t:.4e}/{cfg.time.t_end:.3e} s dt={info.dt:.2e} "
            f"newton={report.newton_iterations:2d} linear={report.linear_iterations:3d} "
            f"metal={diag.metal_fraction:.4f} depth={diag.connected_penetration_m * 1e9:.0f} nm "
            f"GB={diag.gb_penetration_m * 1e9:.0f} nm "
            f"I={diag.electrode_current_A:.3e} ETA {_hms(remaining)}"
        )

    def _notify(self, method: str, *args: Any) -> None:
        for obs in list(self._observers):
            hook = getattr(obs, method, None)
            if hook is not None:
                hook(self, *args)

    def run(self, output: str | Path | None = None, *, overwrite: bool = False, restart: bool = False) -> dict:
        """Run to the end with the standard outputs into ``output`` (default: the config's
        output.directory, else results/<name>); returns the summary (also summary.json).

        ``overwrite`` replaces an existing run directory, ``restart`` continues the run
        in it from its last intact checkpoint. SIGTERM/SIGINT stop the run at the next
        step with a checkpoint. Closes the simulation.
        """
        cfg, comm = self.cfg, self.comm
        outdir = output_directory(cfg, output)
        if restart and self._diagnostics is not None:
            raise RuntimeError("restart=True needs a simulation that has not started")
        prepare_directory(outdir, comm, overwrite, restart)
        self.record = record = RunRecord(cfg, outdir, comm)
        self.log = log = record.log
        self._wall0 = record.wall0
        pb = self.problem
        log(f"nzsp-fem: {cfg.name} on {comm.size} rank(s) -> {outdir}")
        groups = pb.scaling.groups()
        log("dimensionless groups: " + ", ".join(f"{k.split('  ')[0]}={v:.4g}" for k, v in groups.items()), 2)
        log(
            f"mesh: {self.poly.mesh.topology.index_map(self.poly.mesh.topology.dim).size_global} cells, "
            f"{pb.dofs} dofs, {self.solver.preset} solver preset; "
            f"interface width {pb.scaling.interface_width * 1e9:.3g} nm"
        )
        resumed = record.resume(pb, restart)
        if resumed is not None:
            self.restore_state(resumed)
            self.state.restarts += 1
        else:
            self.start()
        record.open(pb, self.evaluator, self.t if resumed is not None else None, self.state.restarts)
        if resumed is None:
            record.write_fields(self.t)
            if self.t == 0.0:
                record.figure("initial_state.png", 0.0, initial=True)
            record.probes.record(self.t)
        outputs = _Outputs(record)
        standard = [outputs, _PeriodicCheckpoints(record)]
        # After the model's own observers (nucleation), which act on a step before it is
        # written, and before the user's, which see the step written.
        model = sum(1 for o in self._observers if getattr(o, "part_of_model", False))
        self._observers[model:model] = standard
        try:
            with _Interrupt() as interrupt:
                self._interrupt = interrupt
                while not self.finished:
                    self.step()
            self._interrupt = None
            if self.reason is not None and not self.controller.is_output_time(self.t):
                record.write_fields(self.t)  # stopped early: keep what was computed
            if self.status != "diverged":
                record.checkpoint(self.checkpoint_state())
            self._notify("on_finish")
            summary = record.close(self.state, self.status, self.reason, self.diagnostics)
        finally:
            self._interrupt = None
            self._observers = [o for o in self._observers if o not in standard]
        self.close()
        return summary

    def close(self) -> None:
        """Free the PETSc objects (the simulation cannot step afterwards)."""
        if not self._closed:
            self.solver.destroy()
            self._closed = True

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Outputs:
    """timeseries.csv and probes.csv per step, fields (and figures) at output times."""

    def __init__(self, record: RunRecord):
        self.record = record

    def on_step_accepted(self, sim: Simulation, info: StepInfo) -> None:
        record, controller = self.record, sim.controller
        record.step(
            info.t,
            info.dt,
            info.report,
            info.diagnostics,
            charge_passed_C=sim.state.charge_C,
            **sim.protocol.columns(info.segment),
        )
        if controller.is_output_time(info.t):
            record.write_fields(info.t)
            if sim.cfg.output.figures_at_output_times and not controller.finished(info.t):
                record.figure(f"fields_t{info.t:.4e}.png", info.t)


class _PeriodicCheckpoints:
    """Checkpoints every N steps, every M wall minutes and at output times (the final one
    is written by run() after the loop)."""

    def __init__(self, record: RunRecord):
        self.record = record
        self.last_wall = time.perf_counter()

    def on_step_accepted(self, sim: Simulation, info: StepInfo) -> None:
        if sim.stopped:
            return  # the final checkpoint follows
        out, controller, comm = sim.cfg.output, sim.controller, sim.comm
        every, minutes = out.checkpoint_every_steps, out.checkpoint_every_minutes
        # The last output time is followed by the final checkpoint after the loop.
        at_output = (
            out.checkpoint_at_output_times and controller.is_output_time(info.t) and not controller.finished(info.t)
        )
        due = (
            at_output
            or (every and info.step % every == 0)
            or (minutes and comm.bcast(time.perf_counter() - self.last_wall > 60 * minutes, root=0))
        )
        if due:
            self.record.checkpoint(sim.checkpoint_state())
            self.last_wall = time.perf_counter()


def run_single(cfg: Config, outdir: Path, comm, overwrite: bool = False, restart: bool = False) -> dict:
    """``Simulation(cfg, comm).run(outdir, ...)``: one run into ``outdir``; its summary."""
    return Simulation(cfg, comm).run(outdir, overwrite=overwrite, restart=restart)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


__all__ = [
    "CHARGE_REACHED",
    "Fields",
    "Observer",
    "RunState",
    "Simulation",
    "StepFailed",
    "StepInfo",
    "charge_unit",
    "output_directory",
    "run_single",
]
