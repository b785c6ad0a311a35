"""Adaptive backward-Euler step control: grow after easy solves, cut and retry after a
failed one, land exactly on output times, respect dt_min / dt_max."""

from __future__ import annotations

from dataclasses import dataclass, field

# Times closer than this fraction of a step count as equal (output landing).
_TIME_TOL = 1e-9


@dataclass
class StepController:
    t_end: float
    dt: float
    dt_min: float
    dt_max: float
    growth: float = 1.5
    cut: float = 0.5
    easy_iterations: int = 5
    output_times: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.output_times = sorted(t for t in self.output_times if 0 < t <= self.t_end)
        if not self.output_times or abs(self.output_times[-1] - self.t_end) > _TIME_TOL * self.t_end:
            self.output_times.append(self.t_end)

    @classmethod
    def from_config(cls, time_cfg, dt: float | None = None) -> "StepController":
        outputs = time_cfg.output_times
        if outputs is None:
            outputs = [time_cfg.t_end * (k + 1) / time_cfg.n_outputs for k in range(time_cfg.n_outputs)]
        return cls(
            t_end=time_cfg.t_end,
            dt=dt if dt is not None else time_cfg.dt_initial,
            dt_min=time_cfg.dt_min,
            dt_max=time_cfg.dt_max,
            growth=time_cfg.growth_factor,
            cut=time_cfg.cut_factor,
            easy_iterations=time_cfg.easy_iterations,
            output_times=outputs,
        )

    def next_output(self, t: float) -> float:
        for t_out in self.output_times:
            if t_out > t * (1 + _TIME_TOL) + _TIME_TOL * self.dt_min:
                return t_out
        return self.t_end

    def propose(self, t: float) -> tuple[float, bool]:
        """(dt for this attempt, whether it lands on an output time)."""
        target = self.next_output(t)
        remaining = target - t
        if remaining <= self.dt * (1 + 1e-6):
            return remaining, True
        # Avoid leaving a sliver smaller than dt_min before the next output time.
        if remaining - self.dt < self.dt_min:
            return remaining / 2, False
        return self.dt, False

    def accepted(self, newton_iterations: int, dt_used: float, landed: bool) -> None:
        # A step shortened to land on an output time does not shrink the running dt.
        base = self.dt if landed else dt_used
        if newton_iterations <= self.easy_iterations:
            base *= self.growth
        self.dt = min(self.dt_max, max(self.dt_min, base))

    def failed(self, dt_used: float) -> bool:
        """Cut dt after a failed attempt; False if it would fall below dt_min."""
        new = dt_used * self.cut
        if new < self.dt_min * (1 - 1e-12):
            return False
        self.dt = new
        return True

    def is_output_time(self, t: float) -> bool:
        return any(abs(t - t_out) <= _TIME_TOL * max(t_out, 1e-300) for t_out in self.output_times)

    def finished(self, t: float) -> bool:
        return t >= self.t_end * (1 - _TIME_TOL)
