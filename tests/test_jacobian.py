"""The Jacobian Newton uses is the derivative of the residual it solves, on the full coupled
problem (two potentials, supply-limited kinetics, mechanics with J2 plasticity yielding).

Newton converges quadratically only with the exact tangent. The residual holds pointwise
(lumped) reaction terms, the mu field, the return map with its yield branch; any term whose
Jacobian contribution is lagged, simplified (an elastic tangent where the material yields)
or assembled with other quadrature than the residual's breaks it. The check is directional:
for random directions v, J(x) v against the central difference (F(x + e v) - F(x - e v)) / 2e
with e in 1e-7..1e-10, at a state taken in the middle of a step in which the metal yields. The
rows of each field are compared separately, so a wrong block cannot hide behind a large one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import merge, rprint

from mpi4py import MPI

from nzsp_fem.config import parse_config
from nzsp_fem.problem import CoupledProblem
from nzsp_fem.run import Simulation
from nzsp_fem.solver import CoupledSolver

COMM = MPI.COMM_WORLD
MESH_CACHE = str(Path(__file__).resolve().parents[1] / "meshes")

CONFIG = {
    "domain": {"dim": 2, "size": ["0.5 um", "0.3 um"]},
    "microstructure": {"grains": 2, "seeds": [["0.2 um", "0.1 um"], ["0.25 um", "0.22 um"]], "gb_width": "30 nm"},
    "mesh": {"size_grain": "40 nm", "size_gb": "15 nm", "size_nucleus": "12 nm", "cache_dir": MESH_CACHE},
    "nuclei": {"radius": "50 nm", "positions": [["0 um", "0.15 um"], ["0.3 um", "0.15 um"]]},
    "materials": {"transport": "nernst-einstein", "grain_boundary": {"electronic_conductivity": "1e-3 S/m"}},
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m", "reaction_ramp_time": 0.0, "kinetics": "bounded"},
    "electrochemistry": {"potentials": "two", "electrode": {"mode": "potentiostatic", "potential": "-0.45 V"}},
    "mechanics": {"enabled": True, "plasticity": True},
    "solver": {"preset": "direct", "rtol": 1e-10, "atol": 1e-10},
}
# Per field the smallest error over these steps counts: round-off grows as 1/e (the phi rows
# need e >= 1e-8), while a yield-surface kink inside the quotient needs e <= 1e-9 (u, mu);
# on 2 ranks a point within 1e-9 of the yield surface once left mu at 7e-5, so 1e-10 too.
# A wrong Jacobian block is wrong at every e.
EPS = (1e-7, 1e-8, 1e-9, 1e-10)
TOL = 1e-5


def directional_errors(solver: CoupledSolver, rng, scale_rows=None) -> dict:
    """Per field: min over the steps e of the max over 3 directions of |J v - FD(v)| / |J v|
    restricted to that field's rows."""
    pb = solver.problem
    snes = solver.snes
    x = pb.w.x.petsc_vec.copy()
    J = snes.assemble_jacobian(x).copy()
    if scale_rows is not None:
        J.diagonalScale(scale_rows, None)
    n_owned = pb.W.dofmap.index_map.size_local * pb.W.dofmap.index_map_bs
    rows = {f.name: np.asarray(pb.subspaces[f.name][1]) for f in pb.table}
    rows = {k: v[v < n_owned] for k, v in rows.items()}
    worst = {k: {eps: 0.0 for eps in EPS} for k in rows}
    for _ in range(3):
        v = smooth_direction(pb, rng)
        for bc in pb.bcs:  # Dirichlet rows are identity in J and fixed in F: leave them out
            v.array[bc.dof_indices()[0][: bc.dof_indices()[1]]] = 0.0
        jv = J.createVecLeft()
        J.mult(v, jv)
        for eps in EPS:
            fd = []
            for sign in (1.0, -1.0):
                xs = x.copy()
                xs.axpy(sign * eps, v)
                pb.w.x.petsc_vec.setArray(xs.array)
                pb.w.x.scatter_forward()
                fd.append(snes.assemble_residual(xs).copy())
            diff = (fd[0].array - fd[1].array) / (2 * eps) - jv.array
            for name, idx in rows.items():
                num = COMM.allreduce(float(np.sum(diff[idx] ** 2)), op=MPI.SUM) ** 0.5
                den = COMM.allreduce(float(np.sum(jv.array[idx] ** 2)), op=MPI.SUM) ** 0.5
                worst[name][eps] = max(worst[name][eps], num / den)
    pb.w.x.petsc_vec.setArray(x.array)
    pb.w.x.scatter_forward()
    return {name: min(by_eps.values()) for name, by_eps in worst.items()}


