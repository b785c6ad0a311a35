"""Classical nucleation theory in the local electronic overpotential (docs/model.md,
"Discrete nucleation"): the barrier, the rate density and the electron-supply criterion.

Pure numpy on SI arrays: the problem layer evaluates it per cell and the tests against
the free-energy curves it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import Config
from .parameters import FARADAY

AVOGADRO = 6.02214076e23  # 1/mol
BOLTZMANN = 1.380649e-23  # J/K


def atomic_layer(molar_volume: float) -> float:
    """(V_m/N_A)^(1/3): the height of one atomic layer (m), the default 2D nucleus thickness."""
    return (molar_volume / AVOGADRO) ** (1.0 / 3.0)


def critical_barrier(overpotential, gamma: float, molar_volume: float, electrons: int, dim: int, layer: float):
    """dG* (J) of a nucleus at the local overpotential eta_loc (V); inf where eta_loc >= 0.

    The driving force per volume is dg = n F |eta_loc| / V_m (cathodic only).
    3D, a sphere: dG(r) = -4/3 pi r^3 dg + 4 pi r^2 gamma, so dG* = 16 pi gamma^3 / (3 dg^2).
    2D, a disc of thickness h with line energy lambda = gamma h:
    dG(r) = -pi r^2 h dg + 2 pi r lambda, so dG* = pi lambda^2 / (h dg) = pi gamma^2 h / dg
    (Budevski, Staikov & Lorenz's 2D nucleus, b eps^2 / (z e |eta|) with b = pi s_m).
    """
    eta = np.asarray(overpotential, dtype=float)
    drive = electrons * FARADAY * np.maximum(-eta, 0.0) / molar_volume
    with np.errstate(divide="ignore"):
        if dim == 3:
            barrier = 16.0 * math.pi * gamma**3 / (3.0 * drive**2)
        else:
            barrier = math.pi * gamma**2 * layer / drive
    return np.where(drive > 0, barrier, np.inf)


def supply_time(overpotential, electronic_conductivity, radius: float, c_metal: float, electrons: int, dim: int):
    """How long the electrolyte's electronic conduction needs to bring a nucleus its electrons (s).

    The charge n F c_m |nucleus| flows in through the conductance around it, driven by
    |eta_loc|: 3D, a sphere in an unbounded medium (G = 4 pi sigma_e R), t = n F c_m R^2 /
    (3 sigma_e |eta|); 2D, a disc (per unit depth G = 2 pi sigma_e / ln(rho/R), taken as
    sigma_e, i.e. rho ~ 500 R), t = n F c_m pi R^2 / (sigma_e |eta|). inf without electrons.
    """
    current = np.asarray(electronic_conductivity, dtype=float) * np.abs(np.asarray(overpotential, dtype=float))
    charge = electrons * FARADAY * c_metal * (radius**2 / 3.0 if dim == 3 else math.pi * radius**2)
    with np.errstate(divide="ignore"):
        return np.where(current > 0, charge / current, np.inf)


@dataclass(frozen=True)
class NucleationLaw:
    """J(eta_loc, sigma_e) per unit volume (3D, 1/(m^3 s)) or per unit area of the section
    (2D, 1/(m^2 s): J0 h exp(-dG*/kT) for the disc of thickness h)."""

    prefactor: float
    gamma: float
    molar_volume: float
    layer: float
    radius: float
    hold_time: float
    c_metal: float
    electrons: int
    temperature: float
    dim: int

    @classmethod
    def from_config(cls, cfg: Config) -> NucleationLaw:
        nu = cfg.nucleation
        layer = nu.layer_thickness if nu.layer_thickness is not None else atomic_layer(nu.molar_volume)
        return cls(
            prefactor=nu.rate_prefactor,
            gamma=nu.interface_energy,
            molar_volume=nu.molar_volume,
            layer=layer,
            radius=nu.radius,
            hold_time=nu.hold_time,
            c_metal=cfg.electrochemistry.c_metal,
            electrons=cfg.phase_field.electrons,
            temperature=cfg.electrochemistry.temperature,
            dim=cfg.domain.dim,
        )

    def barrier(self, overpotential):
        return critical_barrier(overpotential, self.gamma, self.molar_volume, self.electrons, self.dim, self.layer)

    def rate(self, overpotential, electronic_conductivity):
        """J where the electrolyte can supply a nucleus within the hold time, else 0.

        No electrons, no nucleus: where the electronic conduction cannot form the nucleus
        within the hold time (e.g. where phi_e is only the anchor's local-equilibrium value,
        sigma_e = 0) the rate is zero, whatever eta_loc the anchor leaves.
        """
        kT = BOLTZMANN * self.temperature
        prefactor = self.prefactor * (self.layer if self.dim == 2 else 1.0)
        rate = prefactor * np.exp(-self.barrier(overpotential) / kT)
        supplied = (
            supply_time(overpotential, electronic_conductivity, self.radius, self.c_metal, self.electrons, self.dim)
            <= self.hold_time
        )
        return np.where(supplied, rate, 0.0)
