"""The start-up problems: the initial phase field and the problems that make the initial
potentials and displacement consistent with it. The solver layer solves them once,
before the first step (``solver/coupled.CoupledSolver.initialize``); nothing here is
part of the time-stepping residual, so it lives apart from ``CoupledProblem``."""

from __future__ import annotations

import numpy as np

import ufl
from dolfinx import fem

from ..physics import forms
from ..physics.materials import mix
from .boundary import build_dirichlet, electrode_current_term, stack_traction_term
from .coupled import CoupledProblem


class StartupProblems:
    """The start-up problems of one coupled problem, in its scaled units."""

    def __init__(self, problem: CoupledProblem):
        self.problem = problem

    def initial_eta(self, x):
        """Tanh discs at the nuclei (and an optional Na layer along the left electrode)."""
        pb = self.problem
        cfg, sc = pb.cfg, pb.scaling
        width = sc.interface_width / sc.length
        radius = cfg.nuclei.radius / sc.length
        eta = np.zeros(x.shape[1])
        for centre in pb.poly.nuclei:
            r = np.sqrt(sum((x[i] - centre[i]) ** 2 for i in range(pb.dim)))
            eta = np.maximum(eta, 0.5 * (1 - np.tanh((r - radius) / width)))
        layer = cfg.nuclei.electrode_layer / sc.length
        if layer > 0:
            eta = np.maximum(eta, 0.5 * (1 - np.tanh((x[0] - layer) / width)))
        return eta

    def potential_startup(self, eta0):
        """(F, phi, bcs): steady conduction with the initial eta (no deposition yet), or None
        with two potentials (see :meth:`initial_potentials`).

        A straight-line phi through a metal nucleus makes the first implicit step of the
        single-potential model dissolve it (docs/model.md), so phi starts from this solution.
        """
        pb = self.problem
        if pb.two_potentials:
            return None
        V = pb.collapsed_space("phi_i")
        phi, v = fem.Function(V), ufl.TestFunction(V)
        sigma = mix(pb.scaling.conductivities(), eta0, pb.beta, pb.cfg.materials.mixing)
        F = forms.charge_residual(phi, sigma, v, 0.0, 0.0, pb.dx)
        electrode = electrode_current_term(pb.scaling, v, pb.ds)
        if electrode is not None:
            F += electrode
        bcs = build_dirichlet(pb.dirichlet, lambda name: V if name == "phi_i" else None, pb.poly.facet_tags, pb.dim - 1)
        return F, phi, bcs

    def initial_potentials(self, x):
        """Two potentials: (phi_i, phi_e) at points x, scaled.

        phi_i falls linearly from the electrode to the reservoir (its value at the electrode
        is the applied potential, or what i_app needs through the grain); phi_e is the
        electrode's potential everywhere. The first steps (with the reaction ramp) then set
        up the double layers; no start-up solve is needed because every nucleus is now
        stable (docs/model.md).
        """
        pb = self.problem
        cfg, sc = pb.cfg, pb.scaling
        lx = cfg.domain.size[0] / sc.length
        first = pb.segments[0]
        if first.mode == "potentiostatic":
            at_electrode = first.potential / sc.potential
        else:
            at_electrode = -first.signed_current_density / sc.current_density * lx
        phi_i = at_electrode * (1.0 - x[0] / lx)
        return phi_i, np.full_like(phi_i, at_electrode)

    def mechanics_startup(self, eta0):
        """(F, u, bcs, return map or None): mechanical equilibrium with the initial eigenstrain."""
        pb = self.problem
        V = pb.collapsed_space("u")
        u, v = fem.Function(V), ufl.TestFunction(V)
        sigma, _, ret = pb.constitutive(u, eta0)
        F = forms.equilibrium_residual(sigma, v, pb.dx)
        traction = stack_traction_term(pb.scaling, v, pb.mesh, pb.ds)
        if traction is not None:
            F += traction
        bcs = build_dirichlet(pb.dirichlet, lambda name: V if name == "u" else None, pb.poly.facet_tags, pb.dim - 1)
        return F, u, bcs, ret