def smooth_direction(pb: CoupledProblem, rng):
    """A direction of O(1) smooth waves per field (random phases). Dof-wise random noise
    would strain each cell by ~1/h per unit step and push many quadrature points across the
    yield surface inside the difference quotient, where F has a kink and no derivative."""
    v = pb.w.x.petsc_vec.duplicate()
    values = np.zeros(v.getLocalSize())
    n_owned = values.size
    for f in pb.table:
        space, dofs = pb.subspaces[f.name]
        dofs = np.asarray(dofs)
        x = space.tabulate_dof_coordinates()
        bs = space.dofmap.index_map_bs
        x = np.repeat(x, bs, axis=0)
        k = rng.uniform(2.0, 6.0, 2)
        phase = rng.uniform(0.0, 2 * np.pi, 2)
        wave = np.sin(k[0] * x[:, 0] + phase[0]) * np.cos(k[1] * x[:, 1] + phase[1])
        owned = dofs < n_owned
        values[dofs[owned]] = wave[owned]
    v.setArray(values)
    return v


@pytest.fixture(scope="module")
def yielding_state():
    """The coupled problem in the middle of a step in which the metal yields: solved (not
    yet committed) at t = 3e-5 s."""
    cfg = parse_config(merge({}, CONFIG))
    sim = Simulation(cfg, COMM)
    pb, solver, dt = sim.problem, sim.solver, 1e-5
    sim.step(dt)
    sim.step(dt)
    report = solver.try_step(sim.t, dt)  # one attempt, left uncommitted
    assert report.converged, report.reason_name
    # Plastic flow in this step, at the state tested: commit the return map to see where p
    # grows, then put the committed (start-of-step) plastic state back.
    plastic = pb.plastic
    before = plastic.snapshot()
    plastic.commit(pb.ret)
    flowing = COMM.allreduce(int(np.sum(plastic.p.x.array > before[1] + 1e-12)), op=MPI.SUM)
    plastic.restore(before)
    assert flowing > 0
    yield solver, flowing
    solver.destroy()


def test_jacobian_is_the_residual_derivative(yielding_state):
    """Every field's rows of J v match the central difference to 1e-5 relative (measured
    2e-10 (eta) .. 8e-7 (phi_e); u 7e-10, mu 5e-10 with the metal yielding at ~1700
    quadrature points). Catches a lagged or simplified term of the Jacobian in any block
    (the elastic tangent where the metal yields, a reaction derivative dropped, a lumped
    term assembled with other quadrature in J than in F); the planted 1e-3 scaling of one
    block below shows the check resolves errors far smaller than what slows Newton."""
    solver, flowing = yielding_state
    rng = np.random.default_rng(7 + COMM.rank)
    worst = directional_errors(solver, rng)
    rprint(f"\nplastic points flowing: {flowing}; |Jv - FD| / |Jv| per field: {worst}")
    assert all(err < TOL for err in worst.values()), worst


def test_planted_block_error_is_seen(yielding_state):
    """The same check with the u rows of J scaled by 1 + 1e-3 fails on u and only on u."""
    solver, _ = yielding_state
    pb = solver.problem
    scale = pb.w.x.petsc_vec.duplicate()
    scale.set(1.0)
    n_owned = pb.W.dofmap.index_map.size_local * pb.W.dofmap.index_map_bs
    u_rows = np.asarray(pb.subspaces["u"][1])
    scale.array[u_rows[u_rows < n_owned]] = 1.0 + 1e-3
    worst = directional_errors(solver, np.random.default_rng(11 + COMM.rank), scale_rows=scale)
    assert worst["u"] > 10 * TOL
    assert all(err < TOL for name, err in worst.items() if name != "u"), worst
