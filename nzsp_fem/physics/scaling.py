"""Reference scales and the dimensionless groups the solver works with.

SI values span 17 decades (sigma 1e7 vs 0.1 S/m, E 5e10 Pa, D 1e-16 m^2/s). The solver
uses x/l0, t/t0, phi/(RT/F), stresses/E_grain, energies/W, c/c0, conductivities/sigma_grain,
so every residual block is O(1) per unit scaled volume.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from .materials import PhaseValues
from .parameters import (
    FARADAY,
    GAS_CONSTANT,
    PHASES,
    capped_metal_conductivity,
    diffusivity,
    ionic_conductivity,
    thermal_voltage,
    time_scale,
)


@dataclass
class Scaling:
    cfg: Config

    def __post_init__(self):
        cfg = self.cfg
        self.length = cfg.scales.length
        self.time = time_scale(cfg)
        self.potential = thermal_voltage(cfg)
        self.stress = cfg.materials.grain.E
        self.energy_density = cfg.phase_field.barrier_height
        self.conductivity = cfg.materials.grain.conductivity
        # current density scale: sigma_SE (RT/F) / l0
        self.current_density = self.conductivity * self.potential / self.length

    # Dimensionless groups -----------------------------------------------------------
    def groups(self) -> dict[str, float]:
        cfg, pf = self.cfg, self.cfg.phase_field
        return {
            "allen_cahn_mobility  L W t0": self.allen_cahn_mobility(),
            "gradient  kappa0/(W l0^2)": self.gradient_coefficient(),
            "reaction  L_eta t0": pf.reaction_rate * self.time,
            "stress/energy  E_grain/W": self.stress / self.energy_density,
            "diffusion grain  D t0/l0^2": self.diffusivity().grain,
            "diffusion metal  D t0/l0^2": self.diffusivity().metal,
            "diffusion GB  D t0/l0^2": self.diffusivity().grain_boundary,
            "deposition charge  n F c_m l0^2/(sigma V_T t0)": self.charge_source(),
            "site ratio  c_m/c0": cfg.electrochemistry.c_metal / cfg.electrochemistry.c0,
            "conductivity contrast  sigma_metal/sigma_grain (solver)": self.metal_conductivity() / self.conductivity,
            "applied potential  phi_app/V_T": cfg.electrochemistry.electrode.potential / self.potential,
        }

    def allen_cahn_mobility(self) -> float:
        """L W t0: the Allen-Cahn mobility, scaled."""
        pf = self.cfg.phase_field
        return pf.mobility * pf.barrier_height * self.time

    def gradient_coefficient(self) -> float:
        """kappa0 / (W l0^2): the gradient-energy coefficient, scaled."""
        pf = self.cfg.phase_field
        return pf.gradient_coefficient / (pf.barrier_height * self.length**2)

    def diffusivity(self) -> PhaseValues:
        f = self.time / self.length**2
        cfg = self.cfg
        return PhaseValues(
            diffusivity(cfg, "metal") * f, diffusivity(cfg, "grain") * f, diffusivity(cfg, "grain_boundary") * f
        )

    def metal_conductivity(self) -> float:
        """sigma_metal as the solver uses it (SI), capped (parameters.capped_metal_conductivity)."""
        return capped_metal_conductivity(self.cfg, self.cfg.materials.metal.conductivity)

    def conductivities(self) -> PhaseValues:
        m = self.cfg.materials
        return PhaseValues(
            self.metal_conductivity() / self.conductivity,
            m.grain.conductivity / self.conductivity,
            m.grain_boundary.conductivity / self.conductivity,
        )

    def ionic_conductivities(self) -> PhaseValues:
        """Na+ conductivities of the two-potential model (scaled): none in the metal but a
        floor that keeps phi_i defined there (parameters.ionic_conductivity)."""
        return PhaseValues(*(ionic_conductivity(self.cfg, phase) / self.conductivity for phase in PHASES))

    def electronic_conductivities(self) -> PhaseValues:
        """Electronic conductivities of the two-potential model (scaled); the metal's is
        capped like metal_conductivity (the same Newton merit-function argument)."""
        m = self.cfg.materials
        return PhaseValues(
            capped_metal_conductivity(self.cfg, m.metal.electronic_conductivity) / self.conductivity,
            m.grain.electronic_conductivity / self.conductivity,
            m.grain_boundary.electronic_conductivity / self.conductivity,
        )

    def coupling(self) -> float:
        """W/(c_m R T): the phase-field energy density per mole of Na, in units of RT
        (how the bounded kinetics put the phase-field driving force into Butler-Volmer)."""
        cfg = self.cfg
        return self.energy_density / (cfg.electrochemistry.c_metal * GAS_CONSTANT * cfg.electrochemistry.temperature)

    def moduli(self) -> PhaseValues:
        m = self.cfg.materials
        return PhaseValues(m.metal.E / self.stress, m.grain.E / self.stress, m.grain_boundary.E / self.stress)

    def charge_source(self) -> float:
        cfg = self.cfg
        return (
            cfg.phase_field.electrons
            * FARADAY
            * cfg.electrochemistry.c_metal
            * self.length**2
            / (self.conductivity * self.potential * self.time)
        )
