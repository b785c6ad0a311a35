"""How the coupled problem is solved: one SNES on the mixed space with the configured
preset, the start-up solves that make the initial state consistent, and the attempt /
accept / roll back cycle of one backward-Euler step."""

from __future__ import annotations

import numpy as np

from mpi4py import MPI

from dolfinx import fem

from ..physics.materials import h
from ..problem import CoupledProblem
from ..problem.coupled import copy_state
from ..problem.startup import StartupProblems
from .presets import (
    field_splits,
    linear_startup_options,
    nonlinear_startup_options,
    preset_for,
    solver_options,
    variable_bounds,
)
from .snes import SNESProblem, SolveReport


class CoupledSolver:
    def __init__(self, problem: CoupledProblem):
        self.problem = pb = problem
        cfg = pb.cfg
        # A unique options prefix per solver: a study builds several in one process.
        self.preset = preset_for(cfg, pb.dofs)
        self.snes = SNESProblem(pb.F, pb.w, pb.bcs, solver_options(cfg, pb.table, pb.dofs))
        if self.preset == "iterative":
            self.snes.snes.getKSP().getPC().setFieldSplitIS(*field_splits(pb))
        if cfg.solver.bounds:
            self._bounds = variable_bounds(pb)
            self.snes.set_bounds(*self._bounds)
        # Time-stepping history (saved and restored through history()) and the owned dofs of
        # the fields whose local error sets the step: the phase field and the Na+
        # concentration (c/c0 or ln c: both O(1)), where the physics moves; the potentials
        # and u follow them.
        self.dt_previous: float | None = None
        self._skip_history = 0
        self._predicted = fem.Function(pb.W)
        n_owned = pb.W.dofmap.index_map.size_local * pb.W.dofmap.index_map_bs
        owned = {}
        for name in ("eta", "c"):
            if name in pb.subspaces:
                dofs = np.asarray(pb.subspaces[name][1])
                owned[name] = dofs[dofs < n_owned]
        self._owned = owned
        if "c" in owned:
            # The weighting pairs eta and c node by node: both P1, collapsed in the same order.
            V_eta, V_c = pb.subspaces["eta"][0], pb.subspaces["c"][0]
            same = np.array_equal(V_eta.tabulate_dof_coordinates(), V_c.tabulate_dof_coordinates())
            same = same and owned["eta"].size == owned["c"].size
            if not pb.comm.allreduce(same, op=MPI.LAND):
                raise RuntimeError("eta and c dofs are not node-aligned: the error estimate cannot pair them")

    def initialize(self) -> None:
        """eta from the nuclei, uniform initial values, then phi and u consistent with eta.

        A straight-line phi through a metal nucleus makes the first implicit step dissolve
        it, so phi starts from steady conduction with the initial eta, and u from mechanical
        equilibrium with its eigenstrain (plastic state committed).
        """
        pb = self.problem
        start = StartupProblems(pb)
        eta0 = fem.Function(pb.collapsed_space("eta"))
        eta0.interpolate(start.initial_eta)
        pb.set_sub("eta", eta0.x.array)
        for f in pb.table:
            if f.initial is not None:
                pb.set_sub(f.name, np.log(f.initial) if f.logarithmic else f.initial)
        startup = start.potential_startup(eta0)
        if startup is not None:
            F, phi, bcs = startup
            _solve_once(F, phi, bcs, linear_startup_options(), "nzsp_init_phi_", "initial potential solve")
            pb.set_sub("phi_i", phi.x.array)
        else:
            for index, name in enumerate(("phi_i", "phi_e")):
                x = pb.collapsed_space(name).tabulate_dof_coordinates().T
                pb.set_sub(name, start.initial_potentials(x)[index])
        if pb.mechanics:
            F, u, bcs, ret = start.mechanics_startup(eta0)
            _solve_once(F, u, bcs, nonlinear_startup_options(pb.cfg), "nzsp_init_u_", "initial mechanical equilibrium")
            if ret is not None:
                pb.plastic.commit(ret)
            pb.set_sub("u", u.x.array)
        copy_state(pb.w, pb.w_old)
        copy_state(pb.w, pb.w_prev)
        self.dt_previous = None
        self._skip_history = 1

    def reaction_rate_at(self, t: float) -> float:
        """L_eta t0, ramped quadratically from 0 over reaction_ramp_time (start-up aid)."""
        pb = self.problem
        pf = pb.cfg.phase_field
        ramp = 1.0 if pf.reaction_ramp_time <= 0 else min(1.0, (t / pf.reaction_ramp_time) ** 2)
        return pf.reaction_rate * pb.scaling.time * ramp

    def try_step(self, t: float, dt: float) -> SolveReport:
        """Solve for the state at t + dt (SI seconds). On failure, the state is rolled back.

        Newton starts from the linear extrapolation of the last two accepted states (it
        saves about one iteration per step against starting from the last state), and the
        same predictor gives the error estimate of the accepted solution: for backward
        Euler after steps dt_p, dt, x_BE - x_pred = x'' dt (2 dt + dt_p) / 2 while the
        local error is x'' dt^2 / 2, so error = dt / (2 dt + dt_p) |x_BE - x_pred|."""
        pb = self.problem
        pb.dt.value = dt / pb.scaling.time
        pb.reaction.value = self.reaction_rate_at(t + dt)
        predicted = self._predict(dt)
        report = self.snes.solve()
        finite = pb.comm.allreduce(bool(np.all(np.isfinite(pb.w.x.array))), op=MPI.LAND)
        if report.converged and not finite:
            report.converged = False
            report.reason_name = "NONFINITE_STATE"
        if not report.converged:
            pb.rollback()
            return report
        report.interface_change = self._max_change(pb.w, pb.w_old)
        if predicted is not None:
            distance = self._max_change(pb.w, predicted, with_concentration=True)
            report.error_estimate = distance * dt / (2 * dt + self.dt_previous)
        return report

    def accept(self, dt: float) -> None:
        """Commit the step just solved (of length dt, SI seconds)."""
        self.problem.commit()
        # The first step out of the start-up state is a jump (the reaction switches on), not
        # a trend: extrapolating it made the second step's Newton start 1e4x further off.
        self.dt_previous = None if self._skip_history else dt
        self._skip_history = max(0, self._skip_history - 1)

    def reject(self) -> None:
        """Discard the step just solved (converged but not accepted): back to the committed
        state. A failed solve is discarded by :meth:`try_step` itself."""
        self.problem.rollback()

    def history(self) -> dict[str, float | None]:
        """The predictor's memory (checkpoint key ``dt_previous``)."""
        return {"dt_previous": self.dt_previous}

    def restore_history(self, saved: dict) -> None:
        """Undo :meth:`history`: the state was read from a checkpoint, not initialised."""
        self.dt_previous = saved.get("dt_previous")
        self._skip_history = 0

    def forget_history(self) -> None:
        """The electrode control just changed: the last steps are no trend for the next two."""
        self.dt_previous = None
        self._skip_history = 1

    def _predict(self, dt: float) -> fem.Function | None:
        """Set w to the extrapolated guess for t + dt and return it, or None (no history)."""
        pb = self.problem
        if not self.dt_previous:
            return None
        ratio = dt / self.dt_previous
        guess = self._predicted
        guess.x.array[:] = pb.w_old.x.array + ratio * (pb.w_old.x.array - pb.w_prev.x.array)
        pb.w.x.array[:] = guess.x.array
        return guess

    def _max_change(self, a: fem.Function, b: fem.Function, with_concentration: bool = False) -> float:
        """Largest |a - b| of eta over the owned nodes and, with_concentration, of c (or
        ln c) weighted by the electrolyte's share 1 - h(eta) of a, as the material
        properties mix it (collective). c inside the metal is read by nothing (the rate is
        supply-limited by the electrolyte's c); unweighted, its transients there set steps
        10x shorter than the interface needs (paper case), and weighted by 1 - eta, two
        electrode-face nodes inside a 3D nucleus (eta 0.89) still did (3D demo)."""
        eta = self._owned["eta"]
        local = float(np.max(np.abs(a.x.array[eta] - b.x.array[eta]), initial=0.0))
        if with_concentration and "c" in self._owned:
            c = self._owned["c"]
            electrolyte = 1.0 - h(a.x.array[eta])
            local = max(local, float(np.max(electrolyte * np.abs(a.x.array[c] - b.x.array[c]), initial=0.0)))
        return self.problem.comm.allreduce(local, op=MPI.MAX)

    def destroy(self) -> None:
        self.snes.destroy()


def _solve_once(F, u, bcs, options: dict, prefix: str, what: str) -> None:
    solver = SNESProblem(F, u, bcs, options, prefix=prefix)
    report = solver.solve()
    solver.destroy()
    if not report.converged:
        raise RuntimeError(f"{what} failed: {report.reason_name}")
