"""The coupled eta / c / phi / u problem on a polycrystal, in scaled units.

Unknowns live in one mixed space (monolithic Newton): eta (P1), the concentration as
mu = ln(c) (P1; c = exp(mu) stays positive) or c itself, phi/(RT/F) (P1), u/l0 (vector P1
or P2, absent when mechanics is off). Plastic strain and equivalent plastic strain live at
quadrature points and are committed only after a converged step.
"""

from __future__ import annotations

from dataclasses import dataclass

import basix.ufl
import numpy as np
import ufl
from dolfinx import fem, la
from mpi4py import MPI
from petsc4py import PETSc

from . import forms
from .config import Config
from .materials import metal_only, mix, mix_slope_eta
from .mesh import BOTTOM, FRONT, LEFT, RIGHT, TOP, Polycrystal, gb_indicator
from .nonlinear import SNES_VI_INFINITY, SNESProblem, SolveReport
from .plasticity import PlasticState, elastic_stress, lame, radial_return, strain3, von_mises
from .scaling import Scaling

ETA, CONC, PHI, DISP = 0, 1, 2, 3


def solver_options(cfg: Config) -> dict:
    """PETSc options of the chosen preset, then the user's petsc_options on top."""
    s = cfg.solver
    opts = {
        "snes_type": "vinewtonrsls" if s.bounds else "newtonls",
        "snes_linesearch_type": "bt",
        "snes_rtol": s.rtol,
        "snes_atol": s.atol,
        "snes_stol": s.stol,
        "snes_max_it": s.max_it,
        "snes_max_linear_solve_fail": 1,
    }
    if s.preset == "direct":
        opts.update({"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps",
                     "mat_mumps_icntl_14": 200, "mat_mumps_icntl_24": 1})
    else:
        # Field split: the stiff eta/c/phi block by additive Schwarz with LU on subdomains,
        # the displacement block by algebraic multigrid; GMRES outside.
        opts.update({"ksp_type": "fgmres", "ksp_rtol": 1e-8, "ksp_max_it": 400, "ksp_gmres_restart": 200,
                     "pc_type": "fieldsplit", "pc_fieldsplit_type": "multiplicative",
                     "fieldsplit_chem_ksp_type": "preonly", "fieldsplit_chem_pc_type": "asm",
                     "fieldsplit_chem_pc_asm_overlap": 2, "fieldsplit_chem_sub_pc_type": "lu",
                     "fieldsplit_chem_sub_pc_factor_mat_solver_type": "mumps",
                     "fieldsplit_mech_ksp_type": "preonly", "fieldsplit_mech_pc_type": "hypre",
                     "fieldsplit_mech_pc_hypre_type": "boomeramg"})
    opts.update(s.petsc_options)
    return opts


@dataclass
class Diagnostics:
    """Integrals and extremes of the current state, in SI (2D: per metre of depth)."""
    integral_eta: float
    integral_c: float
    integral_phi: float
    total_sodium_mol: float
    metal_fraction: float
    penetration_depth_m: float
    electrode_current_A: float
    max_current_density_A_m2: float
    max_von_mises_Pa: float
    max_plastic_strain: float
    phi_gb_min_V: float
    phi_gb_max_V: float
    gb_mean_current_density_A_m2: float
    eta_min: float
    eta_max: float
    c_min: float
    c_max: float


