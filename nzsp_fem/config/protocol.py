"""Electrode protocols: the `protocol:` section of the config (docs/protocols.md).

A protocol is a list of segments, each held for a duration: galvanostatic (a current
density and a direction, plate or strip) or potentiostatic (the electrode's potential
against the reservoir). ``ramp:`` writes the list for the usual critical-current-density
experiment: step the current from ``first`` to ``last``, each value held for ``hold``,
plating then stripping. The helpers below read the segments of any config; without a
protocol, ``electrochemistry.electrode`` is one segment lasting the whole run.

Kept apart from schema.py so that the pure-Python expansion is testable on its own; it
imports nothing of the package (schema.py imports it).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Strict
from .units import CurrentDensity, Potential, Time, to_si

#: A ramp longer than this is almost certainly a unit slip (a step in A/m^2 against mA/cm^2).
MAX_SEGMENTS = 2000
# Relative slack when counting ramp steps: 0.65 = 0.05 + 12 * 0.05 must give 13 values.
_COUNT_TOL = 1e-9


class Segment(Strict):
    """One constant-control interval. The mode follows from the value given
    (current_density or potential) unless stated."""

    mode: Literal["galvanostatic", "potentiostatic"]
    # Galvanostatic: a magnitude; the direction gives the sign (positive plates Na).
    current_density: CurrentDensity | None = None
    direction: Literal["plate", "strip"] | None = None
    # Potentiostatic: the electrode's (electronic) potential against the reservoir, signed.
    potential: Potential | None = None
    duration: Time = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _infer_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") is None:
            # A misspelt key would otherwise read as "neither value given".
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(f"{unknown[0]}: unknown key")
            given = [k for k in ("current_density", "potential") if data.get(k) is not None]
            if len(given) == 1:
                data = dict(data, mode="galvanostatic" if given[0] == "current_density" else "potentiostatic")
            else:
                both = ", not both" if given else ""
                raise ValueError(f"give either current_density (galvanostatic) or potential (potentiostatic){both}")
        return data

    @model_validator(mode="after")
    def _complete(self):
        if self.mode == "galvanostatic":
            if self.current_density is None:
                raise ValueError("current_density: required in a galvanostatic segment")
            if self.current_density < 0:
                raise ValueError(
                    f"current_density: give the magnitude, got {self.current_density:g} A/m^2; "
                    "'direction: strip' reverses the current"
                )
            if self.potential is not None:
                raise ValueError("potential: a galvanostatic segment sets the current, not the potential")
            if self.direction is None:
                self.direction = "plate"
        else:
            if self.potential is None:
                raise ValueError("potential: required in a potentiostatic segment")
            if self.current_density is not None:
                raise ValueError("current_density: a potentiostatic segment sets the potential, not the current")
            if self.direction is not None:
                raise ValueError("direction: applies to galvanostatic segments; the potential's sign decides")
        return self

    @property
    def signed_current_density(self) -> float | None:
        """A/m^2, positive while plating; None for a potentiostatic segment."""
        if self.mode != "galvanostatic":
            return None
        return self.current_density if self.direction == "plate" else -self.current_density


class Ramp(Strict):
    """first, first + step, ..., up to last (inclusive), each held for ``hold``; with
    ``plate_then_strip`` every value is plated for ``hold`` and then stripped for ``hold``."""

    first: CurrentDensity = Field(gt=0)
    last: CurrentDensity = Field(gt=0)
    step: CurrentDensity = Field(gt=0)
    hold: Time = Field(gt=0)
    plate_then_strip: bool = True

    @model_validator(mode="after")
    def _order(self):
        if self.last < self.first * (1 - _COUNT_TOL):
            raise ValueError(f"last: {self.last:g} A/m^2 is below first = {self.first:g} A/m^2")
        n = ramp_count(self.first, self.last, self.step) * (2 if self.plate_then_strip else 1)
        if n > MAX_SEGMENTS:
            raise ValueError(f"step: the ramp makes {n} segments (at most {MAX_SEGMENTS}); check the units")
        return self


def ramp_count(first: float, last: float, step: float) -> int:
    """Number of current values first + k step <= last (with rounding slack)."""
    return int(math.floor((last - first) / step * (1 + _COUNT_TOL) + _COUNT_TOL)) + 1


class Protocol(Strict):
    segments: list[Segment] | None = None
    ramp: Ramp | None = None
    # Critical current density by voltage collapse: stop when |cell voltage| falls below
    # this fraction of its peak in the current galvanostatic segment (null: off; the run
    # still stops on a short circuit).
    voltage_collapse: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.segments is None) == (self.ramp is None):
            raise ValueError("give either segments (a list) or ramp, not both or neither")
        if self.segments is not None and not self.segments:
            raise ValueError("segments: the list is empty")
        return self

    def expanded(self) -> list[Segment]:
        return list(self.segments) if self.segments is not None else expand_ramp(self.ramp)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.expanded())


def expand_ramp(ramp: Ramp) -> list[Segment]:
    """The segments of a ramp, in order (Fig. 1a of the paper: each current plated, then
    stripped, then the next current)."""
    out = []
    for k in range(ramp_count(ramp.first, ramp.last, ramp.step)):
        i = ramp.first + k * ramp.step
        directions = ("plate", "strip") if ramp.plate_then_strip else ("plate",)
        out += [Segment(mode="galvanostatic", current_density=i, direction=d, duration=ramp.hold) for d in directions]
    return out


def electrode_segments(cfg) -> list[Segment]:
    """The segments a run applies: the protocol's, or electrochemistry.electrode held to t_end."""
    if cfg.protocol is not None:
        return cfg.protocol.expanded()
    electrode, t_end = cfg.electrochemistry.electrode, cfg.time.t_end
    if electrode.mode == "potentiostatic":
        return [Segment(mode="potentiostatic", potential=electrode.potential, duration=t_end)]
    i = electrode.current_density
    return [
        Segment(mode="galvanostatic", current_density=abs(i), direction="plate" if i >= 0 else "strip", duration=t_end)
    ]


def segment_ends(segments: list[Segment]) -> list[float]:
    """Cumulative end times (s) of the segments."""
    return list(itertools.accumulate(s.duration for s in segments))


def segment_index(ends: list[float], t: float, tol: float = 1e-9) -> int:
    """Index of the segment a step starting at t belongs to: the first whose end lies after
    t (a step that starts on a boundary belongs to the next segment). Past the last end,
    the last segment."""
    for k, end in enumerate(ends):
        if t < end * (1 - tol):
            return k
    return len(ends) - 1


def protocol_end_conflict(data: dict) -> str | None:
    """A one-line error if a user's config gives both a protocol and a time.t_end other than
    the protocol's duration, else None. Called on the user's own keys (before defaults are
    merged), where "given" can be told apart from "defaulted"."""
    protocol, time = data.get("protocol"), data.get("time")
    if not isinstance(protocol, dict) or not isinstance(time, dict) or time.get("t_end") is None:
        return None
    try:
        duration = Protocol.model_validate(protocol).duration
        t_end = to_si(time["t_end"], "time")
    except ValueError:
        return None  # reported with its key path by the schema
    if abs(t_end - duration) > 1e-9 * duration:
        return (
            f"time.t_end: {t_end:g} s differs from the protocol's total duration {duration:g} s; "
            "remove time.t_end (a protocol sets the end of the run) or change the protocol"
        )
    return None
