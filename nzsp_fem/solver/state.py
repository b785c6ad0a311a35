"""The state of a run besides its fields: what the time loop (run.Simulation) has done so
far. Checkpoints store it as a flat mapping (with the step rule's and the predictor's
history) and a restart continues from it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .protocol import VoltagePeak


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