class CoupledProblem:
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

        cell = msh.basix_cell()
        p1 = basix.ufl.element("Lagrange", cell, 1)
        parts = [p1, p1, p1]
        if self.mechanics:
            parts.append(basix.ufl.element("Lagrange", cell, cfg.mechanics.displacement_degree, shape=(dim,)))
        self.W = fem.functionspace(msh, basix.ufl.mixed_element(parts))
        self.w = fem.Function(self.W, name="state")
        self.w_old = fem.Function(self.W, name="state_old")
        self.subspaces = [self.W.sub(i).collapse() for i in range(len(parts))]

        # Static microstructure.
        self.beta = gb_indicator(poly)
        self.beta.name = "beta"

        # Time-dependent scalars (scaled).
        self.dt = fem.Constant(msh, PETSc.ScalarType(cfg.time.dt_initial / sc.time))
        self.reaction = fem.Constant(msh, PETSc.ScalarType(0.0))

        self.plastic = PlasticState(msh, q) if (self.mechanics and cfg.mechanics.plasticity) else None
        if self.plastic is not None:
            self.dx = self.plastic.dx

        self._build_forms()
        self._build_bcs()
        # A unique options prefix per problem: a study builds several in one process.
        self.solver = SNESProblem(self.F, self.w, self.bcs, solver_options(cfg))
        if cfg.solver.preset == "iterative":
            self._set_fieldsplit()
        if cfg.solver.bounds:
            self._set_bounds()

    # ------------------------------------------------------------------------------------
    def fields(self, w):
        """UFL views (eta, c, phi, u) of a mixed function; u is None without mechanics."""
        parts = ufl.split(w)
        eta, conc, phi = parts[0], parts[1], parts[2]
        c = ufl.exp(conc) if self.log_c else conc
        u = parts[3] if self.mechanics else None
        return eta, conc, c, phi, u

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
        hardening = metal_only(cfg.hardening("metal") / sc.stress, cfg.hardening("grain") / sc.stress, eta)
        ret = radial_return(eps, eps_eig, self.plastic, lam, mu, sigma_y, hardening)
        return ret.sigma, ret.eps_e, ret

    def ac_parameters(self) -> forms.AllenCahnParameters:
        cfg, sc = self.cfg, self.scaling
        pf = cfg.phase_field
        return forms.AllenCahnParameters(
            mobility=pf.mobility * pf.barrier_height * sc.time,
            gradient=pf.gradient_coefficient / (pf.barrier_height * sc.length**2),
            reaction=self.reaction,
            alpha=pf.charge_transfer_coefficient,
            electrons=pf.electrons,
            equilibrium_potential=cfg.electrochemistry.equilibrium_potential / sc.potential,
        )

    def kappa_factor(self, eta):
        a = self.cfg.phase_field.anisotropy
        width = self.cfg.interface_width() / self.scaling.length
        # Floor: 1 % of the gradient inside an equilibrium interface, ~1/(2 width).
        return forms.anisotropy_factor(ufl.grad(eta), self.dim, a.strength, a.mode, a.angle,
                                       floor=0.01 / width)

    def _build_forms(self):
        cfg, sc, dx = self.cfg, self.scaling, self.dx
        eta, conc, c, phi, u = self.fields(self.w)
        eta_n, conc_n, c_n, _, _ = self.fields(self.w_old)
        tests = ufl.TestFunctions(self.W)
        v_eta, v_c, v_phi = tests[0], tests[1], tests[2]
        p = self.ac_parameters()
        self.ac = p

        if self.mechanics:
            sigma, eps_e, ret = self.constitutive(u, eta)
            self.sigma, self.eps_e, self.ret = sigma, eps_e, ret
            moduli = sc.moduli()
            E = mix(moduli, eta, self.beta, cfg.materials.mixing)
            dE = mix_slope_eta(moduli, eta, self.beta, cfg.materials.mixing)
            mech_force = forms.mechanical_driving_force(
                sigma, eps_e, eta, cfg.mechanics.volume_expansion, E, dE, sc.stress / sc.energy_density)
        else:
            self.sigma = self.eps_e = self.ret = None
            mech_force = 0.0

        local_rate = forms.allen_cahn_local_rate(eta, c, phi, mech_force, p)
        kappa = self.kappa_factor(eta)

        def rate(v):
            return forms.allen_cahn_rate(v, eta, local_rate, kappa, p, dx)
        self.deposition_rate = rate
        F = forms.allen_cahn_residual(eta, eta_n, self.dt, v_eta, rate(v_eta), dx)

        D = mix(sc.diffusivity(), eta, self.beta, cfg.materials.mixing)
        grad_c = c * ufl.grad(conc) if self.log_c else ufl.grad(conc)
        self.np_flux = forms.nernst_planck_flux(c, grad_c, ufl.grad(phi), D, cfg.phase_field.electrons)
        site_ratio = cfg.electrochemistry.c_metal / cfg.electrochemistry.c0
        F += forms.nernst_planck_residual(c, c_n, self.dt, self.np_flux, v_c, rate(v_c), site_ratio, dx)

        self.sigma_el = mix(sc.conductivities(), eta, self.beta, cfg.materials.mixing)
        self.charge_source = sc.charge_source()
        F += forms.charge_residual(phi, self.sigma_el, v_phi, rate(v_phi), self.charge_source, dx)
        electrode = cfg.electrochemistry.electrode
        if electrode.mode == "galvanostatic":
            F += forms.galvanostatic_term(electrode.current_density / sc.current_density, v_phi, self.ds(LEFT))

        if self.mechanics:
            v_u = tests[3]
            F += forms.equilibrium_residual(self.sigma, v_u, self.dim, dx)
            if cfg.mechanics.stack_pressure > 0:
                n = ufl.FacetNormal(self.mesh)
                F += forms.traction_term(cfg.mechanics.stack_pressure / sc.stress, v_u, n, self.ds(TOP))
        self.F = F

    def _facets(self, tag):
        return self.poly.facet_tags.find(tag)

    def _dirichlet(self, sub, value, tags, component=None):
        space = self.W.sub(sub) if component is None else self.W.sub(sub).sub(component)
        collapsed, _ = space.collapse()
        facets = np.concatenate([self._facets(t) for t in tags])
        dofs = fem.locate_dofs_topological((space, collapsed), self.dim - 1, facets)
        f = fem.Function(collapsed)
        f.x.array[:] = value
        return fem.dirichletbc(f, dofs, space)

    def _build_bcs(self):
        cfg, sc = self.cfg, self.scaling
        bcs = [self._dirichlet(PHI, 0.0, [RIGHT])]
        if cfg.electrochemistry.reservoir:
            bcs.append(self._dirichlet(CONC, 0.0 if self.log_c else 1.0, [RIGHT]))
        electrode = cfg.electrochemistry.electrode
        if electrode.mode == "potentiostatic":
            bcs.append(self._dirichlet(PHI, electrode.potential / sc.potential, [LEFT]))
        if self.mechanics:
            bcs.append(self._dirichlet(DISP, 0.0, [LEFT, RIGHT], component=0))
            bcs.append(self._dirichlet(DISP, 0.0, [BOTTOM], component=1))
            if self.dim == 3:
                bcs.append(self._dirichlet(DISP, 0.0, [FRONT], component=2))
        self.bcs = bcs

    def _field_index_set(self, subs, block_size=1):
        imap = self.W.dofmap.index_map
        bs = self.W.dofmap.index_map_bs
        n_owned = imap.size_local * bs
        offset = imap.local_range[0] * bs
        idx = np.sort(np.concatenate([self.subspaces[s][1] for s in subs]))
        idx = idx[idx < n_owned] + offset
        index_set = PETSc.IS().createGeneral(idx.astype(PETSc.IntType), comm=self.comm)
        # A node's displacement components are consecutive in the mixed numbering; telling
        # BoomerAMG so (nodal blocks) cut FGMRES iterations 152 -> 12 at 200k dofs (bench).
        index_set.setBlockSize(block_size)
        return index_set

    def _set_fieldsplit(self):
        pc = self.solver.snes.getKSP().getPC()
        splits = [("chem", self._field_index_set([ETA, CONC, PHI]))]
        if self.mechanics:
            splits.append(("mech", self._field_index_set([DISP], block_size=self.dim)))
        pc.setFieldSplitIS(*splits)

    def _set_bounds(self):
        lower, upper = fem.Function(self.W), fem.Function(self.W)
        lower.x.array[:] = -SNES_VI_INFINITY
        upper.x.array[:] = SNES_VI_INFINITY
        eta_dofs = self.subspaces[ETA][1]
        lower.x.array[eta_dofs] = 0.0
        upper.x.array[eta_dofs] = 1.0
        if not self.log_c:
            lower.x.array[self.subspaces[CONC][1]] = 0.0
        self._bounds = (lower, upper)
        self.solver.set_bounds(lower, upper)

    # Initial state ----------------------------------------------------------------------
    def initial_eta(self, x):
        """Tanh discs at the nuclei (and an optional Na layer along the left electrode)."""
        cfg, sc = self.cfg, self.scaling
        width = cfg.interface_width() / sc.length
        radius = cfg.nuclei.radius / sc.length
        eta = np.zeros(x.shape[1])
        for centre in self.poly.nuclei:
            r = np.sqrt(sum((x[i] - centre[i]) ** 2 for i in range(self.dim)))
            eta = np.maximum(eta, 0.5 * (1 - np.tanh((r - radius) / width)))
        layer = cfg.nuclei.electrode_layer / sc.length
        if layer > 0:
            eta = np.maximum(eta, 0.5 * (1 - np.tanh((x[0] - layer) / width)))
        return eta

    def set_sub(self, sub, values):
        self.w.x.array[self.subspaces[sub][1]] = values
        self.w.x.scatter_forward()

    def sub_function(self, sub, w=None):
        V, dofs = self.subspaces[sub]
        f = fem.Function(V)
        f.x.array[:] = (w or self.w).x.array[dofs]
        return f

    def initialize(self):
        """eta from the nuclei, c = 1, then phi and u consistent with that eta.

        A straight-line phi through a metal nucleus makes the first implicit step dissolve
        it (MODEL.md probe), so phi starts from steady conduction with the initial eta, and u
        from mechanical equilibrium with its eigenstrain (plastic state committed).
        """
        V_eta = self.subspaces[ETA][0]
        eta0 = fem.Function(V_eta)
        eta0.interpolate(self.initial_eta)
        self.set_sub(ETA, eta0.x.array)
        self.set_sub(CONC, 0.0 if self.log_c else 1.0)
        self._solve_initial_potential(eta0)
        if self.mechanics:
            self._solve_initial_mechanics(eta0)
        self.w.x.petsc_vec.copy(self.w_old.x.petsc_vec)
        self.w_old.x.scatter_forward()

    def _solve_initial_potential(self, eta0):
        cfg, sc = self.cfg, self.scaling
        V = self.subspaces[PHI][0]
        phi, v = fem.Function(V), ufl.TestFunction(V)
        sigma = mix(sc.conductivities(), eta0, self.beta, cfg.materials.mixing)
        F = forms.charge_residual(phi, sigma, v, 0.0, 0.0, self.dx)
        electrode = cfg.electrochemistry.electrode
        facets = self._facets
        bcs = [fem.dirichletbc(PETSc.ScalarType(0.0), fem.locate_dofs_topological(V, self.dim - 1, facets(RIGHT)), V)]
        if electrode.mode == "potentiostatic":
            bcs.append(fem.dirichletbc(PETSc.ScalarType(electrode.potential / sc.potential),
                                       fem.locate_dofs_topological(V, self.dim - 1, facets(LEFT)), V))
        else:
            F += forms.galvanostatic_term(electrode.current_density / sc.current_density, v, self.ds(LEFT))
        opts = {"snes_type": "ksponly", "ksp_type": "preonly", "pc_type": "lu",
                "pc_factor_mat_solver_type": "mumps"}
        solver = SNESProblem(F, phi, bcs, opts, prefix="nzsp_init_phi_")
        report = solver.solve()
        solver.destroy()
        if not report.converged:
            raise RuntimeError(f"initial potential solve failed: {report.reason_name}")
        self.set_sub(PHI, phi.x.array)

    def _solve_initial_mechanics(self, eta0):
        V = self.subspaces[DISP][0]
        u, v = fem.Function(V), ufl.TestFunction(V)
        sigma, _, ret = self.constitutive(u, eta0)
        F = forms.equilibrium_residual(sigma, v, self.dim, self.dx)
        cfg, sc = self.cfg, self.scaling
        if cfg.mechanics.stack_pressure > 0:
            F += forms.traction_term(cfg.mechanics.stack_pressure / sc.stress, v, ufl.FacetNormal(self.mesh),
                                     self.ds(TOP))
        bcs = []
        comp_tags = [(0, [LEFT, RIGHT]), (1, [BOTTOM])] + ([(2, [FRONT])] if self.dim == 3 else [])
        for comp, tags in comp_tags:
            Vc, _ = V.sub(comp).collapse()
            facets = np.concatenate([self._facets(t) for t in tags])
            dofs = fem.locate_dofs_topological((V.sub(comp), Vc), self.dim - 1, facets)
            zero = fem.Function(Vc)
            bcs.append(fem.dirichletbc(zero, dofs, V.sub(comp)))
        opts = dict(solver_options(self.cfg))
        opts.update({"snes_type": "newtonls", "ksp_type": "preonly", "pc_type": "lu",
                     "pc_factor_mat_solver_type": "mumps", "snes_max_it": 50})
        opts = {k: v for k, v in opts.items() if not k.startswith("fieldsplit") and "asm" not in k}
        solver = SNESProblem(F, u, bcs, opts, prefix="nzsp_init_u_")
        report = solver.solve()
        solver.destroy()
        if not report.converged:
            raise RuntimeError(f"initial mechanical equilibrium failed: {report.reason_name}")
        if ret is not None:
            self.plastic.commit(ret)
        self.set_sub(DISP, u.x.array)

    # Time step ----------------------------------------------------------------------------
    def reaction_rate_at(self, t: float) -> float:
        """L_eta t0, ramped quadratically from 0 over reaction_ramp_time (start-up aid)."""
        pf = self.cfg.phase_field
        ramp = 1.0 if pf.reaction_ramp_time <= 0 else min(1.0, (t / pf.reaction_ramp_time) ** 2)
        return pf.reaction_rate * self.scaling.time * ramp

    def try_step(self, t: float, dt: float) -> SolveReport:
        """Solve for the state at t + dt (SI seconds). On failure, the state is rolled back."""
        self.dt.value = dt / self.scaling.time
        self.reaction.value = self.reaction_rate_at(t + dt)
        report = self.solver.solve()
        finite = self.comm.allreduce(bool(np.all(np.isfinite(self.w.x.array))), op=MPI.LAND)
        if report.converged and not finite:
            report.converged = False
            report.reason_name = "NONFINITE_STATE"
        if not report.converged:
            self.rollback()
        return report

    def commit(self):
        """Accept the step: plastic history, then the old state."""
        if self.plastic is not None:
            self.plastic.commit(self.ret)
        self.w.x.petsc_vec.copy(self.w_old.x.petsc_vec)
        self.w_old.x.scatter_forward()

    def after_restore(self):
        """After a checkpoint was read into w (a committed state): make it the old state too."""
        self.w.x.scatter_forward()
        self.w.x.petsc_vec.copy(self.w_old.x.petsc_vec)
        self.w_old.x.scatter_forward()

    def rollback(self):
        self.w_old.x.petsc_vec.copy(self.w.x.petsc_vec)
        self.w.x.scatter_forward()

    @property
    def dofs(self) -> int:
        imap = self.W.dofmap.index_map
        return imap.size_global * self.W.dofmap.index_map_bs

    # Diagnostics ----------------------------------------------------------------------------
    def _integral(self, expr) -> float:
        return self.comm.allreduce(fem.assemble_scalar(fem.form(expr * self.dx)), op=MPI.SUM)

    def electrode_current(self) -> float:
        """Current out of the electrolyte into the left electrode (A, or A/m in 2D), i.e. the
        flux of i = -sigma grad phi through the left edge: positive for a cathodic electrode
        current. Under potentiostatic growth it is the right-edge current minus the
        deposition current nFc_m d(int eta)/dt (the model's charge sink), so it can be
        negative while Na plates. Taken from the charge residual on the boundary's shape functions (the
        variationally consistent flux), so it balances exactly at convergence."""
        if not hasattr(self, "_electrode_indicator"):
            V = self.subspaces[PHI][0]
            chi = fem.Function(V)
            dofs = fem.locate_dofs_topological(V, self.dim - 1, self._facets(LEFT))
            chi.x.array[dofs] = 1.0
            chi.x.scatter_forward()
            eta, _, _, phi, _ = self.fields(self.w)
            form = forms.charge_residual(phi, self.sigma_el, chi, self.deposition_rate(chi), self.charge_source, self.dx)
            self._electrode_indicator = fem.form(form)
        value = self.comm.allreduce(fem.assemble_scalar(self._electrode_indicator), op=MPI.SUM)
        sc = self.scaling
        return -value * sc.current_density * sc.length ** (self.dim - 1)

    def diagnostics(self) -> Diagnostics:
        sc, cfg = self.scaling, self.cfg
        eta, conc, c, phi, u = self.fields(self.w)
        vol_scale = sc.length**self.dim
        volume = self._integral(fem.Constant(self.mesh, PETSc.ScalarType(1.0)))
        i_eta = self._integral(eta)
        i_c = self._integral(c)
        i_phi = self._integral(phi)
        ec = cfg.electrochemistry
        total_na = (ec.c0 * i_c + ec.c_metal * i_eta) * vol_scale

        eta_f = self.sub_function(ETA)
        V_eta = self.subspaces[ETA][0]
        x = V_eta.tabulate_dof_coordinates()
        n_owned = V_eta.dofmap.index_map.size_local
        eta_vals = eta_f.x.array[:n_owned]
        metal_x = x[:n_owned, 0][eta_vals > 0.5]
        depth = self.comm.allreduce(float(metal_x.max()) if metal_x.size else 0.0, op=MPI.MAX)

        conc_vals = self.sub_function(CONC).x.array[:n_owned]
        c_vals = np.exp(conc_vals) if self.log_c else conc_vals
        phi_vals = self.sub_function(PHI).x.array[:n_owned]

        def gmin(a):
            return self.comm.allreduce(float(a.min()) if a.size else np.inf, op=MPI.MIN)

        def gmax(a):
            return self.comm.allreduce(float(a.max()) if a.size else -np.inf, op=MPI.MAX)

        gb = self._gb_vertex_mask(V_eta, n_owned)
        cell_values = self.cell_fields()
        i_mag = cell_values["current_density_magnitude"]
        vm = cell_values.get("von_mises")
        pp = cell_values.get("plastic_strain")
        return Diagnostics(
            integral_eta=i_eta, integral_c=i_c, integral_phi=i_phi,
            total_sodium_mol=total_na,
            metal_fraction=i_eta / volume,
            penetration_depth_m=depth * sc.length,
            electrode_current_A=self.electrode_current(),
            max_current_density_A_m2=gmax(i_mag.x.array[:self._n_cells()]),
            max_von_mises_Pa=gmax(vm.x.array[:self._n_cells()]) if vm is not None else 0.0,
            max_plastic_strain=gmax(pp.x.array[:self._n_cells()]) if pp is not None else 0.0,
            phi_gb_min_V=gmin(phi_vals[gb]) * sc.potential if self.comm.allreduce(gb.any(), op=MPI.LOR) else float("nan"),
            phi_gb_max_V=gmax(phi_vals[gb]) * sc.potential if self.comm.allreduce(gb.any(), op=MPI.LOR) else float("nan"),
            gb_mean_current_density_A_m2=self._gb_mean_current_density(phi),
            eta_min=gmin(eta_vals), eta_max=gmax(eta_vals),
            c_min=gmin(c_vals), c_max=gmax(c_vals),
        )

    def _gb_mean_current_density(self, phi) -> float:
        """beta-weighted mean of |i| = |sigma grad phi| over the GB region (A/m^2)."""
        weight = self._integral(self.beta)
        if weight <= 0:
            return float("nan")
        grad = ufl.grad(phi)
        magnitude = self.sigma_el * ufl.sqrt(ufl.dot(grad, grad) + 1e-300)
        return self._integral(self.beta * magnitude) / weight * self.scaling.current_density

    def _n_cells(self) -> int:
        return self.mesh.topology.index_map(self.dim).size_local

    def _gb_vertex_mask(self, V, n_owned):
        """Owned P1 dofs that lie in the GB region (beta > 0.5)."""
        if not hasattr(self, "_gb_mask"):
            b = fem.Function(V)
            if self.beta.function_space.ufl_element().degree == 0:
                # Max over adjacent cells: a vertex touching a GB cell is a GB vertex.
                self.mesh.topology.create_connectivity(self.dim, 0)
                c2v = self.mesh.topology.connectivity(self.dim, 0)
                vals = np.zeros(b.x.array.size)
                dofmap = V.dofmap.list
                for cell in np.flatnonzero(self.beta.x.array[: c2v.num_nodes] > 0.5):
                    vals[dofmap[cell]] = 1.0
                b.x.array[:] = vals
                b.x.scatter_reverse(la.InsertMode.add)
                b.x.scatter_forward()
            else:
                b.interpolate(self.beta)
            self._gb_mask = b.x.array[:n_owned] > 0.5
        return self._gb_mask

    def cell_fields(self) -> dict[str, fem.Function]:
        """Cell-averaged derived fields in SI (DG0): |i|, i, von Mises, hydrostatic, p."""
        from .plasticity import project_cellwise_average
        sc = self.scaling
        if not hasattr(self, "_dg0"):
            self._dg0 = fem.functionspace(self.mesh, ("DG", 0))
            self._dg0v = fem.functionspace(self.mesh, ("DG", 0, (self.dim,)))
        eta, conc, c, phi, u = self.fields(self.w)
        i_vec = -self.sigma_el * ufl.grad(phi) * sc.current_density
        out = {}
        out["current_density"] = _cell_average_vector(i_vec, self._dg0v, self.dx)
        out["current_density_magnitude"] = _cell_average(ufl.sqrt(ufl.dot(i_vec, i_vec)), self._dg0, self.dx)
        if self.mechanics:
            if self.plastic is not None:
                out["von_mises"] = project_cellwise_average(von_mises(self.sigma) * sc.stress, self.plastic, self._dg0)
                out["hydrostatic_stress"] = project_cellwise_average(ufl.tr(self.sigma) / 3 * sc.stress,
                                                                     self.plastic, self._dg0)
                out["plastic_strain"] = project_cellwise_average(self.plastic.p, self.plastic, self._dg0)
            else:
                out["von_mises"] = _cell_average(von_mises(self.sigma) * sc.stress, self._dg0, self.dx)
                out["hydrostatic_stress"] = _cell_average(ufl.tr(self.sigma) / 3 * sc.stress, self._dg0, self.dx)
        for name, f in out.items():
            f.name = name
        return out


