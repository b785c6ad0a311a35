"""The coupled eta / c / phi_i / u problem on a polycrystal, in scaled units: what is solved.

The unknowns are those of the field table (problem/fields.py) in one mixed space
(monolithic Newton). Plastic strain and equivalent plastic strain live at quadrature
points and are committed only after a converged step. How the problem is solved (SNES,
presets, start-up solves, time steps) is the solver layer's business; the start-up
problems it solves are problem/startup.py's.
"""

from __future__ import annotations

import numpy as np

from petsc4py import PETSc

import basix.ufl
import ufl
from dolfinx import fem

from ..config import Config
from ..config.protocol import Segment, electrode_segments
from ..mesh import Polycrystal, gb_indicator
from ..physics import forms
from ..physics.elasticity import elastic_stress, lame, strain3
from ..physics.materials import metal_only, mix, mix_slope_eta
from ..physics.plasticity import PlasticState, radial_return
from ..physics.scaling import Scaling
from .boundary import (
    build_dirichlet,
    dirichlet_conditions,
    electrode_current_term,
    electrode_potential_condition,
    stack_traction_term,
)
from .fields import Field, field_table, views_type


def copy_state(source: fem.Function, target: fem.Function) -> None:
    """target <- source on the same space, ghost values included."""
    source.x.petsc_vec.copy(target.x.petsc_vec)
    target.x.scatter_forward()


