"""Positivity of c on tetrahedra where c varies (issue 19, deliverable 2).

Single-ion transport (the default) keeps c = c0 to round-off (tests/test_transport.py), so
positivity is tested where c does vary: Table 1's independent D, with which deposition
depletes the electrolyte at the nucleus to its Nernst floor exp(-f 0.45 V) = 2.5e-8, the
steepest c the model makes. A 0.3 x 0.15 x 0.15 um bicrystal (tagged GB slab), a 40 nm
nucleus on the GB at the electrode, -0.45 V, no mechanics, adaptive steps to 1.5 ms
(c_min reaches its floor near 1 ms). The Nernst-Planck flux is the edge-averaged one
(forms.edge_averaged_flux_term, used for every transport but single-ion) with lumped
storage and sink.

Checked at every accepted step: c >= -1e-3 and eta in [-0.01, 1.01]. Measured (1 rank):
c_min -7.2e-4 at 1.46 ms (a node on the electrode face in the interface, eta 0.43), eta in
[8e-13, 0.985]. The Galerkin drift gives the same c_min here to 2 digits: at this mesh
the undershoot is not the drift's (its cell Peclet number stays small where c is small).

The planted term: the cathodic Butler-Volmer branch without its factor c (deposition that
does not stop when the Na+ runs out, a sink that is not monotone in c). It must break the
bound, so the check can fail.
"""

from __future__ import annotations

import pytest
from support import gmax, gmin
from test_transport import MESH_CACHE

from mpi4py import MPI

from nzsp_fem import Simulation
from nzsp_fem.config import parse_config
from nzsp_fem.mesh import build_polycrystal, spec_from_config
from nzsp_fem.physics import forms

COMM = MPI.COMM_WORLD
C_FLOOR, ETA_RANGE = -1e-3, (-0.01, 1.01)
DEPLETION = {
    "domain": {"dim": 3, "size": ["0.3 um", "0.15 um", "0.15 um"]},
    "microstructure": {
        "grains": 2,
        "seeds": [["0.15 um", "0.075 um", "0.04 um"], ["0.15 um", "0.075 um", "0.11 um"]],
        "gb_width": "30 nm",
    },
    "mesh": {"size_grain": "60 nm", "size_gb": "20 nm", "size_nucleus": "40 nm", "cache_dir": MESH_CACHE},
    "nuclei": {"radius": "40 nm", "positions": [["0 um", "0.075 um", "0.075 um"]]},
    "materials": {"transport": "independent"},
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m"},
    "electrochemistry": {"electrode": {"mode": "potentiostatic", "potential": "-0.45 V"}},
    "mechanics": {"enabled": False},
    "time": {"t_end": 1.5e-3, "dt_initial": 1e-5, "dt_max": 2e-4},
    "output": {"verbosity": 0},
}


def bound_violations(stop_early: bool = False) -> list[str]:
    """Run the depletion case with adaptive steps; one line per step outside the bounds."""
    cfg = parse_config(DEPLETION)
    sim = Simulation(cfg, COMM, polycrystal=build_polycrystal(spec_from_config(cfg), COMM, cache_dir=MESH_CACHE))
    sim.start()
    bad, worst = [], (float("inf"), float("inf"), -float("inf"))
    while not sim.finished:
        info = sim.step()
        assert info is not None, f"stopped at t = {sim.t:.3e} s: {sim.reason}"
        c, eta = sim.problem.physical_values("c"), sim.problem.physical_values("eta")
        c_min, eta_min, eta_max = gmin(c), gmin(eta), gmax(eta)
        worst = (min(worst[0], c_min), min(worst[1], eta_min), max(worst[2], eta_max))
        if c_min < C_FLOOR or not ETA_RANGE[0] <= eta_min <= eta_max <= ETA_RANGE[1]:
            bad.append(f"t = {sim.t:.3e} s: c_min {c_min:.3e}, eta [{eta_min:.3e}, {eta_max:.4f}]")
            if stop_early:
                break
    if COMM.rank == 0:
        print(f"\nworst: c_min {worst[0]:.3e}, eta [{worst[1]:.3e}, {worst[2]:.4f}] to t = {sim.t:.3e} s")
    return bad


def test_depletion_keeps_c_positive_on_tetrahedra():
    assert bound_violations() == []


def test_a_sink_not_monotone_in_c_breaks_the_bound(monkeypatch):
    def unlimited(eta, c, phi, p):  # the cathodic branch no longer vanishes at c = 0
        return bv(eta, 1.0, phi, p)

    bv = forms.butler_volmer
    monkeypatch.setattr(forms, "butler_volmer", unlimited)
    assert bound_violations(stop_early=True), "the planted sink kept c >= -1e-3: the check cannot fail"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q", "-s"])
