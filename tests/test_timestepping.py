"""StepController (solver/timestepping.py), the adaptive dt of the time loop, in pure
Python: landing on output times, the dt_max clamp, growth after easy solves only, cuts
after a failure and the refusal below dt_min, no sliver before an output time, and a
landing step that does not shrink the running dt.

Every expectation is worked out by hand from the rules in the module docstring; the
driver below (StepController.dry_run) replays the loop's use of the controller (propose,
then accepted) without a solver.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nzsp_fem.solver import StepController

HARD = 99  # Newton iterations of a hard solve: never "easy"


def drive(ctl: StepController, iterations=lambda k: HARD, max_steps=100):
    """Accept every proposed step (StepController.dry_run); returns [(t, dt, landed)]."""
    steps = ctl.dry_run(0.0, iterations, max_steps=max_steps)
    assert ctl.finished(steps[-1][0]), "the controller never reaches t_end"
    return steps


def test_lands_exactly_on_every_output_time_and_t_end():
    """Catches a controller that steps over an output time (fields written at the wrong t)
    or stops short of / past t_end. dt = 0.3 with outputs at 0.5 and 1.0: 0.3, then the
    0.2 that lands on 0.5, then 0.3, 0.2 landing on 1.0."""
    ctl = StepController(t_end=1.0, dt=0.3, dt_min=1e-3, dt_max=1.0, output_times=[0.5])
    steps = drive(ctl)
    assert [s[1] for s in steps] == pytest.approx([0.3, 0.2, 0.3, 0.2], rel=1e-12)
    assert [s[2] for s in steps] == [False, True, False, True]
    assert steps[1][0] == pytest.approx(0.5, rel=1e-15, abs=0)
    assert steps[-1][0] == pytest.approx(1.0, rel=1e-15, abs=0)
    assert ctl.is_output_time(steps[1][0]) and ctl.is_output_time(steps[-1][0])
    assert not ctl.is_output_time(steps[0][0]) and not ctl.is_output_time(steps[2][0])


def test_output_times_outside_the_run_are_dropped_and_t_end_added():
    """Catches an output list that keeps t <= 0 or t > t_end (a step that could never land)
    or forgets t_end (the last fields never written); the list is sorted."""
    ctl = StepController(t_end=2.0, dt=0.1, dt_min=1e-3, dt_max=1.0, output_times=[1.5, 0.0, 3.0, 0.5])
    assert ctl.output_times == [0.5, 1.5, 2.0]
    # t_end given explicitly is not duplicated.
    ctl = StepController(t_end=2.0, dt=0.1, dt_min=1e-3, dt_max=1.0, output_times=[1.0, 2.0])
    assert ctl.output_times == [1.0, 2.0]


def test_from_config_spreads_n_outputs_evenly():
    """Catches n_outputs read as intervals off by one (t_end/(n+1)) or outputs starting at 0,
    and a from_config that ignores an explicit dt (a restart's running dt)."""
    time_cfg = SimpleNamespace(
        t_end=4.0,
        dt_initial=0.5,
        dt_min=0.01,
        dt_max=2.0,
        growth_factor=1.5,
        cut_factor=0.5,
        easy_iterations=5,
        output_times=None,
        n_outputs=4,
        error_tolerance=None,
        max_interface_change=None,
    )
    ctl = StepController.from_config(time_cfg)
    assert ctl.output_times == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert ctl.dt == 0.5
    assert StepController.from_config(time_cfg, dt=0.125).dt == 0.125
    time_cfg.output_times = [0.3]
    assert StepController.from_config(time_cfg).output_times == pytest.approx([0.3, 4.0])


def test_dt_max_clamps_growth():
    """Catches growth that ignores dt_max: 0.6 * 2 = 1.2 is clamped to dt_max = 1.0, and it
    stays there after further easy steps."""
    ctl = StepController(t_end=100.0, dt=0.6, dt_min=1e-3, dt_max=1.0, growth=2.0)
    ctl.accepted(1, 0.6, False)
    assert ctl.dt == 1.0
    ctl.accepted(1, 1.0, False)
    assert ctl.dt == 1.0
    steps = drive(StepController(t_end=10.0, dt=0.6, dt_min=1e-3, dt_max=1.0, growth=2.0), lambda k: 1)
    assert max(dt for _, dt, _ in steps) <= 1.0 * (1 + 1e-12)


@pytest.mark.parametrize(
    "iterations, expected",
    [(1, 0.15), (5, 0.15), (6, 0.1), (HARD, 0.1)],
    ids=["easy", "at-easy-limit", "one-above", "hard"],
)
def test_grows_after_easy_steps_only(iterations, expected):
    """Catches growth after hard solves (or never), and an off-by-one at easy_iterations:
    <= 5 iterations grows 0.1 by 1.5, 6 keeps 0.1."""
    ctl = StepController(t_end=100.0, dt=0.1, dt_min=1e-3, dt_max=1.0, growth=1.5, easy_iterations=5)
    ctl.accepted(iterations, 0.1, False)
    assert ctl.dt == pytest.approx(expected, rel=1e-12)


def test_growth_compounds_over_easy_steps():
    """Catches a growth factor applied once instead of per step: 0.1 * 1.5**3 after three
    easy steps; the steps taken are 0.1, 0.15, 0.225."""
    ctl = StepController(t_end=100.0, dt=0.1, dt_min=1e-3, dt_max=10.0, growth=1.5)
    taken = [dt for _, dt, _ in ctl.dry_run(0.0, lambda k: 2, max_steps=3)]
    assert taken == pytest.approx([0.1, 0.15, 0.225], rel=1e-12)
    assert ctl.dt == pytest.approx(0.3375, rel=1e-12)


def test_failure_cuts_dt_and_refuses_below_dt_min():
    """Catches a cut that ignores cut_factor, a retry that is allowed below dt_min (a run
    that never stops) or one refused at exactly dt_min. dt 0.1, cut 0.5, dt_min 0.025:
    0.05, 0.025 (= dt_min: allowed), then 0.0125 refused with dt left at 0.025."""
    ctl = StepController(t_end=100.0, dt=0.1, dt_min=0.025, dt_max=1.0, cut=0.5)
    assert ctl.failed(0.1) is True and ctl.dt == pytest.approx(0.05, rel=1e-12)
    assert ctl.propose(0.0) == (pytest.approx(0.05, rel=1e-12), False)
    assert ctl.failed(0.05) is True and ctl.dt == pytest.approx(0.025, rel=1e-12)
    assert ctl.failed(0.025) is False
    assert ctl.dt == pytest.approx(0.025, rel=1e-12)


def test_failure_cuts_the_attempted_dt_not_the_running_one():
    """Catches a cut applied to the running dt instead of the step that failed: a landing
    step of 0.2 (running dt 0.3) that fails retries with 0.1, not 0.15."""
    ctl = StepController(t_end=1.0, dt=0.3, dt_min=1e-3, dt_max=1.0, cut=0.5, output_times=[0.2])
    dt, landed = ctl.propose(0.0)
    assert (dt, landed) == (pytest.approx(0.2), True)
    assert ctl.failed(dt)
    assert ctl.propose(0.0) == (pytest.approx(0.1, rel=1e-12), False)


def test_no_sliver_smaller_than_dt_min_before_an_output_time():
    """Catches a controller that takes full steps up to the output time and leaves a sliver
    below dt_min (which would then be a step no retry could cut): t_end 1, dt 0.45,
    dt_min 0.2. Full steps would be 0.45, 0.45, 0.1; the controller halves the remainder
    instead: 0.45, 0.275, 0.275."""
    ctl = StepController(t_end=1.0, dt=0.45, dt_min=0.2, dt_max=1.0)
    steps = drive(ctl)
    assert [s[1] for s in steps] == pytest.approx([0.45, 0.275, 0.275], rel=1e-12)
    assert [s[2] for s in steps] == [False, False, True]
    assert min(s[1] for s in steps) >= 0.2
    assert steps[-1][0] == pytest.approx(1.0, rel=1e-15, abs=0)


def test_remainder_within_rounding_of_dt_is_one_step():
    """Catches a strict `remaining < dt` test: 1 + 1e-7 left with dt = 1 is taken in one
    landing step, not as 1 and a 1e-7 sliver."""
    ctl = StepController(t_end=1.0 + 1e-7, dt=1.0, dt_min=1e-9, dt_max=2.0)
    steps = drive(ctl)
    assert len(steps) == 1 and steps[0][2] is True
    assert steps[0][0] == pytest.approx(1.0 + 1e-7, rel=1e-15)


def test_landing_step_does_not_shrink_the_running_dt():
    """Catches a running dt that collapses to the short landing step: with dt 0.3 and an
    output at 0.05 the landing step is 0.05, but the next steps are 0.3 again (hard
    solves) or 0.45 (easy: the running dt grows, not the landing step)."""
    hard = StepController(t_end=1.0, dt=0.3, dt_min=1e-3, dt_max=1.0, output_times=[0.05])
    steps = drive(hard)
    assert [s[1] for s in steps][:2] == pytest.approx([0.05, 0.3], rel=1e-12)
    assert steps[0][2] is True

    easy = StepController(t_end=1.0, dt=0.3, dt_min=1e-3, dt_max=1.0, growth=1.5, output_times=[0.05])
    dt, landed = easy.propose(0.0)
    easy.accepted(1, dt, landed)
    assert easy.dt == pytest.approx(0.45, rel=1e-12)


def test_step_shortened_by_a_cut_does_set_the_running_dt():
    """The counterpart of the landing rule: after a failure the accepted (cut) step is the
    new running dt. Catches `accepted` always keeping the old dt (which would retry the
    dt that just failed): 0.3 fails, 0.15 succeeds hard -> next 0.15."""
    ctl = StepController(t_end=10.0, dt=0.3, dt_min=1e-3, dt_max=1.0, cut=0.5)
    assert ctl.failed(0.3)
    dt, landed = ctl.propose(0.0)
    assert (dt, landed) == (pytest.approx(0.15), False)
    ctl.accepted(HARD, dt, landed)
    assert ctl.propose(dt) == (pytest.approx(0.15, rel=1e-12), False)


def accumulate(dt: float, n: int) -> float:
    """t after n steps of dt, added one by one as the time loop does (sum() of Python
    >= 3.12 compensates the rounding this test needs)."""
    t = 0.0
    for _ in range(n):
        t += dt
    return t


def test_finished_and_output_time_tolerances():
    """Catches exact float comparisons: a t one rounding error below t_end (a sum of
    steps) must count as finished and as the output time; a t one step early must not."""
    ctl = StepController(t_end=1.0, dt=0.1, dt_min=1e-9, dt_max=1.0, output_times=[0.3, 0.8])
    t_end = accumulate(0.1, 10)  # 0.9999999999999999
    assert t_end != 1.0
    assert ctl.finished(t_end) and ctl.is_output_time(t_end)
    assert not ctl.finished(0.9) and not ctl.is_output_time(0.9)
    # once on an output time (up to rounding, above or below) the next target is the one after
    above, below = accumulate(0.1, 3), accumulate(0.1, 8)  # 0.30000000000000004, 0.7999999999999999
    assert above != 0.3 and below != 0.8
    assert ctl.is_output_time(above) and ctl.is_output_time(below)
    assert ctl.next_landing(above) == 0.8
    assert ctl.next_landing(below) == 1.0
    assert ctl.next_landing(0.2) == 0.3


# Accuracy control: the next dt is dt * safety * sqrt(tol / error), between cut and growth.
def accurate(**kw) -> StepController:
    args = dict(t_end=100.0, dt=0.1, dt_min=1e-4, dt_max=10.0, growth=1.5, cut=0.5, error_tolerance=0.01)
    args.update(kw)
    return StepController(**args)


def test_error_estimate_sets_the_next_step():
    """Catches an exponent other than 1/2 (backward Euler's local error ~ dt^2), a missing
    safety factor (0.8), or growth/shrink limits not applied: error = tol/4 asks for 1.6x and
    gets the growth limit 1.5x; error = tol gives 0.8x; error = 2 tol gives 0.8/sqrt(2) =
    0.566x; error = 100 tol would give 0.08x and gets the cut limit 0.5x."""
    for error, factor in [(0.0025, 1.5), (0.01, 0.8), (0.02, 0.8 / 2**0.5), (1.0, 0.5)]:
        ctl = accurate()
        ctl.accepted(2, 0.1, False, error=error)
        assert ctl.dt == pytest.approx(0.1 * factor, rel=1e-12), error


def test_hard_solve_does_not_grow_even_when_accurate():
    """Catches the Newton safeguard lost in accuracy mode: a tiny error after a hard solve
    (more than easy_iterations) keeps dt, it does not grow it."""
    ctl = accurate(easy_iterations=5)
    ctl.accepted(HARD, 0.1, False, error=1e-8)
    assert ctl.dt == pytest.approx(0.1, rel=1e-12)


def test_inaccurate_step_is_rejected_and_shrunk():
    """Catches a step accepted above the tolerance, or a retry that does not shrink by the
    estimate: error 4 tol -> retry at 0.8 * sqrt(1/4) = 0.4 dt; 1.01 tol -> 0.8/sqrt(1.01) dt;
    at the lower limit 0.2 dt; refused below dt_min."""
    ctl = accurate()
    assert not ctl.too_inaccurate(0.01) and ctl.too_inaccurate(0.0101)
    assert not ctl.too_inaccurate(None)
    assert ctl.rejected(0.1, 0.04) and ctl.dt == pytest.approx(0.04, rel=1e-12)
    assert ctl.rejected(0.1, 0.0101) and ctl.dt == pytest.approx(0.08 * (1 / 1.01) ** 0.5, rel=1e-12)
    assert ctl.rejected(0.1, 100.0) and ctl.dt == pytest.approx(0.02, rel=1e-12)
    assert not accurate(dt_min=0.05).rejected(0.1, 100.0)
    assert not StepController(t_end=1.0, dt=0.1, dt_min=1e-3, dt_max=1.0).too_inaccurate(1e9)


def test_interface_motion_caps_the_step():
    """Catches the cap ignored or applied the wrong way up: max |delta eta| = 0.5 with a cap
    of 0.25 halves the step even when the error estimate would grow it; a small change
    (0.01) does not limit it."""
    ctl = accurate(max_interface_change=0.25)
    ctl.accepted(2, 0.1, False, error=1e-6, interface_change=0.5)
    assert ctl.dt == pytest.approx(0.05, rel=1e-12)
    ctl = accurate(max_interface_change=0.25)
    ctl.accepted(2, 0.1, False, error=1e-6, interface_change=0.01)
    assert ctl.dt == pytest.approx(0.15, rel=1e-12)


def test_accurate_landing_step_keeps_the_running_dt():
    """Catches a short step (landing on an output time) that shrinks the running dt in
    accuracy mode: its small error would otherwise be scaled from the short step."""
    ctl = accurate(dt=0.3, output_times=[0.05])
    dt, landed = ctl.propose(0.0)
    assert landed and dt == pytest.approx(0.05)
    ctl.accepted(2, dt, landed, error=1e-6)
    assert ctl.dt == pytest.approx(0.3, rel=1e-12)


def test_no_growth_right_after_a_retry():
    """Catches growth on the step after a rejected or failed attempt (the retry's size was a
    guess; growing again invites the next rejection): a tiny error right after a retry keeps
    dt, the step after that grows again."""
    for retry in ("rejected", "failed"):
        ctl = accurate()
        assert ctl.rejected(0.1, 0.04) if retry == "rejected" else ctl.failed(0.1)
        dt = ctl.dt
        ctl.accepted(2, dt, False, error=1e-8)
        assert ctl.dt == pytest.approx(dt, rel=1e-12), retry
        ctl.accepted(2, dt, False, error=1e-8)
        assert ctl.dt == pytest.approx(1.5 * dt, rel=1e-12), retry


def test_pi_control_after_the_first_estimate():
    """Catches the PI exponents swapped or the previous error ignored: after a first step
    with error tol/4 (plain rule, capped at 1.5x), a step with error tol gives
    0.8 * 1^0.35 * (1/4)^0.2 = 0.606x, not the plain rule's 0.8x."""
    ctl = accurate()
    ctl.accepted(2, 0.1, False, error=0.0025)
    assert ctl.dt == pytest.approx(0.15, rel=1e-12)
    ctl.accepted(2, 0.15, False, error=0.01)
    assert ctl.dt == pytest.approx(0.15 * 0.8 * 0.25**0.2, rel=1e-12)
