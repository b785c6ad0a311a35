"""Reference scales and the dimensionless groups the solver works with.

SI values span 17 decades (sigma 1e7 vs 0.1 S/m, E 5e10 Pa, D 1e-16 m^2/s). The solver
uses x/l0, t/t0, phi/(RT/F), stresses/E_grain, energies/W, c/c0, conductivities/sigma_grain,
so every residual block is O(1) per unit scaled volume.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from ..config import Config
from .materials import PhaseValues
from .parameters import (
    FARADAY,
    GAS_CONSTANT,
    capped_metal_conductivity,
    diffusivities,
    hardening,
    interface_width,
    ionic_conductivities,
    nernst_einstein_diffusivity,
    thermal_voltage,
    time_scale,
)


@dataclass
class Scaling:
    """The scales, and the one place that reads the Config's parameters into the functions of
    physics/parameters.py (their SI results: ``interface_width``, ``hardening``,
    ``diffusivities_si``, ...)."""

    cfg: Config

    def __post_init__(self):
        cfg = self.cfg
        pf, ec, m = cfg.phase_field, cfg.electrochemistry, cfg.materials
        self.length = cfg.scales.length
        self.time = time_scale(cfg.scales.time, pf.reaction_rate)
        self.potential = thermal_voltage(ec.temperature)
        self.stress = cfg.materials.grain.E
        self.energy_density = cfg.phase_field.barrier_height
        self.conductivity = cfg.materials.grain.conductivity
        # current density scale: sigma_SE (RT/F) / l0
        self.current_density = self.conductivity * self.potential / self.length
        #: sqrt(2 kappa0 / W), m
        self.interface_width = interface_width(pf.gradient_coefficient, pf.barrier_height)
        self.two_potentials = ec.potentials == "two"
        self._electrolyte_conductivity = max(m.grain.conductivity, m.grain_boundary.conductivity)

    # SI quantities derived from the parameters ------------------------------------------
    def capped(self, metal_conductivity: float) -> float:
        """A metal conductivity as the solver uses it (SI): parameters.capped_metal_conductivity."""
        cap = self.cfg.solver.metal_conductivity_contrast_cap
        return capped_metal_conductivity(metal_conductivity, self._electrolyte_conductivity, cap)

    def ionic_conductivities_si(self) -> PhaseValues:
        m = self.cfg.materials
        configured = PhaseValues(m.metal.conductivity, m.grain.conductivity, m.grain_boundary.conductivity)
        floor = self.cfg.solver.metal_ionic_conductivity_floor
        return ionic_conductivities(configured, self.metal_conductivity(), self.two_potentials, floor)

    def diffusivities_si(self) -> PhaseValues:
        """D per phase (m^2/s) after the transport option (parameters.diffusivities)."""
        cfg, m = self.cfg, self.cfg.materials
        ec = cfg.electrochemistry
        configured = PhaseValues(m.metal.conductivity, m.grain.conductivity, m.grain_boundary.conductivity)
        given = (m.metal.diffusivity, m.grain.diffusivity, m.grain_boundary.diffusivity)
        return diffusivities(
            m.transport,
            self.two_potentials,
            configured,
            self.ionic_conductivities_si(),
            given,
            ec.temperature,
            cfg.phase_field.electrons,
            ec.c0,
        )

    def nernst_einstein_diffusivity(self, conductivity: float) -> float:
        """D (m^2/s) of a single mobile ion species at this conductivity (S/m)."""
        ec = self.cfg.electrochemistry
        return nernst_einstein_diffusivity(conductivity, ec.temperature, self.cfg.phase_field.electrons, ec.c0)

    def hardening(self, phase: str) -> float:
        """H (Pa) of 'metal', 'grain' or 'grain_boundary': E/100 unless given."""
        ph = getattr(self.cfg.materials, phase)
        return hardening(ph.E, ph.hardening)

    def derived_quantities(self) -> dict[str, float]:
        """What `nzsp-fem --check` prints beside the resolved config (SI)."""
        D = self.diffusivities_si()
        return {
            "interface_width_m": self.interface_width,
            "thermal_voltage_V": self.potential,
            "D_metal_m2_s": D.metal,
            "D_grain_m2_s": D.grain,
            "D_grain_boundary_m2_s": D.grain_boundary,
            "H_metal_Pa": self.hardening("metal"),
            "H_grain_Pa": self.hardening("grain"),
            "time_scale_s": self.time,
            "nernst_einstein_D_grain_m2_s": self.nernst_einstein_diffusivity(self.cfg.materials.grain.conductivity),
        }

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
        D = self.diffusivities_si()
        return PhaseValues(D.metal * f, D.grain * f, D.grain_boundary * f)

    def metal_conductivity(self) -> float:
        """sigma_metal as the solver uses it (SI), capped (parameters.capped_metal_conductivity)."""
        return self.capped(self.cfg.materials.metal.conductivity)

    def conductivities(self) -> PhaseValues:
        m = self.cfg.materials
        return PhaseValues(
            self.metal_conductivity() / self.conductivity,
            m.grain.conductivity / self.conductivity,
            m.grain_boundary.conductivity / self.conductivity,
        )

    def ionic_conductivities(self) -> PhaseValues:
        """Na+ conductivities of the two-potential model (scaled): none in the metal but a
        floor that keeps phi_i defined there (parameters.ionic_conductivities)."""
        ionic = self.ionic_conductivities_si()
        return PhaseValues(*(value / self.conductivity for value in astuple(ionic)))

    def electronic_conductivities(self) -> PhaseValues:
        """Electronic conductivities of the two-potential model (scaled); the metal's is
        capped like metal_conductivity (the same Newton merit-function argument)."""
        m = self.cfg.materials
        return PhaseValues(
            self.capped(m.metal.electronic_conductivity) / self.conductivity,
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
