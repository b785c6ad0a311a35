"""What the time loop (run.Simulation) records and tells its observers: the run state
besides the fields (RunState: checkpoints store it as a flat mapping, with the step
rule's and the predictor's history, and a restart continues from it), one accepted step
(StepInfo), a failed fixed step (StepFailed), and the observer protocol (Observer)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..problem import Diagnostics
from .protocol import VoltagePeak
from .snes import SolveReport


@dataclass
class RunState:
    """What a run has done so far, besides the fields: the checkpoint keeps it (with the
    step rule's and the predictor's history) and a restart continues from it."""

    t: float = 0.0
    steps: int = 0
    newton_iterations: int = 0
    failed_attempts: int = 0
    restarts: int = 0
    #: Charge through the electrode (C, or C/m in 2D), backward-Euler like the steps: each
    #: step passes its end-of-step current for dt.
    charge_C: float = 0.0
    short_circuit_time_s: float | None = None
    critical_current_density_A_m2: float | None = None
    voltage_collapse_time_s: float | None = None
    voltage_peak: VoltagePeak = field(default_factory=VoltagePeak)

    # Checkpoint keys that differ from the attribute names; the old names are read too.
    _RENAMED: ClassVar[dict[str, str]] = {
        "newton_total": "newton_iterations",
        "short_circuit_time": "short_circuit_time_s",
    }

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able form, as checkpoints store it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "voltage_peak"}
        if self.voltage_peak.segment is not None:
            out.update(voltage_peak_segment=self.voltage_peak.segment, voltage_peak_V=self.voltage_peak.volts)
        return out

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunState:
        """The state a checkpoint stored (also one written before the keys were renamed);
        keys of other parts (the step rule's history) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {cls._RENAMED.get(k, k): v for k, v in saved.items()}
        state = cls(**{k: v for k, v in values.items() if k in names and k != "voltage_peak"})
        state.voltage_peak = VoltagePeak(saved.get("voltage_peak_segment"), saved.get("voltage_peak_V", 0.0))
        return state


@dataclass
class StepInfo:
    """One accepted step, as :meth:`Simulation.step` returns it and observers receive it."""

    t: float  #: time at the end of the step (s)
    dt: float  #: its length (s)
    step: int  #: accepted steps so far, this one included
    report: SolveReport  #: Newton / linear iterations, error estimate, interface change
    diagnostics: Diagnostics  #: scalar diagnostics of the new state (SI)
    landed: bool  #: shortened to land on an output time, a breakpoint or a target
    segment: int  #: index of the electrode-protocol segment the step belongs to


class StepFailed(RuntimeError):
    """A fixed step (``Simulation.step(dt)``) did not converge; the state is rolled back."""

    def __init__(self, t: float, dt: float, report: SolveReport):
        super().__init__(f"step from t = {t:.6e} s with dt = {dt:.3e} s failed: {report.reason_name}")
        self.t, self.dt, self.report = t, dt, report


@runtime_checkable
class Observer(Protocol):
    """What the loop calls on an observer (:meth:`Simulation.add_observer`). Every method
    is optional: an observer defines those it needs (a plain function is taken as
    ``on_step_accepted``).

    * ``before_step(sim, t, dt)``: before each attempt from ``t`` to ``t + dt`` (forcing
      that changes between steps is applied here; a retry calls it again).
    * ``max_dt(sim) -> float | None``: an upper bound for the next attempt (s).
    * ``next_breakpoint(sim) -> float | None``: a time (s) the next steps must land on;
      the step that would pass it is shortened to end there.
    * ``on_step_rejected(sim, t, dt, report)``: after an attempt that failed or whose
      error estimate was too large (rolled back; a shorter one follows).
    * ``on_step_accepted(sim, info)``: after each accepted step, once the simulation has
      decided whether the run ends there (``sim.finished``). An observer may change the
      state or the forcing here; if it changes the state it calls
      :meth:`Simulation.state_changed` so that the next step starts from it.
    * ``on_finish(sim)``: once, when :meth:`Simulation.run` leaves the loop.
    * ``checkpoint_state() -> dict`` and ``restore_checkpoint_state(saved)``: what the
      observer needs to continue after a restart (JSON-able), stored in the checkpoint
      under ``checkpoint_key`` (default: the class name). Add the observer before
      ``run(restart=True)``.
    """

    def on_step_accepted(self, sim: Any, info: StepInfo) -> None: ...
