"""Single-ion transport (the default, docs/model.md "Transport"): D follows, pointwise, from
the ionic conductivity of the charge equation, so c = c0 solves Nernst-Planck exactly and
the electrolyte cannot deplete, whatever the GB contrast.

A polycrystal whose GBs conduct 100x better than its grains plates Na from an electrode
layer under -0.45 V (GBs meet the layer, so the current focuses into them): max |c/c0 - 1|
stays below 1e-3 at every node and every step. The same run with a planted 5 % D/sigma
mismatch, or with Table 1's independent D, must break that bound: the check is able to
fail, and it fails for the reason it exists.
"""

from __future__ import annotations

from dataclasses import astuple, replace
from pathlib import Path

import numpy as np
import pytest
from support import FixedSteps, gmax, merge

from mpi4py import MPI

from nzsp_fem import Simulation
from nzsp_fem.config import parse_config
from nzsp_fem.mesh import build_polycrystal, spec_from_config
from nzsp_fem.physics.materials import PhaseValues
from nzsp_fem.physics.scaling import Scaling

COMM = MPI.COMM_WORLD
MESH_CACHE = str(Path(__file__).resolve().parents[1] / "meshes")
BASE = {
    "domain": {"dim": 2, "size": ["0.8 um", "0.6 um"]},
    "microstructure": {
        "grains": 3,
        "seeds": [["0.25 um", "0.15 um"], ["0.25 um", "0.45 um"], ["0.6 um", "0.3 um"]],
        "gb_width": "30 nm",
    },
    "mesh": {"size_grain": "50 nm", "size_gb": "15 nm", "size_nucleus": "15 nm", "cache_dir": MESH_CACHE},
    "nuclei": {"positions": [[0, "0.3 um"]], "radius": "60 nm", "electrode_layer": "40 nm"},
    "materials": {"grain_boundary": {"conductivity": "10 S/m"}},  # 100x the grains' 0.1 S/m
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m", "reaction_ramp_time": 0.0},
    "electrochemistry": {"electrode": {"mode": "potentiostatic", "potential": "-0.45 V"}},
    "mechanics": {"enabled": False},
}
STEPS, DT = 8, 2e-4  # s: the metal fraction grows by ~10 % of the initial deposit


class Plating(FixedSteps):
    def __init__(self, over: dict):
        cfg = parse_config(merge(BASE, over))
        self.sim = Simulation(
            cfg, COMM, polycrystal=build_polycrystal(spec_from_config(cfg), COMM, cache_dir=MESH_CACHE)
        )
        self.sim.start()

    def worst_deviation(self) -> float:
        """max |c/c0 - 1| over the steps, at every node (metal included)."""
        worst = 0.0
        for _ in range(STEPS):
            self.step(DT)
            _, c = self.owned("c")
            worst = max(worst, gmax(np.abs(c - 1.0)))
        return worst


def test_single_ion_keeps_c_uniform():
    plating = Plating({})
    eta0 = plating.pb.sub_values("eta", plating.pb.w).copy()
    deviation = plating.worst_deviation()
    grown = COMM.allreduce(float(np.sum(plating.pb.sub_values("eta")[: eta0.size] - eta0)), op=MPI.SUM)
    assert grown > 0, "nothing plated: the test would not exercise the sink"
    assert deviation <= 1e-3, deviation


@pytest.mark.parametrize("plant", ["mismatch", "metal-flux", "independent"])
def test_inconsistent_transport_breaks_the_bound(plant, monkeypatch):
    """The bound can fail: D 5 % off sigma in every phase; a flux error inside the metal
    only (the metal's D 100x its conductivity's: Na+ moves in the metal where no charge
    does, the pile-up the old demo showed); Table 1's independent D (depletion)."""
    over = {}
    diffusivity = Scaling.diffusivity
    if plant == "mismatch":
        planted = lambda self: PhaseValues(*(1.05 * d for d in astuple(diffusivity(self))))  # noqa: E731
        monkeypatch.setattr(Scaling, "diffusivity", planted)
    elif plant == "metal-flux":
        planted = lambda self: replace(diffusivity(self), metal=100 * diffusivity(self).metal)  # noqa: E731
        monkeypatch.setattr(Scaling, "diffusivity", planted)
    else:
        over = {"materials": {"transport": "independent"}}
    assert Plating(over).worst_deviation() > 1e-3
