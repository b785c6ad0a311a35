"""The electrode protocol during a run: which segment each step belongs to, applying it to
the problem when it changes, the segment's columns of timeseries.csv, and the
critical-current-density criteria (docs/protocols.md).

Stateless between steps apart from the voltage peak, which it keeps in the run's state
(run.RunState, which the checkpoints keep), so a restart picks up the segment and the peak
where they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.protocol import segment_ends, segment_index
from ..problem import CoupledProblem


@dataclass
class VoltagePeak:
    """The largest |V| so far in one galvanostatic segment (the voltage-collapse reference)."""

    segment: int | None = None
    volts: float = 0.0


class ElectrodeProtocol:
    def __init__(self, problem: CoupledProblem):
        self.problem = problem
        self.segments = problem.segments
        self.ends = segment_ends(self.segments)
        protocol = problem.cfg.protocol
        self.collapse_fraction = protocol.voltage_collapse if protocol is not None else None
        self._applied: int | None = None

    @property
    def breakpoints(self) -> list[float]:
        """Segment boundaries inside the run: the time steps land on them."""
        return self.ends[:-1]

    @property
    def current_segment(self) -> int | None:
        """The segment last put into the problem (None before the first)."""
        return self._applied

    def apply(self, t: float) -> int:
        """Put the segment of the step that starts at t into the problem; its index."""
        k = segment_index(self.ends, t)
        if k != self._applied:
            # The first segment applied (at the start or a restart) fits the state already.
            previous = self.segments[self._applied] if self._applied is not None else None
            self.problem.set_electrode(self.segments[k], previous)
            self._applied = k
        return k

    def columns(self, k: int) -> dict:
        """The protocol's columns of timeseries.csv for a step of segment k."""
        current = self.segments[k].signed_current_density
        return {"segment": k, "applied_current_density_A_m2": float("nan") if current is None else current}

    def critical_current_density(self, k: int) -> float | None:
        """|i| of segment k (A/m^2) when the cell fails in it; None if potentiostatic."""
        current = self.segments[k].signed_current_density
        return None if current is None else abs(current)

    def voltage_collapsed(self, k: int, voltage: float, peak: VoltagePeak) -> bool:
        """Whether |V| fell below voltage_collapse times its peak in this galvanostatic
        segment (``peak`` is updated). The peak, not the first value, is the reference:
        the first step after a current change need not be the largest |V|."""
        segment = self.segments[k]
        if self.collapse_fraction is None or segment.mode != "galvanostatic" or segment.current_density == 0:
            return False
        if peak.segment != k:
            peak.segment, peak.volts = k, 0.0
        peak.volts = max(peak.volts, abs(voltage))
        return abs(voltage) < self.collapse_fraction * peak.volts
