"""What a run reports about the current state: scalar diagnostics (one list of names, used
by timeseries.csv, summary.json and study.csv), cell-averaged derived fields in SI, and the
short-circuit test. Forms are compiled once per problem: they run after every step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mpi4py import MPI
from petsc4py import PETSc

import ufl
from dolfinx import fem, la

from ..mesh import LEFT, RIGHT
from ..physics import forms
from ..physics.cell_average import CellAverage
from ..physics.elasticity import von_mises
from .coupled import CoupledProblem
from .morphology import MorphologyEvaluator

SERIES = {"series": True, "summary": True}
SUMMARY = {"series": False, "summary": True}


@dataclass
class Diagnostics:
    """Integrals and extremes of the current state, in SI (2D: per metre of depth).

    Field metadata says where a value is reported: ``series`` (a timeseries.csv column,
    in this order) and ``summary`` (summary.json and study.csv).
    """

    metal_fraction: float = dataclasses.field(metadata=SERIES)
    # Morphology of the deposit (problem/morphology.py has the definitions).
    connected_penetration_m: float = dataclasses.field(metadata=SERIES)
    gb_penetration_m: float = dataclasses.field(metadata=SERIES)
    planar_advance_m: float = dataclasses.field(metadata=SERIES)
    gb_metal_share: float = dataclasses.field(metadata=SERIES)
    branch_count: int = dataclasses.field(metadata=SERIES)
    gb_phi_i_span_V: float = dataclasses.field(metadata=SERIES)
    max_interface_current_density_A_m2: float = dataclasses.field(metadata=SERIES)
    isolated_metal_change: float = dataclasses.field(metadata=SERIES)
    electrode_current_A: float = dataclasses.field(metadata=SERIES)
    # Per electrode area, A/m^2, positive while plating: compare with the applied value.
    electrode_current_density_A_m2: float = dataclasses.field(metadata=SERIES)
    # Electrode (electronic) potential minus the reservoir's (ionic) one, edge averages:
    # negative while plating (docs/protocols.md).
    cell_voltage_V: float = dataclasses.field(metadata=SERIES)
    reservoir_current_A: float = dataclasses.field(metadata=SERIES)
    deposition_current_A: float = dataclasses.field(metadata=SERIES)
    anchor_current_A: float = dataclasses.field(metadata=SERIES)
    max_current_density_A_m2: float = dataclasses.field(metadata=SERIES)
    max_von_mises_Pa: float = dataclasses.field(metadata=SERIES)
    max_plastic_strain: float = dataclasses.field(metadata=SERIES)
    phi_gb_min_V: float = dataclasses.field(metadata=SERIES)
    phi_gb_max_V: float = dataclasses.field(metadata=SERIES)
    eta_min: float = dataclasses.field(metadata=SERIES)
    eta_max: float = dataclasses.field(metadata=SERIES)
    c_min: float = dataclasses.field(metadata=SERIES)
    c_max: float = dataclasses.field(metadata=SERIES)
    total_sodium_mol: float = dataclasses.field(metadata=SERIES)
    gb_mean_current_density_A_m2: float = dataclasses.field(metadata=SUMMARY)
    # The GB share of the domain, next to gb_metal_share: a deposit that ignores GBs has
    # gb_metal_share near it.
    gb_area_share: float = dataclasses.field(metadata=SUMMARY)
    integral_eta: float = dataclasses.field(metadata=SUMMARY)
    integral_c: float = dataclasses.field(metadata=SUMMARY)
    integral_phi: float = dataclasses.field(metadata=SUMMARY)
    # Discrete nucleation (problem/nucleation.py): nuclei inserted so far, by the region of
    # their cell (grain or GB); 0 without nucleation.
    nuclei_grain: int = dataclasses.field(default=0, metadata=SERIES)
    nuclei_gb: int = dataclasses.field(default=0, metadata=SERIES)

    @classmethod
    def names(cls, where: str) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata[where]]


class DiagnosticsEvaluator:
    """Evaluates :class:`Diagnostics` and the cell fields of one problem (collective)."""

    def __init__(self, problem: CoupledProblem):
        self.problem = pb = problem
        eta, c, phi = (getattr(pb.fields(pb.w), k) for k in ("eta", "c", "phi_i"))
        V = pb.collapsed_space("phi_i")
        chi_left, chi_right = (self._indicator(V, tag) for tag in (LEFT, RIGHT))
        grad = ufl.grad(phi)
        current = pb.sigma_ionic * ufl.sqrt(ufl.dot(grad, grad) + 1e-300)
        integrands = {
            "volume": fem.Constant(pb.mesh, PETSc.ScalarType(1.0)),
            "eta": eta,
            "c": c,
            "phi": phi,
            "beta": pb.beta,
            "beta_current": pb.beta * current,
        }
        self._integrals = {k: fem.form(e * pb.dx) for k, e in integrands.items()}
        electrode_potential = pb.fields(pb.w).phi_e if pb.two_potentials else phi
        self._edges = {
            k: fem.form(e * pb.ds(tag))
            for k, e, tag in (
                ("electrode_area", integrands["volume"], LEFT),
                ("electrode_potential", electrode_potential, LEFT),
                ("reservoir_area", integrands["volume"], RIGHT),
                ("reservoir_potential", phi, RIGHT),
            )
        }
        if pb.bounded:
            # The lumped storage conserves the nodal sum of c; with ln c as the unknown,
            # exp(ln c) is not P1 and only the lumped integral is that sum.
            self._integrals["c"] = fem.form(c * pb.dx_lumped)
        # Boundary currents are charge residuals on the boundary's shape functions: the
        # variationally consistent fluxes, which balance exactly at convergence. The
        # electrode passes electrons when there are two potentials, ions when there is one.
        electrode_equation = "electronic" if pb.two_potentials else "ionic"
        self._electrode = fem.form(pb.charge_residuals[electrode_equation](chi_left))
        self._reservoir = fem.form(pb.charge_residuals["ionic"](chi_right))
        one = fem.Constant(pb.mesh, PETSc.ScalarType(1.0))
        self._deposition = fem.form(pb.charge_source * pb.deposition_rate(one))
        anchor = pb.cfg.solver.electronic_anchor
        self._anchor = None
        if pb.two_potentials and anchor > 0:
            overpotential = pb.fields(pb.w).phi_e - phi - pb.ac.equilibrium_potential
            self._anchor = fem.form(forms.electronic_anchor(overpotential, eta, one, anchor, pb.dx_lumped))
        V_eta = pb.collapsed_space("eta")
        self._n_owned = V_eta.dofmap.index_map.size_local
        self._gb = gb_vertex_mask(pb, V_eta, self._n_owned)
        self._cell_averages = self._build_cell_averages()
        self._morphology = MorphologyEvaluator(pb)
        #: Nuclei per region ({"grain": n, "gb": n}), set by the nucleation observer.
        self.nuclei_counts: Callable[[], dict[str, int]] | None = None

    def _indicator(self, V, tag):
        """1 on the dofs of the boundary ``tag``, 0 elsewhere: a test function whose
        residual is the flux through that boundary."""
        pb = self.problem
        chi = fem.Function(V)
        chi.x.array[fem.locate_dofs_topological(V, pb.dim - 1, pb.facets(tag))] = 1.0
        chi.x.scatter_forward()
        return chi

    def _allreduce(self, value, op=MPI.SUM):
        return self.problem.comm.allreduce(value, op=op)

    def _current(self, form, sign: float) -> float:
        pb = self.problem
        sc = pb.scaling
        value = self._allreduce(fem.assemble_scalar(form))
        return sign * value * sc.current_density * sc.length ** (pb.dim - 1)

    def electrode_current(self) -> float:
        """Conventional current leaving the domain through the Na electrode (A, or A/m in
        2D): positive while Na plates.

        With two potentials it is the electronic current, equal to the ionic current
        entering at the reservoir and to n F c_m d/dt int(eta). With the paper's single
        potential it is the flux of -sigma grad phi, which equals the reservoir current
        minus n F c_m d/dt int(eta) (the model's charge sink), so it can be negative while Na
        plates (docs/model.md)."""
        return self._current(self._electrode, -1.0)

    def reservoir_current(self) -> float:
        """Ionic current entering the domain at the reservoir edge (A, or A/m in 2D)."""
        return self._current(self._reservoir, 1.0)

    def deposition_current(self) -> float:
        """n F c_m d/dt int(eta) from the rate (A, or A/m in 2D): the charge the metal takes."""
        return self._current(self._deposition, 1.0)

    def anchor_current(self) -> float:
        """Electrons the phi_e anchor removes (A, or A/m in 2D): the only non-conservative
        electronic term, reported so its size is visible (0 with one potential)."""
        return self._current(self._anchor, 1.0) if self._anchor is not None else 0.0

    def __call__(self) -> Diagnostics:
        pb = self.problem
        sc, cfg = pb.scaling, pb.cfg
        integral = {k: self._allreduce(fem.assemble_scalar(f)) for k, f in self._integrals.items()}
        edge = {k: self._allreduce(fem.assemble_scalar(f)) for k, f in self._edges.items()}
        electrode_current = self.electrode_current()
        ec = cfg.electrochemistry
        total_na = (ec.c0 * integral["c"] + ec.c_metal * integral["eta"]) * sc.length**pb.dim

        n_owned, gb = self._n_owned, self._gb
        eta_vals = pb.sub_values("eta")[:n_owned]
        c_vals = pb.physical_values("c")[:n_owned]
        phi_gb = pb.sub_values("phi_i")[:n_owned][gb]

        def gmin(a):
            return self._allreduce(float(a.min()) if a.size else np.inf, MPI.MIN)

        def gmax(a):
            return self._allreduce(float(a.max()) if a.size else -np.inf, MPI.MAX)

        has_gb = self._allreduce(bool(gb.any()), MPI.LOR)
        cells = self.cell_fields()
        morphology = self._morphology(cells["current_density_magnitude"])
        n_cells = pb.mesh.topology.index_map(pb.dim).size_local

        def cell_max(name):
            return gmax(cells[name].x.array[:n_cells]) if name in cells else 0.0

        return Diagnostics(
            integral_eta=integral["eta"],
            integral_c=integral["c"],
            integral_phi=integral["phi"],
            total_sodium_mol=total_na,
            metal_fraction=integral["eta"] / integral["volume"],
            **vars(morphology),
            electrode_current_A=electrode_current,
            electrode_current_density_A_m2=electrode_current / (edge["electrode_area"] * sc.length ** (pb.dim - 1)),
            cell_voltage_V=(
                edge["electrode_potential"] / edge["electrode_area"]
                - edge["reservoir_potential"] / edge["reservoir_area"]
            )
            * sc.potential,
            reservoir_current_A=self.reservoir_current(),
            deposition_current_A=self.deposition_current(),
            anchor_current_A=self.anchor_current(),
            max_current_density_A_m2=cell_max("current_density_magnitude"),
            max_von_mises_Pa=cell_max("von_mises"),
            max_plastic_strain=cell_max("plastic_strain"),
            phi_gb_min_V=gmin(phi_gb) * sc.potential if has_gb else float("nan"),
            phi_gb_max_V=gmax(phi_gb) * sc.potential if has_gb else float("nan"),
            gb_mean_current_density_A_m2=(
                integral["beta_current"] / integral["beta"] * sc.current_density
                if integral["beta"] > 0
                else float("nan")
            ),
            eta_min=gmin(eta_vals),
            eta_max=gmax(eta_vals),
            c_min=gmin(c_vals),
            c_max=gmax(c_vals),
            **{f"nuclei_{k}": v for k, v in (self.nuclei_counts() if self.nuclei_counts else {}).items()},
        )

    def _build_cell_averages(self) -> dict[str, CellAverage]:
        pb = self.problem
        sc = pb.scaling
        dg0 = fem.functionspace(pb.mesh, ("DG", 0))
        dg0_vector = fem.functionspace(pb.mesh, ("DG", 0, (pb.dim,)))
        phi = pb.fields(pb.w).phi_i
        i_vec = -pb.sigma_ionic * ufl.grad(phi) * sc.current_density
        averages = {
            "current_density": CellAverage(i_vec, dg0_vector, pb.dx),
            "current_density_magnitude": CellAverage(ufl.sqrt(ufl.dot(i_vec, i_vec)), dg0, pb.dx),
        }
        if pb.two_potentials:
            # With two potentials "current_density" above is the ionic current.
            ie_vec = -pb.sigma_electronic * ufl.grad(pb.fields(pb.w).phi_e) * sc.current_density
            averages["electronic_current_density"] = CellAverage(ie_vec, dg0_vector, pb.dx)
            averages["electronic_current_density_magnitude"] = CellAverage(
                ufl.sqrt(ufl.dot(ie_vec, ie_vec)), dg0, pb.dx
            )
        if pb.mechanics:
            # pb.dx is the plastic state's quadrature when plasticity is on.
            averages["von_mises"] = CellAverage(von_mises(pb.sigma) * sc.stress, dg0, pb.dx)
            averages["hydrostatic_stress"] = CellAverage(ufl.tr(pb.sigma) / 3 * sc.stress, dg0, pb.dx)
            if pb.plastic is not None:
                averages["plastic_strain"] = CellAverage(pb.plastic.p, dg0, pb.dx)
        for name, average in averages.items():
            average.out.name = name
        return averages

    def cell_fields(self) -> dict[str, fem.Function]:
        """Cell-averaged derived fields in SI (DG0): i, |i|, von Mises, hydrostatic, p.

        The same Function objects are refilled on every call."""
        return {name: average() for name, average in self._cell_averages.items()}


def gb_vertex_mask(problem: CoupledProblem, V, n_owned: int) -> np.ndarray:
    """Owned P1 dofs that lie in the GB region (beta > 0.5)."""
    b = fem.Function(V)
    beta, mesh, dim = problem.beta, problem.mesh, problem.dim
    if beta.function_space.ufl_element().degree == 0:
        # Max over adjacent cells: a vertex touching a GB cell is a GB vertex.
        mesh.topology.create_connectivity(dim, 0)
        c2v = mesh.topology.connectivity(dim, 0)
        vals = np.zeros(b.x.array.size)
        dofmap = V.dofmap.list
        for cell in np.flatnonzero(beta.x.array[: c2v.num_nodes] > 0.5):
            vals[dofmap[cell]] = 1.0
        b.x.array[:] = vals
        b.x.scatter_reverse(la.InsertMode.add)
        b.x.scatter_forward()
    else:
        b.interpolate(beta)
    return b.x.array[:n_owned] > 0.5


def metal_connects_electrodes(problem: CoupledProblem, threshold: float = 0.5) -> bool:
    """Short circuit: do P1 vertices with eta > threshold form a path from x = 0 to x = Lx?

    Each rank contributes the mesh edges (as global dof pairs) of its cells whose end points
    are both metal; rank 0 joins them with a sparse connected-components search. Collective.
    """
    V, dofs = problem.subspaces["eta"]
    eta = problem.w.x.array[dofs]
    imap = V.dofmap.index_map
    n_local = imap.size_local + imap.num_ghosts
    global_index = imap.local_to_global(np.arange(n_local, dtype=np.int32))
    metal = eta > threshold
    cells = V.dofmap.list[: problem.mesh.topology.index_map(problem.dim).size_local]
    pairs = []
    for a in range(cells.shape[1]):
        for b in range(a + 1, cells.shape[1]):
            both = metal[cells[:, a]] & metal[cells[:, b]]
            pairs.append(np.stack([global_index[cells[both, a]], global_index[cells[both, b]]], axis=1))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)
    x = V.tabulate_dof_coordinates()[:, 0]
    lx = problem.comm.allreduce(float(x.max()) if x.size else 0.0, op=MPI.MAX)
    tol = 1e-9 * lx
    left = global_index[metal & (x < tol)]
    right = global_index[metal & (x > lx - tol)]
    gathered = problem.comm.gather((pairs, left, right), root=0)
    connected = False
    if problem.comm.rank == 0:
        edges = np.concatenate([g[0] for g in gathered])
        lefts = np.unique(np.concatenate([g[1] for g in gathered]))
        rights = np.unique(np.concatenate([g[2] for g in gathered]))
        if edges.size and lefts.size and rights.size:
            n = imap.size_global
            graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
            _, labels = connected_components(graph, directed=False)
            connected = bool(np.intersect1d(labels[lefts], labels[rights]).size)
    return problem.comm.bcast(connected, root=0)
