# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # A run with a user callback
#
# The demo with its standard outputs (`Simulation.run`: timeseries.csv, fields, figures,
# checkpoints, summary.json) and two observers of the loop:
#
# * a function, called after every accepted step, that keeps the front position;
# * an object that bounds the step while the front is near a depth of interest and stops
#   the run once the front has passed it (`sim.stop`), with the reason in summary.json.
#
# Run from the repository root: `bin/nzsp-env python3 examples/callback.py`.
# `NZSP_EXAMPLE_T_END` and `NZSP_EXAMPLE_OUTPUT` shorten the run and move its directory
# (the tests use them).

# %%
import os

from mpi4py import MPI

import nzsp_fem

T_END = os.environ.get("NZSP_EXAMPLE_T_END", "5 ms")
OUTPUT = os.environ.get("NZSP_EXAMPLE_OUTPUT", "results/example-callback")
STOP_DEPTH = 95e-9  # m: the front's depth at which the run ends

cfg = nzsp_fem.load_config("configs/demo.yaml", overrides={"time.t_end": T_END, "time.stop_at_charge": None})
sim = nzsp_fem.Simulation(cfg, MPI.COMM_WORLD)

# %% [markdown]
# A function observer: `info` is the accepted step (time, dt, Newton report, diagnostics).

# %%
front = []


def record_front(sim: nzsp_fem.Simulation, info: nzsp_fem.StepInfo) -> None:
    front.append((info.t, info.diagnostics.connected_penetration_m))


sim.add_observer(record_front)


# %% [markdown]
# An object observer: `max_dt` bounds the next step, `on_step_accepted` may end the run.


# %%
class StopAtDepth:
    def __init__(self, depth: float, dt_near: float):
        self.depth, self.dt_near = depth, dt_near

    def max_dt(self, sim: nzsp_fem.Simulation) -> float | None:
        near = sim.diagnostics.connected_penetration_m > 0.9 * self.depth
        return self.dt_near if near else None

    def on_step_accepted(self, sim: nzsp_fem.Simulation, info: nzsp_fem.StepInfo) -> None:
        if info.diagnostics.connected_penetration_m >= self.depth:
            sim.stop(f"front passed {self.depth * 1e9:.0f} nm")


sim.add_observer(StopAtDepth(STOP_DEPTH, dt_near=5e-5))

# %%
summary = sim.run(output=OUTPUT, overwrite=True)
if MPI.COMM_WORLD.rank == 0:
    print(f"{summary['status']} ({summary['reason']}): {summary['steps']} steps to t = {summary['t_final']:.3e} s")
    print(f"front: {front[0][1] * 1e9:.0f} nm -> {front[-1][1] * 1e9:.0f} nm over {len(front)} steps")
