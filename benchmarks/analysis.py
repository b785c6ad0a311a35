"""Analysis of collected case results: growth exponents with size, parallel efficiency, the
adaptive controller's step count and the paper-case estimate. StepController is imported
where it is used: nzsp_fem.solver imports DOLFINx (and so initialises MPI), which the
driver process must not do while it launches mpirun workers."""

from __future__ import annotations

import math
from typing import Any

from nzsp_fem.config import Config


def fit_slope(xs, ys):
    """Least-squares slope of log y against log x."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else None


def controller_steps(
    newton_per_step: float, time_cfg=None, t: float = 0.0, dt: float | None = None, until: float | None = None
) -> int:
    """Accepted steps the adaptive controller needs from (t, dt) to ``until`` (default t_end) if
    every step is accepted with ``newton_per_step`` Newton iterations; time settings default to
    the paper defaults of config.TimeStepping."""
    from nzsp_fem.solver.timestepping import StepController

    ctl = StepController.from_config(time_cfg or Config().time, dt=dt)
    return len(ctl.dry_run(t, lambda k: int(round(newton_per_step)), until))


def successful(results, variants=False):
    """Successful results; without the candidate-fix variants unless ``variants``."""
    return [r for r in results if "failed" not in r and (variants or not r.get("variant"))]


def analyse(results: list[dict]) -> dict:
    ok = successful(results)
    a: dict[str, Any] = {"growth": {}, "parallel": {}, "targets": []}
    for preset in ("direct", "iterative"):
        rows = sorted((r for r in ok if r["preset"] == preset and r["ranks"] == 1), key=lambda r: r["dofs"])
        if len(rows) >= 2:
            dofs = [r["dofs"] for r in rows]
            a["growth"][preset] = {
                "dofs": dofs,
                "slope_step_wall": fit_slope(dofs, [r["step_wall_s"] for r in rows]),
                "slope_step_cpu": fit_slope(dofs, [r["step_cpu_s"] for r in rows]),
                "slope_newton_wall": fit_slope(dofs, [r["newton_wall_s"] for r in rows]),
                "pairwise": [
                    {
                        "from": r0["dofs"],
                        "to": r1["dofs"],
                        "dof_ratio": r1["dofs"] / r0["dofs"],
                        "time_ratio": r1["step_wall_s"] / r0["step_wall_s"],
                        "cpu_ratio": r1["step_cpu_s"] / r0["step_cpu_s"],
                        "excess": (r1["step_wall_s"] / r0["step_wall_s"]) / (r1["dofs"] / r0["dofs"]),
                        "excess_cpu": (r1["step_cpu_s"] / r0["step_cpu_s"]) / (r1["dofs"] / r0["dofs"]),
                    }
                    for r0, r1 in zip(rows, rows[1:])
                ],
            }
        for r2 in (r for r in ok if r["preset"] == preset and r["ranks"] == 2):
            r1 = next(
                (r for r in ok if r["preset"] == preset and r["ranks"] == 1 and r["h_factor"] == r2["h_factor"]), None
            )
            if r1:
                a["parallel"][preset] = {
                    "dofs": r2["dofs"],
                    "t1": r1["step_wall_s"],
                    "t2": r2["step_wall_s"],
                    "speedup": r1["step_wall_s"] / r2["step_wall_s"],
                    "efficiency": r1["step_wall_s"] / (2 * r2["step_wall_s"]),
                    "efficiency_newton": r1["newton_wall_s"] / (2 * r2["newton_wall_s"]),
                    "c1": r1["step_cpu_s"],
                    "c2": r2["step_cpu_s"],
                    "efficiency_cpu": r1["step_cpu_s"] / (2 * r2["step_cpu_s"]),
                    "newton_1": r1["newton_per_step"],
                    "newton_2": r2["newton_per_step"],
                    "linear_1": r1["linear_per_newton"],
                    "linear_2": r2["linear_per_newton"],
                }
    return a


def paper_estimate(results: list[dict]) -> dict | None:
    """Minutes to t = 0.05 s for the paper case on 2 ranks: an estimate from the measured
    time per step / per Newton iteration (largest 2-rank case) and the step count of the
    adaptive controller (simulated; corrected by the adaptive probe where one was run)."""
    ok = [r for r in successful(results) if r["ranks"] == 2 and r["converged"]]
    if not ok:
        return None
    big = [r for r in ok if r["dofs"] >= 200_000]
    pool = big or ok
    # The faster preset at the largest size.
    r = min((x for x in pool if x["dofs"] == max(y["dofs"] for y in pool)), key=lambda x: x["step_wall_s"])
    tc = Config().time
    easy = tc.easy_iterations
    newton = r["newton_per_step"]
    n_ideal = controller_steps(newton, tc)
    est = {
        "case": r["id"],
        "dofs": r["dofs"],
        "step_s": r["step_wall_s"],
        "newton": newton,
        "newton_s": r["newton_wall_s"],
        "ideal_steps": n_ideal,
        "dt_initial": tc.dt_initial,
        "growth": tc.growth_factor,
        "easy": easy,
        "dt_max": tc.dt_max,
        "n_outputs": tc.n_outputs,
        "t_end": tc.t_end,
        "probe": None,
    }
    probe_case = next((x for x in successful(results) if x.get("adaptive_probe")), None)
    probe = probe_case["adaptive_probe"] if probe_case else None
    if probe_case and probe:
        est["probe_case"] = f"{probe_case['id']}, {probe_case['dofs']} DOFs"
        acc = [a["dt"] for a in probe["attempts"] if a["converged"]]
        # Stalled: dt ended far below the largest accepted dt, after rejections.
        est["stalled"] = bool(acc) and probe["rejected"] > 0 and probe["dt_end"] < 1e-2 * max(acc)
    if probe and probe["accepted"] > 0:
        attempts, t_resume, dt_resume = probe["attempts"], probe["t_end"], probe["dt_end"]
        if est.get("stalled"):
            # Count the probe only up to the stall onset (dt below 1 % of the largest accepted
            # dt so far) and resume from there with the last accepted dt: "had it not stalled".
            best, last_ok = 0.0, None
            for k, att in enumerate(attempts):
                if best > 0 and att["dt"] < 1e-2 * best:
                    attempts, t_resume, dt_resume = attempts[:k], att["t"], last_ok
                    break
                if att["converged"]:
                    best, last_ok = max(best, att["dt"]), att["dt"]
            est["stall_onset_t"] = t_resume
        est["probe_attempts_counted"] = len(attempts)
        n_pre = controller_steps(newton, tc, until=probe["t_start"])
        n_post = controller_steps(newton, tc, t=t_resume, dt=dt_resume)
        probe_newton = sum(a["newton"] for a in attempts)
        n_attempts = n_pre + len(attempts) + n_post
        minutes = ((n_pre + n_post) * r["step_wall_s"] + probe_newton * r["newton_wall_s"]) / 60
        low = ((n_pre + n_post) * r["step_cpu_s"] + probe_newton * r["newton_cpu_s"]) / 60
        high = ((n_pre + n_post) * max(easy, newton) * r["newton_wall_s"] + probe_newton * r["newton_wall_s"]) / 60
        est.update(
            probe=probe,
            steps=n_attempts,
            n_pre=n_pre,
            n_post=n_post,
            minutes=minutes,
            minutes_low=low,
            minutes_high=high,
        )
        est["variants"] = [
            {
                "id": v["id"],
                "step_s": v["step_wall_s"],
                "minutes": ((n_pre + n_post) * v["step_wall_s"] + probe_newton * v["newton_wall_s"]) / 60,
            }
            for v in successful(results, variants=True)
            if v.get("variant") and v["ranks"] == 2 and v["dofs"] == r["dofs"] and v["converged"]
        ]
    else:
        est.update(
            steps=n_ideal,
            minutes=n_ideal * r["step_wall_s"] / 60,
            minutes_low=n_ideal * r["step_cpu_s"] / 60,
            minutes_high=n_ideal * max(easy, newton) * r["newton_wall_s"] / 60,
        )
    return est
