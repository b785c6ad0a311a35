"""How the coupled problem is solved: one SNES on the mixed space with the configured
preset, the start-up solves that make the initial state consistent, and the attempt /
accept / roll back cycle of one backward-Euler step."""

from __future__ import annotations

import numpy as np

from mpi4py import MPI

from dolfinx import fem

from ..problem import CoupledProblem
from .presets import field_splits, linear_startup_options, nonlinear_startup_options, solver_options, variable_bounds
from .snes import SNESProblem, SolveReport


class CoupledSolver:
    def __init__(self, problem: CoupledProblem):
        self.problem = pb = problem
        cfg = pb.cfg
        # A unique options prefix per solver: a study builds several in one process.
        self.snes = SNESProblem(pb.F, pb.w, pb.bcs, solver_options(cfg))
        if cfg.solver.preset == "iterative":
            self.snes.snes.getKSP().getPC().setFieldSplitIS(*field_splits(pb))
        if cfg.solver.bounds:
            self._bounds = variable_bounds(pb)
            self.snes.set_bounds(*self._bounds)

    def initialize(self) -> None:
        """eta from the nuclei, uniform initial values, then phi and u consistent with eta.

        A straight-line phi through a metal nucleus makes the first implicit step dissolve
        it, so phi starts from steady conduction with the initial eta, and u from mechanical
        equilibrium with its eigenstrain (plastic state committed).
        """
        pb = self.problem
        eta0 = fem.Function(pb.collapsed_space("eta"))
        eta0.interpolate(pb.initial_eta)
        pb.set_sub("eta", eta0.x.array)
        for f in pb.table:
            if f.initial is not None:
                pb.set_sub(f.name, np.log(f.initial) if f.logarithmic else f.initial)
        startup = pb.potential_startup(eta0)
        if startup is not None:
            F, phi, bcs = startup
            _solve_once(F, phi, bcs, linear_startup_options(), "nzsp_init_phi_", "initial potential solve")
            pb.set_sub("phi", phi.x.array)
        else:
            for index, name in enumerate(("phi", "phi_e")):
                x = pb.collapsed_space(name).tabulate_dof_coordinates().T
                pb.set_sub(name, pb.initial_potentials(x)[index])
        if pb.mechanics:
            F, u, bcs, ret = pb.mechanics_startup(eta0)
            _solve_once(F, u, bcs, nonlinear_startup_options(pb.cfg), "nzsp_init_u_", "initial mechanical equilibrium")
            if ret is not None:
                pb.plastic.commit(ret)
            pb.set_sub("u", u.x.array)
        pb.w.x.petsc_vec.copy(pb.w_old.x.petsc_vec)
        pb.w_old.x.scatter_forward()

    def reaction_rate_at(self, t: float) -> float:
        """L_eta t0, ramped quadratically from 0 over reaction_ramp_time (start-up aid)."""
        pb = self.problem
        pf = pb.cfg.phase_field
        ramp = 1.0 if pf.reaction_ramp_time <= 0 else min(1.0, (t / pf.reaction_ramp_time) ** 2)
        return pf.reaction_rate * pb.scaling.time * ramp

    def try_step(self, t: float, dt: float) -> SolveReport:
        """Solve for the state at t + dt (SI seconds). On failure, the state is rolled back."""
        pb = self.problem
        pb.dt.value = dt / pb.scaling.time
        pb.reaction.value = self.reaction_rate_at(t + dt)
        report = self.snes.solve()
        finite = pb.comm.allreduce(bool(np.all(np.isfinite(pb.w.x.array))), op=MPI.LAND)
        if report.converged and not finite:
            report.converged = False
            report.reason_name = "NONFINITE_STATE"
        if not report.converged:
            pb.rollback()
        return report

    def destroy(self) -> None:
        self.snes.destroy()


def _solve_once(F, u, bcs, options: dict, prefix: str, what: str) -> None:
    solver = SNESProblem(F, u, bcs, options, prefix=prefix)
    report = solver.solve()
    solver.destroy()
    if not report.converged:
        raise RuntimeError(f"{what} failed: {report.reason_name}")
