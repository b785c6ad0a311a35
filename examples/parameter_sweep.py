# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # A parameter sweep with a custom measure
#
# The grain-boundary ionic conductivity is swept on the demo's microstructure. Each case
# is stepped by hand (nothing is written to disk) and measured with a quantity nzsp-fem
# does not report itself: the area of metal (eta > 1/2) inside the grain boundaries,
# integrated with UFL over the GB indicator.
#
# Run from the repository root: `bin/nzsp-env python3 examples/parameter_sweep.py`
# (or under `mpirun -n 2`). `NZSP_EXAMPLE_T_END` shortens the runs (the tests use it).

# %%
import os

from mpi4py import MPI

import ufl
from dolfinx import fem

import nzsp_fem

T_END = os.environ.get("NZSP_EXAMPLE_T_END", "1 ms")
VALUES = ["2.5 S/m", "250 S/m"]
comm = MPI.COMM_WORLD


# %% [markdown]
# The measure. The mesh is in scaled units (lengths divided by `problem.scaling.length`),
# so an area integral is multiplied by that length squared; `problem.beta` is 1 inside the
# grain boundaries and 0 in the grains.


# %%
def metal_in_grain_boundaries(sim: nzsp_fem.Simulation) -> float:
    """Area of metal inside the GBs (m^2 per metre of depth)."""
    problem = sim.problem
    eta = sim.fields.eta
    metal = ufl.conditional(ufl.gt(eta, 0.5), 1.0, 0.0)
    form = fem.form(metal * problem.beta * ufl.dx(domain=problem.mesh))
    area = comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM)
    return area * problem.scaling.length**problem.dim


# %% [markdown]
# The sweep: one config per value (validated like a YAML file), stepped to the end.

# %%
rows = []
for value in VALUES:
    cfg = nzsp_fem.load_config(
        "configs/demo.yaml",
        overrides={
            "materials.grain_boundary.conductivity": value,
            "time.t_end": T_END,
            "time.stop_at_charge": None,
            "output.verbosity": 0,
        },
    )
    with nzsp_fem.Simulation(cfg, comm) as sim:
        peak = 0.0
        while not sim.finished:
            if sim.step() is None:
                break
            peak = max(peak, sim.diagnostics.max_interface_current_density_A_m2)
        rows.append((value, sim.t, sim.state.steps, metal_in_grain_boundaries(sim), peak))

# %%
if comm.rank == 0:
    print(f"{'sigma_GB':>10} {'t (s)':>10} {'steps':>6} {'GB metal (m^2)':>15} {'max i (A/m^2)':>14}")
    for value, t, steps, area, peak in rows:
        print(f"{value:>10} {t:10.3e} {steps:6d} {area:15.4e} {peak:14.4e}")
