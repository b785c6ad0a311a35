"""Discrete nucleation on the coupled problem (docs/model.md, "Discrete nucleation"; issue 21).

Per accepted step every owned cell inserts a nucleus with probability 1 - exp(-J dV dt)
(J from physics/nucleation.py in the cell's eta_loc = phi_e - phi_i - E_eq). The uniform
number of a cell is a hash of (seed, draw counter, the cell's original input index), so a
cell draws the same number whichever rank owns it: the nuclei do not depend on the
partition, and a restart that restores the counter draws the same numbers again. A
nucleus then forms through ``problem.nucleation_force``, the DG0
activity of a Butler-Volmer term added to d eta/dt (physics/forms.py
``nucleation_forcing``): it is part of the deposition rate, so the c, phi_i and phi_e
equations take its Na+ and electrons, and the Na and charge balances hold through the
insertion. The hold time is the least formation time: a nucleus keeps forming, and keeps
its site, until its core reaches eta >= FORMED, however long after its hold that is.

The time loop drives it (``Nucleation``): ``before_step`` before every attempt,
``after_step`` after every accepted step, ``max_dt`` and ``next_event_time`` for the step
control, ``state``/``restore`` for checkpoints, ``write_nuclei_csv`` for nuclei.csv.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpi4py import MPI

from ..physics.nucleation import NucleationLaw
from .coupled import CoupledProblem

#: eta at or above which a node counts as metal: no nucleation in such a cell, and no
#: nucleus whose disc (out to R + 2 widths) holds such a node.
METAL = 0.1

#: The longest step while a nucleus is in its hold is hold_time / HOLD_STEPS; it is also
#: the shortest time over which the forcing asks for a nucleus's deficit once its hold has
#: ended and it has not formed.
HOLD_STEPS = 40

#: The longest step while nuclei form only past their hold is hold_time / SETTLED_STEPS.
SETTLED_STEPS = 8

#: A nucleus has formed when eta >= FORMED at every node of its core (r < R/2): only then
#: does it stop forming, whatever its hold time.
FORMED = 0.5

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijection of uint64 whose output bits all depend on all
    input bits (wrap-around arithmetic is intended)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, counter: int, keys) -> np.ndarray:
    """Uniform numbers in [0, 1), one per key, a pure function of (seed, counter, key).

    Counter-based: no generator state to carry across ranks or restarts; a cell's number
    depends only on its own key, not on which cells a rank holds.
    """
    with np.errstate(over="ignore"):
        stream = _mix64(np.array([seed], dtype=np.uint64) * _GOLDEN + _GOLDEN)
        stream = _mix64(stream ^ (np.array([counter], dtype=np.uint64) * _M1 + _GOLDEN))
        z = _mix64(stream ^ _mix64(np.asarray(keys, dtype=np.int64).astype(np.uint64) * _GOLDEN + _M2))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def draw_insertions(seed: int, counter: int, keys, expected) -> np.ndarray:
    """Which cells insert: u < 1 - exp(-J dV dt), the probability of at least one event of
    a Poisson process with mean ``expected`` = J dV dt in the cell during the step."""
    return uniforms(seed, counter, keys) < -np.expm1(-np.asarray(expected, dtype=float))


@dataclass(frozen=True)
class Nucleus:
    """An inserted nucleus (SI): inserted at ``time``, formed no earlier than ``hold_end``
    (the minimum formation time) and at ``formed`` (None while forming: the core has not
    reached eta >= FORMED); ``cell`` is the original input index of the cell it was drawn
    in."""

    time: float
    position: tuple[float, ...]
    radius: float
    region: str  # "grain" or "gb"
    overpotential: float  # eta_loc (V) in the cell at insertion
    cell: int
    hold_end: float
    formed: float | None = None

    def row(self) -> dict:
        axes = ("x_m", "y_m", "z_m")[: len(self.position)]
        return {
            "time_s": self.time,
            **dict(zip(axes, self.position)),
            "radius_m": self.radius,
            "region": self.region,
            "eta_loc_V": self.overpotential,
        }


def nuclei_csv_columns(dim: int) -> list[str]:
    return ["time_s", "x_m", "y_m", "z_m"][: dim + 1] + ["radius_m", "region", "eta_loc_V"]


def write_nuclei_csv(path: str | Path, nuclei: list[Nucleus], dim: int, comm=None, append: bool = True) -> None:
    """Append ``nuclei`` to nuclei.csv (header when the file is new); rank 0 of ``comm`` only."""
    if comm is not None and comm.rank != 0:
        return
    path = Path(path)
    new = not append or not path.exists()
    with path.open("w" if new else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=nuclei_csv_columns(dim))
        if new:
            writer.writeheader()
        for n in nuclei:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in n.row().items()})


def _smooth_step(x: np.ndarray) -> np.ndarray:
    """h of physics/materials.py on numbers, held at 0 and 1 (that one is UFL)."""
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (6 * x**2 - 15 * x + 10)


class Nucleation:
    """Discrete nucleation on a CoupledProblem with ``cfg.nucleation.enabled``.

    Times are SI seconds; a step is (t, dt) as in ``CoupledSolver.try_step``.
    """

    def __init__(self, problem: CoupledProblem):
        if not problem.nucleation_on:
            raise ValueError("Nucleation: the problem was built with nucleation.enabled false (no forcing term)")
        self.problem = pb = problem
        cfg = pb.cfg
        self.comm = pb.comm
        self.law = NucleationLaw.from_config(cfg)
        self.seed = cfg.nucleation.seed
        self.max_expected = cfg.nucleation.max_expected_per_step
        self.radius = cfg.nucleation.radius
        self.width = pb.scaling.interface_width
        self.dim = dim = pb.dim
        l0 = pb.scaling.length
        msh = pb.mesh
        cells = msh.topology.index_map(dim)
        self.n_owned = cells.size_local
        n_local = cells.size_local + cells.num_ghosts
        self.keys = np.asarray(msh.topology.original_cell_index[: self.n_owned], dtype=np.int64)

        # Per cell (owned and ghost): the W dofs of the P1 unknowns at its vertices, the
        # vertex coordinates (m), centroid and size (m^dim).
        V_eta = pb.collapsed_space("eta")
        cell_dofs = V_eta.dofmap.list[:n_local]
        self._dofs = {
            name: np.asarray(pb.subspaces[name][1])[pb.collapsed_space(name).dofmap.list[:n_local]]
            for name in ("eta", "c", "phi_i", "phi_e")
        }
        coords = V_eta.tabulate_dof_coordinates()[:, :dim] * l0
        self._vertices = coords[cell_dofs]
        # From the mesh's own node coordinates (dof coordinates are pushed through each
        # cell's map, whose vertex order depends on the partition: they differed in the last
        # bit on 2 ranks), summed in sorted order: the same bits on any partition.
        corners = msh.geometry.x[msh.geometry.dofmap[:n_local, : dim + 1], :dim] * l0
        self.centroids = np.sort(corners, axis=1).mean(axis=1)
        edges = self._vertices[:, 1:, :] - self._vertices[:, :1, :]
        self.sizes = np.abs(np.linalg.det(edges)) / math.factorial(dim)
        n_nodes = V_eta.dofmap.index_map.size_local
        self._node_xyz = coords[:n_nodes]
        self._node_eta = np.asarray(pb.subspaces["eta"][1])[:n_nodes]
        V0 = pb.nucleation_force.function_space
        self._force_dofs = V0.dofmap.list[:n_local, 0]

        # The electrolyte's electronic conductivity (SI) and region of each owned cell,
        # by the GB indicator as the forms mix it (h(beta)).
        beta = pb.beta
        Vb = beta.function_space
        if Vb.dofmap.list.shape[1] == 1:
            beta_cell = beta.x.array[Vb.dofmap.list[: self.n_owned, 0]]
        else:
            beta_cell = beta.x.array[Vb.dofmap.list[: self.n_owned]].mean(axis=1)
        m = cfg.materials
        hb = _smooth_step(beta_cell)
        self.electronic = hb * m.grain_boundary.electronic_conductivity + (1 - hb) * m.grain.electronic_conductivity
        self.in_gb = beta_cell > 0.5
        self.equilibrium = cfg.electrochemistry.equilibrium_potential
        self.volt = pb.scaling.potential
        self._eq = pb.ac.equilibrium_potential  # scaled
        self.time_scale = pb.scaling.time
        # No draws in steps that begin inside the start-up ramp of L_eta: while the reaction
        # is ramped down, a galvanostatic electrode needs a made-up overpotential (measured:
        # -0.169 V in the first 1 us step of the CCD ramp at 0.05 mA/cm^2, -8e-6 V one step
        # later), and a nucleus drawn from it would be an artefact of the start-up aid.
        self.draws_from = cfg.phase_field.reaction_ramp_time

        self.counter = 0
        self.active: list[Nucleus] = []
        self.nuclei: list[Nucleus] = []
        self.formed_now: list[Nucleus] = []
        self._rate_total: float | None = None

    # Rates ----------------------------------------------------------------------------
    def _cell_mean(self, name: str, w, owned: bool = True) -> np.ndarray:
        dofs = self._dofs[name][: self.n_owned] if owned else self._dofs[name]
        return w.x.array[dofs].mean(axis=1)

    def overpotential(self, w=None) -> np.ndarray:
        """eta_loc = phi_e - phi_i - E_eq (V) per owned cell (P1: the centroid value)."""
        w = w or self.problem.w
        return (self._cell_mean("phi_e", w) - self._cell_mean("phi_i", w)) * self.volt - self.equilibrium

    def rates(self, w=None) -> tuple[np.ndarray, np.ndarray]:
        """(J per owned cell, eta_loc): J = 0 in and at metal (a vertex with eta >= METAL)."""
        w = w or self.problem.w
        eta_loc = self.overpotential(w)
        metal = w.x.array[self._dofs["eta"][: self.n_owned]].max(axis=1) >= METAL
        J = np.where(metal, 0.0, self.law.rate(eta_loc, self.electronic))
        return J, eta_loc

    def total_rate(self, w=None) -> float:
        """Expected insertions per second over the whole domain, sum(J dV) (collective)."""
        J, _ = self.rates(w)
        return self.comm.allreduce(float(np.sum(J * self.sizes[: self.n_owned])), op=MPI.SUM)

    def open_rate(self, J: np.ndarray | None = None) -> float:
        """sum(J dV) over the cells where an insertion could be accepted (collective): not
        within R + 2 widths of metal nor within 2 (R + w) of a forming nucleus's centre,
        the zones the acceptance test of ``after_step`` rejects. ``J``: the rates of the
        current state (computed when not given)."""
        if J is None:
            J, _ = self.rates()
        expected = J * self.sizes[: self.n_owned]
        live = expected > 0
        if self.comm.allreduce(bool(live.any()), op=MPI.LOR):
            live[live] &= ~self._blocked(self.centroids[: self.n_owned][live])
        return self.comm.allreduce(float(np.sum(expected[live])), op=MPI.SUM)

    def _blocked(self, points: np.ndarray) -> np.ndarray:
        """For each point (m): does the acceptance test reject a nucleus there? Collective."""
        from scipy.spatial import cKDTree

        eta = self.problem.w.x.array[self._node_eta]
        metal = np.concatenate(self.comm.allgather(self._node_xyz[eta >= METAL]))
        blocked = np.zeros(len(points), dtype=bool)
        for centres, reach in (
            (metal, self.radius + 2 * self.width),
            (np.asarray([n.position for n in self.active]), 2 * (self.radius + self.width)),
        ):
            if len(centres) and len(points):
                distance, _ = cKDTree(centres.reshape(len(centres), -1)).query(points, distance_upper_bound=reach)
                blocked |= distance < reach
        return blocked

    # Step control ---------------------------------------------------------------------
    def max_dt(self, t: float | None = None) -> float:
        """The longest next step from time t (s; inf without a limit; collective):
        hold_time / HOLD_STEPS while a nucleus is in its hold, else max_expected_per_step /
        open_rate() from the last accepted state, but never below hold_time / HOLD_STEPS,
        and at most hold_time / SETTLED_STEPS while a nucleus forms past its hold. Without
        t every forming nucleus counts as in its hold.

        A nucleus still forming after its hold does not hold the step at the floor: its
        forcing has been on for a whole hold, so the switch-on that needed short steps is
        over, and a nucleus that waits on slow electron supply would otherwise pin the run
        at hold/40 for as long as it forms. Measured (tests' bicrystal, 0.5 ms hold):
        after the hold, steps of hold/8 took 5-6 Newton iterations (3 at hold/40), one
        step of a whole hold 12 (docs/model.md, "Formation beyond the hold").

        Why the floor: at the default J0 the rate is effectively instantaneous wherever the
        electron-supply gate passes, so a cap on the expected count alone would ask for
        steps far below any the solver needs (docs/model.md, "Step control"). Above the floor's rate, insertion is
        saturated on the hold time scale: a step draws nearly every open cell and accepts
        every candidate that does not overlap metal, a forming nucleus or an earlier
        candidate of the same step. Cells that cannot take a nucleus (open_rate) do not
        count, or metal and forming nuclei would pin the step at the floor for good.
        """
        # While a nucleus forms, its reaction switches on against a state without it: steps
        # of hold/8 failed Newton and hold/40 converged (tests' bicrystal, 40 nm nucleus).
        floor = self.law.hold_time / HOLD_STEPS
        if any(t is None or n.hold_end > t * (1 + 1e-12) for n in self.active):
            return floor
        if t is not None and self._ramping(t) and not self.active:
            return math.inf  # nothing is drawn before the ramp ends (a step lands on it)
        settled = self.law.hold_time / SETTLED_STEPS if self.active else math.inf
        if self.max_expected is None:
            return settled
        total = self._rate_total if self._rate_total is not None else self.open_rate()
        self._rate_total = total
        return min(settled, max(floor, self.max_expected / total) if total > 0 else math.inf)

    def next_event_time(self, t: float) -> float | None:
        """The next hold end after t (a step should land on it), or None. A hold end within
        round-off of t counts as reached (after_step has judged it)."""
        ends = [n.hold_end for n in self.active if n.hold_end > t * (1 + 1e-12)]
        if self._ramping(t):
            ends.append(self.draws_from)
        return min(ends) if ends else None

    def _ramping(self, t: float) -> bool:
        """Whether a step from t begins inside the start-up ramp (no draws then)."""
        return self.draws_from > 0 and t < self.draws_from * (1 - 1e-12)

    # The step -------------------------------------------------------------------------
    def before_step(self, t: float, dt: float) -> None:
        """Set the forcing's activity for the attempt (t, t + dt); call before every attempt.

        In the disc of each forming nucleus (out to R + 3 widths) the target rate is the
        deficit of eta against the nucleus profile 0.5 (1 - tanh((r - R)/w)) over the hold
        time left, at least max(dt, hold_time / HOLD_STEPS); the activity is that rate
        over the cathodic Butler-Volmer factor of the committed state (at least 1), so the
        reaction forms the profile by the hold end where electrons keep eta_a cathodic,
        and slows down where they do not arrive. Zero where eta already reaches the
        profile: the forcing only deposits. A nucleus whose hold has ended unformed keeps
        its forcing at the floor's rate (the rate it had in the hold's last step), so it
        takes every electron that arrives until its core forms.
        """
        pb = self.problem
        activity = np.zeros(self._force_dofs.shape[0])
        if self.active:
            w = pb.w_old
            eta_old = self._cell_mean("eta", w, owned=False)
            eta_a = (self._cell_mean("phi_e", w, owned=False) - self._cell_mean("phi_i", w, owned=False)) - self._eq
            c = np.exp(self._cell_mean("c", w, owned=False)) if pb.log_c else self._cell_mean("c", w, owned=False)
            n, alpha = pb.ac.electrons, pb.ac.alpha
            cathodic = c * np.exp(-alpha * n * eta_a) - np.exp((1 - alpha) * n * eta_a)
            reach = self.radius + 3 * self.width
            floor = self.law.hold_time / HOLD_STEPS
            for nucleus in self.active:
                centre = np.asarray(nucleus.position)
                near = np.sum((self.centroids - centre) ** 2, axis=1) <= reach**2
                if not np.any(near):
                    continue
                r = np.linalg.norm(self._vertices[near] - centre, axis=2)
                target = (0.5 * (1 - np.tanh((r - self.radius) / self.width))).mean(axis=1)
                left = max(nucleus.hold_end - t, dt, floor) / self.time_scale
                rate = np.maximum(target - eta_old[near], 0.0) / left
                # Where the committed state is anodic the reaction would strip the nucleus
                # it is meant to form, below eta = 0 where it has no metal (measured: a
                # GB nucleus's grain half went to eta = -0.15): no forcing there.
                rate = np.where(cathodic[near] > 0, rate, 0.0)
                activity[near] = np.maximum(activity[near], rate / np.maximum(cathodic[near], 1.0))
        pb.nucleation_force.x.array[self._force_dofs] = activity

    def after_step(self, t: float, dt: float) -> list[Nucleus]:
        """After the step (t, t + dt) was accepted: retire the nuclei that have formed (hold
        ended and core formed, ``formed_now`` lists them), draw insertions from the
        accepted state and return the new nuclei (the same list on every rank). Collective.

        A nucleus whose hold ends before its core forms stays forming: it keeps its forcing
        and its exclusion zone, so no nucleus is inserted on or beside its partial metal.
        Retiring it unformed would leave that metal without a nucleus to finish it and
        re-open the site to a second nucleus on top (docs/model.md, "Formation beyond the
        hold").
        """
        pb = self.problem
        now = t + dt
        due = [n for n in self.active if n.hold_end <= now * (1 + 1e-12)]
        cores = self.core_eta(due)
        done = [n for n, core in zip(due, cores) if core >= FORMED]
        self.active = [n for n in self.active if n not in done]
        self.nuclei = [dataclasses.replace(n, formed=now) if n in done else n for n in self.nuclei]
        self.formed_now = [dataclasses.replace(n, formed=now) for n in done]
        if self._ramping(t):
            self._rate_total = None
            return []
        J, eta_loc = self.rates(pb.w)
        expected = J * self.sizes[: self.n_owned]
        counter = self.counter
        self.counter += 1
        hit = np.flatnonzero(draw_insertions(self.seed, counter, self.keys, expected * dt))
        u = uniforms(self.seed, counter, self.keys[hit])
        mine = [
            (
                float(u[k]),
                int(self.keys[i]),
                tuple(float(x) for x in self.centroids[i]),
                bool(self.in_gb[i]),
                float(eta_loc[i]),
            )
            for k, i in enumerate(hit)
        ]
        # Every rank sees every candidate, in an order independent of the partition.
        candidates = sorted(c for part in self.comm.allgather(mine) for c in part)
        if not candidates:
            self._rate_total = self.open_rate(J)
            return []
        blocked = self._metal_near([c[2] for c in candidates])
        new: list[Nucleus] = []
        spacing = 2 * (self.radius + self.width)
        for (_, key, position, gb, overpotential), metal in zip(candidates, blocked):
            if metal:
                continue
            if any(math.dist(position, n.position) < spacing for n in self.active + new):
                continue
            new.append(
                Nucleus(
                    time=now,
                    position=position,
                    radius=self.radius,
                    region="gb" if gb else "grain",
                    overpotential=overpotential,
                    cell=key,
                    hold_end=now + self.law.hold_time,
                )
            )
        self.active.extend(new)
        self.nuclei.extend(new)
        self._rate_total = self.open_rate(J)
        return new

    def core_eta(self, nuclei: list[Nucleus]) -> list[float]:
        """For each nucleus: the least eta at the nodes of its core (r < R/2), the formed
        criterion's measure (inf where no node lies there). Collective."""
        eta = self.problem.w.x.array[self._node_eta]
        local = np.full(len(nuclei), np.inf)
        for k, nucleus in enumerate(nuclei):
            near = np.sum((self._node_xyz - np.asarray(nucleus.position)) ** 2, axis=1) < (0.5 * nucleus.radius) ** 2
            local[k] = float(np.min(eta[near], initial=np.inf))
        least = np.empty_like(local)
        self.comm.Allreduce(local, least, op=MPI.MIN)
        return [float(v) for v in least]

    def _metal_near(self, centres: list[tuple[float, ...]]) -> list[bool]:
        """For each centre: is there metal (eta >= METAL) within R + 2 widths? Collective."""
        eta = self.problem.w.x.array[self._node_eta]
        reach = self.radius + 2 * self.width
        local = np.zeros(len(centres))
        for k, centre in enumerate(centres):
            near = np.sum((self._node_xyz - np.asarray(centre)) ** 2, axis=1) <= reach**2
            local[k] = float(np.max(eta[near], initial=-np.inf))
        found = np.empty_like(local)
        self.comm.Allreduce(local, found, op=MPI.MAX)
        return [bool(v >= METAL) for v in found]

    # Checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        """What a checkpoint must keep (JSON-compatible): the draw counter and the nuclei
        (the forcing follows from them and the state at the next before_step)."""
        return {
            "counter": self.counter,
            "active": [dataclasses.asdict(n) for n in self.active],
            "nuclei": [dataclasses.asdict(n) for n in self.nuclei],
        }

    def restore(self, state: dict) -> None:
        # States written before ``formed`` existed lack the key: their nuclei are taken as
        # not yet formed, and an active one keeps forming under the rule above.
        def nucleus(d):
            return Nucleus(**dict(d, position=tuple(d["position"])))

        self.counter = int(state["counter"])
        self.active = [nucleus(d) for d in state["active"]]
        self.nuclei = [nucleus(d) for d in state["nuclei"]]
        self._rate_total = None

    def counts(self) -> dict[str, int]:
        """Nuclei inserted so far, per region (summary.json, timeseries.csv)."""
        return {region: sum(n.region == region for n in self.nuclei) for region in ("grain", "gb")}


class NucleationObserver:
    """Drives a :class:`Nucleation` from the time loop (``nzsp_fem.run.Simulation``'s
    Observer protocol; the simulation adds it when ``nucleation.enabled``).

    It acts on an accepted step before the run's outputs see it (``part_of_model``):
    timeseries.csv's row and a checkpoint of that step then hold its insertions, and a
    restart from the checkpoint continues with the next draw. Insertion changes no field
    (a nucleus forms through the forcing over the following steps), so the loop's state
    needs no ``state_changed``. Writes ``nuclei.csv`` (all nuclei so far, rewritten on
    each insertion, so a restart that drops later steps drops their nuclei too) when the
    simulation has a run directory (``sim.record``).
    """

    checkpoint_key = "nucleation"
    part_of_model = True

    def __init__(self, problem: CoupledProblem, evaluator=None):
        self.nucleation = Nucleation(problem)
        self._t = 0.0
        if evaluator is not None:
            evaluator.nuclei_counts = self.nucleation.counts

    def before_step(self, sim, t: float, dt: float) -> None:
        self._t = t  # the accepted attempt is the last one before on_step_accepted
        self.nucleation.before_step(t, dt)

    def max_dt(self, sim) -> float | None:
        limit = self.nucleation.max_dt(sim.t)
        return limit if math.isfinite(limit) else None

    def next_breakpoint(self, sim) -> float | None:
        return self.nucleation.next_event_time(sim.t)

    def on_step_accepted(self, sim, info) -> None:
        new = self.nucleation.after_step(self._t, info.dt)
        for region, count in self.nucleation.counts().items():
            setattr(info.diagnostics, f"nuclei_{region}", count)
        if new:
            # The new nuclei's forcing switches on in the next step: the last steps are no
            # trend for it (an extrapolated Newton guess then failed to converge at a fixed
            # step that converges from the last state; tests/test_nucleation.py).
            sim.solver.forget_history()
            where = ", ".join(f"{n.region} ({', '.join(f'{x * 1e9:.0f}' for x in n.position)}) nm" for n in new)
            sim.log(f"nucleation: {len(new)} nuclei at t={info.t:.6e} s: {where}", 1)
            record = getattr(sim, "record", None)
            if record is not None:
                self.write_csv(record)
        for n in self.nucleation.formed_now:
            late = n.formed - n.hold_end
            sim.log(
                f"nucleation: the nucleus inserted at t={n.time:.6e} s ({n.region}) formed at t={n.formed:.6e} s"
                + (f", {late:.3e} s after its hold" if late > 1e-12 * n.formed else ""),
                1,
            )

    def write_csv(self, record) -> None:
        """nuclei.csv in the run directory: every nucleus so far (rewritten)."""
        nuclei, dim = self.nucleation.nuclei, self.nucleation.dim
        record.write_file("nuclei.csv", write_nuclei_csv, nuclei, dim, record.comm, append=False)

    def on_finish(self, sim) -> None:
        record = getattr(sim, "record", None)
        if record is not None:
            self.write_csv(record)  # also when nothing was inserted: a run with nucleation has the file

    def checkpoint_state(self) -> dict:
        return self.nucleation.state()

    def restore_checkpoint_state(self, saved: dict) -> None:
        self.nucleation.restore(saved)
