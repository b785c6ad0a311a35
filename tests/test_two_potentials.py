"""The consistent electrochemistry (two potentials, supply-limited kinetics) through the
coupled solver, against what must hold whatever the implementation:

1. Bipolar particle: an isolated Na disc with no electronic leakage, in the ionic field of a
   plating cell, cannot change its amount of metal (no electrons reach it); it plates on its
   reservoir side, strips on its electrode side and drifts toward the reservoir. Its net
   change must stay below 2 % of what the same disc gains when attached to the electrode.
2. Leakage: the same disc linked to the electrode by a GB strip of electronic conductivity
   sigma_e,GB grows at the rate Ohm's law gives for that strip, I = w (phi_e,disc -
   phi_app) / int(dx / sigma_e) along it (within 10 %).
3. Faraday: a planar front under galvanostatic plating advances at i_app / (n F c_m)
   (within 2 %).
4. Charge: the electronic current into the electrode, the ionic current from the
   reservoir and n F c_m d/dt int(eta) agree at every step to solver tolerance (the
   electronic anchor's removal, reported, is the only difference), positive while plating.
5. Bounds and Na: eta in [-0.01, 1.01], c >= -1e-3 at every step; with a no-flux
   reservoir, total Na is conserved to 1e-8.

A wrong sign of either reaction source, an electrode condition on the wrong potential, a
swapped overpotential or a non-lumped sink fails one of these.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from support import merge, rprint

from mpi4py import MPI

import ufl
from dolfinx import fem

from nzsp_fem.config import Config, parse_config
from nzsp_fem.io.probes import ProbeEvaluator
from nzsp_fem.mesh import build_polycrystal, spec_from_config
from nzsp_fem.physics.materials import h
from nzsp_fem.physics.parameters import FARADAY
from nzsp_fem.problem import CoupledProblem
from nzsp_fem.run import Simulation, StepFailed

COMM = MPI.COMM_WORLD
MESH_CACHE = str(Path(__file__).resolve().parents[1] / "meshes")
PHI_APP = -0.45
LX, LY = 0.8e-6, 0.4e-6
DISC = (0.5e-6, 0.2e-6)
RADIUS = 50e-9
BOX = (0.38e-6, 0.62e-6, 0.08e-6, 0.32e-6)  # around the disc, far from the layer

BASE = {
    "domain": {"dim": 2, "size": [LX, LY]},
    "microstructure": {"grains": 1, "gb_width": "40 nm"},
    "mesh": {"size_grain": "16 nm", "size_gb": "10 nm", "size_nucleus": "10 nm", "cache_dir": MESH_CACHE},
    "nuclei": {"radius": RADIUS, "positions": [], "electrode_layer": "40 nm"},
    "materials": {
        "transport": "nernst-einstein",
        "grain": {"electronic_conductivity": 0.0},
        "grain_boundary": {"electronic_conductivity": 0.0},
    },
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m", "reaction_ramp_time": 0.0, "kinetics": "bounded"},
    "electrochemistry": {"potentials": "two", "electrode": {"mode": "potentiostatic", "potential": PHI_APP}},
    "mechanics": {"enabled": False},
    "solver": {"rtol": 1e-9, "atol": 1e-9},
}
DT = 1e-4  # s


@dataclass
class Run:
    cfg: Config
    sim: Simulation
    box: fem.Form
    box_x: fem.Form
    box_right: fem.Form
    diags: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    times: list = field(default_factory=list)

    @property
    def problem(self):
        return self.sim.problem

    def diagnostics(self):
        return self.sim.evaluator()

    def integral(self, form) -> float:
        return COMM.allreduce(fem.assemble_scalar(form), op=MPI.SUM)

    def record(self, t):
        self.times.append(t)
        self.diags.append(self.diagnostics())
        self.boxes.append((self.integral(self.box), self.integral(self.box_x), self.integral(self.box_right)))

    def _step(self, dt: float, depth: int = 0) -> None:
        """One step of dt, or (as the run loop would) two halves after a failed attempt."""
        try:
            self.sim.step(dt)
        except StepFailed as failed:
            assert depth < 5, str(failed)
            self._step(dt / 2, depth + 1)
            self._step(dt / 2, depth + 1)

    def advance(self, steps: int, dt: float = DT):
        for _ in range(steps):
            self._step(dt)
            self.record(self.sim.t)
        return self


def start(over: dict) -> Run:
    cfg = parse_config(merge(BASE, over))
    sim = Simulation(cfg, COMM, polycrystal=build_polycrystal(spec_from_config(cfg), COMM, cache_dir=MESH_CACHE))
    sim.start()
    pb = sim.problem
    x = ufl.SpatialCoordinate(pb.mesh)
    l0 = pb.scaling.length
    x0, x1, y0, y1 = (b / l0 for b in BOX)
    inside = ufl.conditional(
        ufl.And(ufl.And(ufl.gt(x[0], x0), ufl.lt(x[0], x1)), ufl.And(ufl.gt(x[1], y0), ufl.lt(x[1], y1))), 1.0, 0.0
    )
    right = ufl.conditional(ufl.gt(x[0], DISC[0] / l0), 1.0, 0.0)
    eta = pb.fields(pb.w).eta
    dx = ufl.Measure("dx", pb.mesh, metadata={"quadrature_degree": 4})
    run = Run(
        cfg,
        sim,
        fem.form(inside * eta * dx),
        fem.form(inside * x[0] * eta * dx),
        fem.form(inside * right * eta * dx),
    )
    run.record(0.0)
    return run


@functools.lru_cache(maxsize=None)
def floating(steps: int = 20) -> Run:
    return start({"nuclei": {"positions": [[DISC[0], DISC[1]]]}}).advance(steps)


@functools.lru_cache(maxsize=None)
def attached(steps: int = 20) -> tuple[Run, Run]:
    layer = start({}).advance(steps)
    disc = start({"nuclei": {"positions": [[0.0, DISC[1]]]}}).advance(steps)
    return layer, disc


def check_bounds_and_charge(run: Run, label: str):
    for k, d in enumerate(run.diags):
        assert -0.01 <= d.eta_min and d.eta_max <= 1.01, (label, k, d.eta_min, d.eta_max)
        assert d.c_min >= -1e-3, (label, k, d.c_min)
    for k, d in enumerate(run.diags[1:], start=1):
        scale = abs(d.deposition_current_A)
        assert d.electrode_current_A > 0 and d.reservoir_current_A > 0, (label, k)
        assert abs(d.reservoir_current_A - d.deposition_current_A) <= 1e-6 * scale, (label, k)
        assert abs(d.electrode_current_A - (d.deposition_current_A - d.anchor_current_A)) <= 1e-6 * scale
        assert abs(d.anchor_current_A) <= 1e-5 * scale, (label, k, d.anchor_current_A)
        # n F c_m d/dt int(eta), from the stored integrals (the rate form is not used here).
        cfg = run.cfg
        l0 = cfg.scales.length
        d_eta = (d.integral_eta - run.diags[k - 1].integral_eta) * l0**2
        stored = (
            cfg.phase_field.electrons
            * FARADAY
            * cfg.electrochemistry.c_metal
            * d_eta
            / (run.times[k] - run.times[k - 1])
        )
        assert stored == pytest.approx(d.deposition_current_A, rel=1e-6), (label, k)


def test_bipolar_particle_does_not_grow_without_electrons():
    run = floating()
    layer, disc = attached()
    gain_attached = (disc.diags[-1].integral_eta - disc.diags[0].integral_eta) - (
        layer.diags[-1].integral_eta - layer.diags[0].integral_eta
    )
    (b0, bx0, br0), (b1, bx1, br1) = run.boxes[0], run.boxes[-1]
    net = b1 - b0
    left_half = (b1 - br1) - (b0 - br0)
    right_half = br1 - br0
    shift = (bx1 / b1 - bx0 / b0) * run.cfg.scales.length
    rprint(
        f"\n[bipolar] attached disc gain {gain_attached:.4e}, floating net {net:.3e} "
        f"(ratio {net / gain_attached:.2e}); reservoir half {right_half:+.3e}, electrode half "
        f"{left_half:+.3e}; centroid shift {shift * 1e9:+.4f} nm"
    )
    assert gain_attached > 0
    assert abs(net) < 0.02 * gain_attached
    assert right_half > 0 and left_half < 0
    assert right_half > 100 * abs(net)  # the redistribution is resolved, not noise
    assert shift > 0
    for r, label in ((run, "floating"), (layer, "layer"), (disc, "attached")):
        check_bounds_and_charge(r, label)


def line_values(pb: CoupledProblem, points_m: np.ndarray, name: str) -> np.ndarray:
    """Values of one unknown at points (metres), on every rank."""
    V, dofs = pb.subspaces[name]
    f = fem.Function(V)
    f.x.array[:] = pb.w.x.array[dofs]
    evaluator = ProbeEvaluator(pb.mesh, np.c_[points_m / pb.scaling.length, np.zeros(len(points_m))])
    return np.asarray(evaluator.evaluate_all({name: f}, root=None)[name]).ravel()


def test_leakage_through_a_gb_strip_follows_ohm():
    """A horizontal GB (two grains, seeds mirrored about y = 0.2 um) links the disc to the
    electrode layer; only the strip conducts electrons (1e-3 S/m)."""
    sigma_gb = 1e-3
    run = start(
        {
            "microstructure": {"grains": 2, "seeds": [["0.4 um", "0.1 um"], ["0.4 um", "0.3 um"]]},
            "nuclei": {"positions": [[DISC[0], DISC[1]]]},
            "materials": {"grain_boundary": {"electronic_conductivity": sigma_gb}},
        }
    ).advance(5)
    before = run.boxes[-1][0]
    run.advance(1)
    pb = run.problem
    cfg, sc = run.cfg, pb.scaling
    l0 = cfg.scales.length
    growth = (run.boxes[-1][0] - before) * l0**2 / DT  # m^2/s of metal in the box
    measured = cfg.phase_field.electrons * FARADAY * cfg.electrochemistry.c_metal * growth

    xs = np.linspace(0.0, DISC[0], 801)
    pts = np.c_[xs, np.full_like(xs, DISC[1])]
    eta = line_values(pb, pts, "eta")
    phi_e_disc = line_values(pb, pts[-1:], "phi_e")[0] * sc.potential
    metal = sc.electronic_conductivities().metal * sc.conductivity
    sigma = h(np.clip(eta, 0, 1)) * metal + (1 - h(np.clip(eta, 0, 1))) * sigma_gb
    resistance = np.trapezoid(1.0 / sigma, xs)  # (S/m)^-1 m
    width = cfg.microstructure.gb_width
    hand = width * (phi_e_disc - PHI_APP) / resistance
    rprint(
        f"\n[leakage] measured {measured:.4e} A/m, Ohm {hand:.4e} A/m (ratio {measured / hand:.4f}); "
        f"disc phi_e {phi_e_disc:+.4f} V, strip resistance {resistance:.4e}"
    )
    assert measured > 0
    assert measured == pytest.approx(hand, rel=0.10)
    check_bounds_and_charge(run, "leakage")


def front_position(pb: CoupledProblem, y: float) -> float:
    """x (m) where eta crosses 0.5 along the line at height y, by linear interpolation."""
    xs = np.linspace(0.0, pb.cfg.domain.size[0], 1201)
    eta = line_values(pb, np.c_[xs, np.full_like(xs, y)], "eta")
    k = int(np.argmax(eta < 0.5))
    return float(xs[k - 1] + (0.5 - eta[k - 1]) * (xs[k] - xs[k - 1]) / (eta[k] - eta[k - 1]))


def test_planar_front_moves_at_the_faraday_speed():
    i_app = 1e4  # A/m^2, v_F ~ 1.07 um/s
    ly = 0.08e-6
    run = start(
        {
            "domain": {"size": ["0.6 um", ly]},
            "mesh": {"size_grain": "8 nm"},
            "nuclei": {"electrode_layer": "100 nm"},
            "electrochemistry": {"electrode": {"mode": "galvanostatic", "current_density": i_app}},
        }
    )
    cfg = run.cfg
    v_faraday = i_app / (cfg.phase_field.electrons * FARADAY * cfg.electrochemistry.c_metal)
    run.advance(20, dt=1e-3)  # 20 ms: the profile settles
    x0, t0 = front_position(run.problem, ly / 2), run.times[-1]
    run.advance(20, dt=1e-3)
    x1, t1 = front_position(run.problem, ly / 2), run.times[-1]
    speed = (x1 - x0) / (t1 - t0)
    l0 = cfg.scales.length
    mean = (run.diags[-1].integral_eta - run.diags[20].integral_eta) * l0**2 / ly / (t1 - t0)
    rprint(
        f"\n[Faraday] v_F {v_faraday * 1e6:.4f} um/s; eta = 0.5 crossing {speed * 1e6:.4f} um/s "
        f"({speed / v_faraday - 1:+.2%}); int(eta)/Ly {mean * 1e6:.4f} um/s"
    )
    assert speed == pytest.approx(v_faraday, rel=0.02)
    check_bounds_and_charge(run, "faraday")


def test_sodium_conserved_without_reservoir():
    run = start({"nuclei": {"positions": [[0.0, DISC[1]]]}, "electrochemistry": {"reservoir": False}}).advance(15)
    n0 = run.diags[0].total_sodium_mol
    drift = max(abs(d.total_sodium_mol - n0) / n0 for d in run.diags)
    moved = (run.diags[-1].integral_eta - run.diags[0].integral_eta) / run.diags[0].integral_eta
    rprint(f"\n[Na, no-flux] max relative drift {drift:.2e}; metal grew {moved:.2%}")
    assert drift < 1e-8
    assert moved > 1e-3  # not vacuous
    check_bounds_and_charge(run, "no-flux")
