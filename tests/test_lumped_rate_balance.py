"""Na and charge balance of the printed kinetics with ``solver.lumped_rate`` (the default).

tests/test_physics.py checks these balances on its polycrystal with the consistent rate
(``lumped_rate: false``): its start, the full Butler-Volmer rate from the first step without
the reaction ramp, has no solution with the lumped rate on that 15 nm mesh (see its BASE).
Here the same polycrystal (3 grains, a 60 nm nucleus on the electrode, -0.45 V, no-flux
right edge) runs with the lumped rate and the reaction ramp (20 us, quadratic), as a user
run does, 30 fixed steps of 1 us. Expectations that do not come from the solver:

1. Na conservation: summing the c rows over all test functions leaves
   [Delta int c + (c_m/c0) Delta int eta] / dt', because the lumped eta rows carry the same
   weak rate as the c sink; so per step |Delta N| / N is bounded by the final residual
   norm (the bound of test_physics.test_sodium_conserved_without_reservoir).
2. Charge balance: I_in(right) - I_out(left) = n F c_m d(int eta)/dt at every step, the
   stored charge being positive (plating), and the diagnostics agreeing with it.
3. Not vacuous: int eta grows by more than 2 %.

Exact linear solves (preset direct): the balances hold only as far as Newton's last
correction is exact.
"""

from __future__ import annotations

import math

import pytest
from support import rprint
from test_physics import RIGHT, boundary_current, make_config, make_problem, scalar_nodes, stored_charge_rate

from nzsp_fem.physics.scaling import Scaling

RAMP = 2e-5  # s
DT = 1e-6  # s
STEPS = 30


def test_lumped_rate_conserves_sodium_and_charge():
    cfg = make_config(
        {
            "solver": {"lumped_rate": True, "preset": "direct"},
            "phase_field": {"reaction_ramp_time": RAMP},
            "electrochemistry": {"reservoir": False},
        }
    )
    pb = make_problem(cfg)
    sr = cfg.electrochemistry.c_metal / cfg.electrochemistry.c0
    t0 = Scaling(cfg).time
    n_nodes = scalar_nodes(pb)
    initial = pb.diagnostics()
    n0, eta0 = initial.total_sodium_mol, initial.integral_eta
    eta_prev, bound = eta0, 0.0
    rprint(f"\n[lumped rate, ramp {RAMP:.0e} s] N0 = {n0:.15e} mol/m, int eta0 = {eta0:.8f}")
    for k in range(STEPS):
        info = pb.sim.step(DT)
        rep, d = info.report, info.diagnostics
        il, ir = pb.electrode_current(), boundary_current(pb, RIGHT)
        bound += DT / t0 * (1 + sr) * math.sqrt(n_nodes) * rep.residual_norm / (d.integral_c + sr * d.integral_eta)
        drift = abs(d.total_sodium_mol - n0) / n0
        stored = stored_charge_rate(cfg, eta_prev, d.integral_eta, DT)
        eta_prev = d.integral_eta
        scale = max(abs(il), abs(ir), abs(stored))
        rprint(
            f"  step {k + 1:2d}: int eta = {d.integral_eta:.8f}, Na drift {drift:.2e} (bound {bound:.2e}), "
            f"I_left {il:+.5e}, I_right(in) {-ir:+.5e}, stored {stored:+.5e} A/m, "
            f"balance error {(-ir - il - stored) / scale:.1e}"
        )
        assert drift <= max(bound, 1e-12), f"step {k + 1}: Na drift {drift:.3e} above the solver bound {bound:.3e}"
        assert stored > 0
        assert -ir - il == pytest.approx(stored, abs=1e-8 * scale)
        assert d.deposition_current_A == pytest.approx(stored, abs=1e-8 * scale)
        assert d.reservoir_current_A == pytest.approx(-ir, abs=1e-8 * scale)
    assert bound < 1e-6
    growth = eta_prev / eta0 - 1
    rprint(f"  int eta grew by {100 * growth:.2f} %")
    assert growth > 0.02