def _cell_average(expr, V, dx) -> fem.Function:
    """Quadrature-weighted cell average of a scalar UFL expression into DG0."""
    v = ufl.TestFunction(V)
    num = fem.assemble_vector(fem.form(expr * v * dx))
    den = fem.assemble_vector(fem.form(v * dx))
    f = fem.Function(V)
    n = V.dofmap.index_map.size_local
    f.x.array[:n] = num.array[:n] / den.array[:n]
    f.x.scatter_forward()
    return f


def _cell_average_vector(expr, V, dx) -> fem.Function:
    v = ufl.TestFunction(V)
    num = fem.assemble_vector(fem.form(ufl.dot(expr, v) * dx))
    den = fem.assemble_vector(fem.form(ufl.dot(ufl.as_vector([1.0] * V.value_size), v) * dx))
    f = fem.Function(V)
    n = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    f.x.array[:n] = num.array[:n] / den.array[:n]
    f.x.scatter_forward()
    return f



def metal_connects_electrodes(problem: CoupledProblem, threshold: float = 0.5) -> bool:
    """Short circuit: do P1 vertices with eta > threshold form a path from x = 0 to x = Lx?

    Each rank contributes the mesh edges (as global dof pairs) of its cells whose end points
    are both metal; rank 0 joins them with a sparse connected-components search. Collective.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    V, dofs = problem.subspaces[ETA]
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