class CoupledProblem:
    """Mixed space, state (``w`` and the last committed ``w_old``), residual ``F`` and BCs."""

    def __init__(self, cfg: Config, poly: Polycrystal):
        self.cfg, self.poly = cfg, poly
        self.scaling = sc = Scaling(cfg)
        self.mesh = msh = poly.mesh
        self.comm = msh.comm
        self.dim = dim = msh.geometry.dim
        self.mechanics = cfg.mechanics.enabled
        self.log_c = cfg.solver.log_concentration
        q = cfg.solver.quadrature_degree
        self.dx = ufl.Measure("dx", msh, metadata={"quadrature_degree": q})
        self.ds = ufl.Measure("ds", msh, subdomain_data=poly.facet_tags, metadata={"quadrature_degree": q})

        self.table: tuple[Field, ...] = field_table(sc, dim)
        self.field = {f.name: f for f in self.table}
        self._views = views_type(self.table)
        cell = msh.basix_cell()
        elements = [
            basix.ufl.element("Lagrange", cell, f.degree, shape=f.shape if f.is_vector else None) for f in self.table
        ]
        self.W = fem.functionspace(msh, basix.ufl.mixed_element(elements))
        self.w = fem.Function(self.W, name="state")
        self.w_old = fem.Function(self.W, name="state_old")
        # The state one step before w_old: the time stepper extrapolates from the two.
        self.w_prev = fem.Function(self.W, name="state_previous")
        self.index = {f.name: i for i, f in enumerate(self.table)}
        #: name -> (collapsed space, dofs of that field in W)
        self.subspaces = {f.name: self.W.sub(i).collapse() for i, f in enumerate(self.table)}

        # Static microstructure.
        self.beta = gb_indicator(poly)
        self.beta.name = "beta"

        # Time-dependent scalars (scaled).
        self.dt = fem.Constant(msh, PETSc.ScalarType(cfg.time.dt_initial / sc.time))
        self.reaction = fem.Constant(msh, PETSc.ScalarType(0.0))
        # The electrode protocol changes the control between steps through a Constant
        # (galvanostatic) and a BC kept apart from the rest (potentiostatic), never the forms.
        self.segments = electrode_segments(cfg)
        first = self.segments[0]
        modes = {s.mode for s in self.segments}
        self.applied_current = None
        if "galvanostatic" in modes:
            i0 = first.signed_current_density if first.mode == "galvanostatic" else 0.0
            self.applied_current = fem.Constant(msh, PETSc.ScalarType(i0 / sc.current_density))

        self.two_potentials = cfg.electrochemistry.potentials == "two"
        self.bounded = cfg.phase_field.kinetics == "bounded"
        # Vertex quadrature: mass lumping of the pointwise terms of the bounded kinetics.
        self.dx_lumped = ufl.Measure("dx", msh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
        self.plastic = PlasticState(msh, q) if (self.mechanics and cfg.mechanics.plasticity) else None
        if self.plastic is not None:
            self.dx = self.plastic.dx

        # --- discrete nucleation (issue 21, problem/nucleation.py) ---------------------
        # The activity (1/t0) of a Butler-Volmer term added to d eta/dt in forming nuclei,
        # set between steps; it is part of the deposition rate, so the sinks of c, phi_i and
        # phi_e carry its Na+ and electrons. Left out of the forms when nucleation is off
        # (bitwise unchanged).
        self.nucleation_force = fem.Function(fem.functionspace(msh, ("DG", 0)), name="nucleation_force")
        self.nucleation_on = cfg.nucleation.enabled
        # --- end discrete nucleation ---------------------------------------------------
        self._build_forms()
        self.dirichlet = dirichlet_conditions(sc, dim, electrode=False)
        self.bcs = build_dirichlet(self.dirichlet, self.mixed_subspace, poly.facet_tags, dim - 1)
        self.electrode_bc = None
        if "potentiostatic" in modes:
            potential = next(s.potential for s in self.segments if s.mode == "potentiostatic")
            condition = electrode_potential_condition(sc, potential)
            self.electrode_bc = build_dirichlet([condition], self.mixed_subspace, poly.facet_tags, dim - 1)[0]
            if first.mode == "potentiostatic":
                self.dirichlet.append(condition)
                self.bcs.append(self.electrode_bc)

    # Views --------------------------------------------------------------------------------
    def unknowns(self, w):
        """UFL views of the raw unknowns of a mixed function, by field name (c may be ln c)."""
        return self._views(*ufl.split(w))

    def fields(self, w):
        """UFL views of the physical fields (c itself even when the unknown is ln c)."""
        raw = self.unknowns(w)
        return raw._replace(c=ufl.exp(raw.c)) if self.log_c else raw

    def mixed_subspace(self, name: str):
        return self.W.sub(self.index[name]) if name in self.index else None

    def collapsed_space(self, name: str):
        return self.subspaces[name][0] if name in self.subspaces else None

    # Constitutive relations -----------------------------------------------------------
    def constitutive(self, u, eta):
        """(sigma, eps_e, return map or None) for displacement u and phase eta (scaled)."""
        cfg, sc = self.cfg, self.scaling
        E = mix(sc.moduli(), eta, self.beta, cfg.materials.mixing)
        lam, mu = lame(E, cfg.materials.nu)
        eps_eig = forms.eigenstrain(eta, cfg.mechanics.volume_expansion)
        eps = strain3(u)
        if self.plastic is None:
            eps_e = eps - eps_eig
            return elastic_stress(eps_e, lam, mu), eps_e, None
        m = cfg.materials
        sigma_y = metal_only(m.metal.yield_stress / sc.stress, m.grain.yield_stress / sc.stress, eta)
        hard = metal_only(sc.hardening("metal") / sc.stress, sc.hardening("grain") / sc.stress, eta)
        ret = radial_return(eps, eps_eig, self.plastic, lam, mu, sigma_y, hard)
        return ret.sigma, ret.eps_e, ret

    def ac_parameters(self) -> forms.AllenCahnParameters:
        cfg, sc = self.cfg, self.scaling
        pf = cfg.phase_field
        return forms.AllenCahnParameters(
            mobility=sc.allen_cahn_mobility(),
            gradient=sc.gradient_coefficient(),
            reaction=self.reaction,
            alpha=pf.charge_transfer_coefficient,
            electrons=pf.electrons,
            equilibrium_potential=cfg.electrochemistry.equilibrium_potential / sc.potential,
        )

    def kappa_factor(self, eta):
        a = self.cfg.phase_field.anisotropy
        width = self.scaling.interface_width / self.scaling.length
        # Floor: 1 % of the gradient inside an equilibrium interface, ~1/(2 width).
        return forms.anisotropy_factor(ufl.grad(eta), self.dim, a.strength, a.mode, a.angle, floor=0.01 / width)

    # Residual -------------------------------------------------------------------------
    def _build_forms(self):
        cfg, sc, dx = self.cfg, self.scaling, self.dx
        raw = self.unknowns(self.w)
        now, old = self.fields(self.w), self.fields(self.w_old)
        eta, c, phi = now.eta, now.c, now.phi_i
        tests = self._views(*ufl.TestFunctions(self.W))
        p = self.ac_parameters()
        self.ac = p

        if self.mechanics:
            sigma, eps_e, ret = self.constitutive(now.u, eta)
            self.sigma, self.eps_e, self.ret = sigma, eps_e, ret
            moduli = sc.moduli()
            E = mix(moduli, eta, self.beta, cfg.materials.mixing)
            dE = mix_slope_eta(moduli, eta, self.beta, cfg.materials.mixing)
            mech_force = forms.mechanical_driving_force(
                sigma, eps_e, eta, cfg.mechanics.volume_expansion, E, dE, sc.stress / sc.energy_density
            )
        else:
            self.sigma = self.eps_e = self.ret = None
            mech_force = 0.0

        # The overpotential's electrode side: phi itself (paper) or phi_e - phi_i.
        electrode_minus_electrolyte = now.phi_e - phi if self.two_potentials else phi
        kappa = self.kappa_factor(eta)
        storage_dx = None
        if self.nucleation_on:  # discrete nucleation (issue 21): its reaction joins the rate
            nucleating = forms.nucleation_forcing(self.nucleation_force, c, electrode_minus_electrolyte, p)
        if self.bounded:
            local_rate = forms.supply_limited_rate(eta, now.mu, c, electrode_minus_electrolyte, p)
            if self.nucleation_on:  # discrete nucleation (issue 21)
                local_rate = local_rate + nucleating
            dxl = self.dx_lumped

            def rate(v):
                return local_rate * v * dxl

            F = forms.lumped_phase_residual(eta, old.eta, self.dt, tests.eta, local_rate, dxl)
            F += forms.driving_force_residual(now.mu, eta, mech_force, tests.mu, p, kappa, dx, dxl)
            storage_dx = dxl
        else:
            # solver.lumped_rate (default true): d eta/dt and the pointwise rate lumped (vertex
            # quadrature) as in the bounded kinetics, so each node sees its own Butler-Volmer
            # rate. Consistent, the reaction of the front's nodes reaches the nodes ahead of it:
            # eta dips to -0.07 there and the front runs ahead, +5 % metal at 10 nm on the FiPy
            # comparison problem (docs/performance.md, "Against FiPy at equal accuracy"). The
            # mechanical force lives at the quadrature points of the plastic state, so it keeps dx.
            lumped = cfg.solver.lumped_rate
            local_force = 0.0 if lumped else mech_force
            local_rate = forms.allen_cahn_local_rate(eta, c, electrode_minus_electrolyte, local_force, p)
            if self.nucleation_on:  # discrete nucleation (issue 21)
                local_rate = local_rate + nucleating
            dx_local = self.dx_lumped if lumped else None

            def rate(v):
                form = forms.allen_cahn_rate(v, eta, local_rate, kappa, p, dx, dx_local=dx_local)
                if lumped and self.mechanics:
                    form -= p.mobility * mech_force * v * dx
                return form

            storage = self.dx_lumped if lumped else dx
            F = forms.allen_cahn_residual(eta, old.eta, self.dt, tests.eta, rate(tests.eta), storage)
        self.deposition_rate = rate

        self.charge_source = sc.charge_source()
        if self.two_potentials:
            # Conductivities follow the metal-first rule whatever materials.mixing says: with
            # the paper's rule a dendrite inside a GB would keep the GB's (tiny) electronic
            # conductivity and stop conducting electrons.
            conductivity_rule = "metal-first"
            self.sigma_ionic = mix(sc.ionic_conductivities(), eta, self.beta, conductivity_rule)
            self.sigma_electronic = mix(sc.electronic_conductivities(), eta, self.beta, conductivity_rule)
        else:
            conductivity_rule = cfg.materials.mixing
            self.sigma_ionic = mix(sc.conductivities(), eta, self.beta, conductivity_rule)
            self.sigma_electronic = None

        if cfg.materials.transport == "single-ion":
            # Each phase's D is Nernst-Einstein of its conductivity in the charge equation,
            # mixed by the same (linear) rule: D = factor x sigma_ionic pointwise, so c = 1
            # solves Nernst-Planck exactly (docs/model.md, "Transport and the comparison basis").
            D = mix(sc.diffusivity(), eta, self.beta, conductivity_rule)
        else:
            D = mix(sc.diffusivity(), eta, self.beta, cfg.materials.mixing)
        grad_c = c * ufl.grad(raw.c) if self.log_c else ufl.grad(raw.c)
        self.np_flux = forms.nernst_planck_flux(c, grad_c, ufl.grad(phi), D, cfg.phase_field.electrons)
        flux = self.np_flux
        if cfg.materials.transport != "single-ion" and not self.log_c:
            # Where c varies, Galerkin drift is not monotone at cell Peclet numbers above ~2
            # (c fell to -2.8 in the former 3D demo's nucleus; 0.52 with this): exponential
            # fitting along the edges with lumped storage (docs/model.md, Numerics).
            # Single-ion keeps Galerkin, whose flux matches the charge equation's
            # quadrature so that c = 1 holds to round-off.
            origins = forms.cell_origins(self.mesh)
            flux = forms.edge_averaged_flux_term(c, phi, D, cfg.phase_field.electrons, tests.c, origins, dx)
            storage_dx = self.dx_lumped
        site_ratio = cfg.electrochemistry.c_metal / cfg.electrochemistry.c0
        F += forms.nernst_planck_residual(c, old.c, self.dt, flux, tests.c, rate(tests.c), site_ratio, dx, storage_dx)

        self.charge_residuals = {
            "ionic": lambda v: forms.charge_residual(phi, self.sigma_ionic, v, rate(v), self.charge_source, dx)
        }
        F += self.charge_residuals["ionic"](tests.phi_i)
        electrode_test = tests.phi_i
        if self.two_potentials:
            overpotential = electrode_minus_electrolyte - p.equilibrium_potential
            anchor = cfg.solver.electronic_anchor

            def electronic(v):
                form = forms.charge_residual(now.phi_e, self.sigma_electronic, v, rate(v), -self.charge_source, dx)
                if anchor > 0:
                    form += forms.electronic_anchor(overpotential, eta, v, anchor, self.dx_lumped)
                return form

            self.charge_residuals["electronic"] = electronic
            F += electronic(tests.phi_e)
            electrode_test = tests.phi_e
        electrode = electrode_current_term(sc, electrode_test, self.ds, self.applied_current)
        if electrode is not None:
            F += electrode

        if self.mechanics:
            F += forms.equilibrium_residual(self.sigma, tests.u, dx)
            traction = stack_traction_term(sc, tests.u, self.mesh, self.ds)
            if traction is not None:
                F += traction
        self.F = F

    # Electrode control ------------------------------------------------------------------
    def set_electrode(self, segment: Segment, previous: Segment | None = None) -> None:
        """Apply one protocol segment before a step: set the current of the Neumann term,
        or put the electrode's potential condition (with its new value) into the BC list
        the solver assembles with. Takes effect at the next solve.

        With the ``previous`` segment (None: the state already fits this one, as at the
        start or after a restart) the potentials are also moved towards the new control,
        as Newton's starting point: a reversal from +i to -i otherwise starts from
        overpotentials of the wrong sign, where Butler-Volmer's exponentials left the
        line search crawling (measured: 25 iterations at residual 0.57 at every dt
        down to dt_min, after 0.25 s of plating at 0.2 A/cm^2).
        """
        sc = self.scaling
        if segment.mode == "galvanostatic":
            current = segment.signed_current_density
            self.applied_current.value = current / sc.current_density
            # In place: the solver holds this very list.
            self.bcs[:] = [bc for bc in self.bcs if bc is not self.electrode_bc]
            before = previous.signed_current_density if previous is not None else None
            if before and current and before != current:
                # Ohm's law and a symmetric Butler-Volmer law (alpha = 1/2, c ~ 1) scale with
                # the current: potentials relative to the reservoir scale alike.
                self._move_potentials(scale=current / before)
            return
        # The Neumann rows are replaced by the Dirichlet ones; zero keeps the value tidy.
        if self.applied_current is not None:
            self.applied_current.value = 0.0
        target = segment.potential / sc.potential
        self.electrode_bc.g.x.array[:] = target
        if not any(bc is self.electrode_bc for bc in self.bcs):
            self.bcs.append(self.electrode_bc)
        if self.two_potentials and previous is not None:
            # The metal follows its electrode. Imposing the jump on the edge alone leaves a
            # residual of ~1e4 (the metal's conductivity) times the jump in the metal rows,
            # and the relative Newton tolerance accepted a first step whose electrode current
            # had the wrong sign (measured: -9.2e-5 against +9.5e-5 A/m deposited).
            dofs, first_ghost = self.electrode_bc.dof_indices()
            owned = self.w.x.array[dofs[:first_ghost]]
            total, count = self.comm.allreduce(np.array([owned.sum(), owned.size], dtype=float))
            if count:
                self._move_potentials(shift_electronic=target - total / count)

    def _move_potentials(self, scale: float = 1.0, shift_electronic: float = 0.0) -> None:
        """Scale the potentials and shift phi_e in the current and the earlier states
        (w_old, and w_prev, which the time stepper's predictor reads): no potential
        enters a time derivative, and a retry after a failed attempt starts from w_old."""
        names = [n for n in ("phi_i", "phi_e") if n in self.subspaces]
        for state in (self.w, self.w_old, self.w_prev):
            for name in names:
                dofs = self.subspaces[name][1]
                state.x.array[dofs] *= scale
                if name == "phi_e":
                    state.x.array[dofs] += shift_electronic
            state.x.scatter_forward()

    # State --------------------------------------------------------------------------------
    def set_sub(self, name: str, values) -> None:
        self.w.x.array[self.subspaces[name][1]] = values
        self.w.x.scatter_forward()

    def sub_values(self, name: str, w=None) -> np.ndarray:
        """Local values (owned then ghost) of one unknown of ``w`` (default: the current state)."""
        return (w or self.w).x.array[self.subspaces[name][1]]

    def physical_values(self, name: str) -> np.ndarray:
        """Local values of a field as a physical quantity (c, not ln c), scaled units."""
        values = self.sub_values(name)
        return np.exp(values) if self.field[name].logarithmic else values

    def commit(self) -> None:
        """Accept the step: plastic history, then the old (and the one before) state."""
        if self.plastic is not None:
            self.plastic.commit(self.ret)
        copy_state(self.w_old, self.w_prev)
        copy_state(self.w, self.w_old)

    def commit_state(self) -> None:
        """w, set outside a solve (initial values, a restored checkpoint, an observer's
        change), becomes the committed state; the plastic history is left as it is."""
        self.w.x.scatter_forward()
        copy_state(self.w, self.w_old)

    def after_restore(self) -> None:
        """After a checkpoint was read into w (a committed state) and w_prev: make w the old
        state too."""
        self.w_prev.x.scatter_forward()
        self.commit_state()

    def rollback(self) -> None:
        copy_state(self.w_old, self.w)

    @property
    def dofs(self) -> int:
        imap = self.W.dofmap.index_map
        return imap.size_global * self.W.dofmap.index_map_bs

    def facets(self, tag: int) -> np.ndarray:
        return self.poly.facet_tags.find(tag)
