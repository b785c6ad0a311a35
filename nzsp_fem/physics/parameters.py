"""Physical constants and the quantities derived from the configured parameters.

Everything here is a function of the config's SI values; the config itself holds only
what the user gave (and the defaults of docs/model.md).
"""

from __future__ import annotations

import math

from ..config import Config, ConfigError

FARADAY = 96485.33212  # C/mol
GAS_CONSTANT = 8.314462618  # J/(mol K)

PHASES = ("metal", "grain", "grain_boundary")


def thermal_voltage(cfg: Config) -> float:
    """RT/F (V): the potential scale of Butler-Volmer and Nernst-Planck."""
    return GAS_CONSTANT * cfg.electrochemistry.temperature / FARADAY


def interface_width(cfg: Config) -> float:
    """sqrt(2 kappa0 / W): the length of the tanh profile of the 1D equilibrium."""
    pf = cfg.phase_field
    return math.sqrt(2 * pf.gradient_coefficient / pf.barrier_height)


def nernst_einstein_diffusivity(conductivity: float, cfg: Config) -> float:
    """D = sigma R T / (n^2 F^2 c0) for a single mobile ion species."""
    n = cfg.phase_field.electrons
    return (
        conductivity * GAS_CONSTANT * cfg.electrochemistry.temperature / (n * n * FARADAY**2 * cfg.electrochemistry.c0)
    )


def capped_metal_conductivity(cfg: Config, conductivity: float) -> float:
    """A metal conductivity as the solver uses it (SI): capped at contrast_cap x the best
    electrolyte's.

    With Table 1's contrast of 1e8 the charge rows inside the metal are 1e8 times the
    others, so Newton's line search only sees them and stagnates; at 1e4 the metal is
    still equipotential to 1e-4 of the electrolyte's potential drop.
    """
    m, cap = cfg.materials, cfg.solver.metal_conductivity_contrast_cap
    if cap is None:
        return conductivity
    return min(conductivity, cap * max(m.grain.conductivity, m.grain_boundary.conductivity))


def ionic_conductivity(cfg: Config, phase: str) -> float:
    """The conductivity of a phase in the charge equation of the ions (SI).

    With two potentials the metal conducts no Na+, but a floor keeps phi_i defined there
    (no reaction reads it, h'(eta) = 0); with the paper's single potential the metal's
    (capped) conductivity carries the current."""
    m = cfg.materials
    if phase != "metal":
        return getattr(m, phase).conductivity
    if cfg.electrochemistry.potentials == "two":
        return cfg.solver.metal_ionic_conductivity_floor * m.grain.conductivity
    return capped_metal_conductivity(cfg, m.metal.conductivity)


def diffusivity(cfg: Config, phase: str) -> float:
    """D of 'metal', 'grain' or 'grain_boundary', after the transport option.

    Single-ion transport: Nernst-Einstein of the phase's conductivity in the charge equation
    (the solver mixes D exactly as that conductivity, so this is each phase's pure value),
    except the metal's with one potential."""
    m = cfg.materials
    ph = getattr(m, phase)
    # With one potential the metal's conductivity is electronic: its Na+ D stays its own
    # (Nernst-Einstein of 2500 S/m would be a Boltzmann factor of e^17 across the metal).
    metal_own = phase == "metal" and cfg.electrochemistry.potentials == "single"
    if m.transport == "single-ion" and not metal_own:
        return nernst_einstein_diffusivity(ionic_conductivity(cfg, phase), cfg)
    if m.transport == "nernst-einstein" and phase != "metal":
        return nernst_einstein_diffusivity(ph.conductivity, cfg)
    if ph.diffusivity is not None:
        return ph.diffusivity
    if phase == "grain_boundary":
        return diffusivity(cfg, "grain")
    raise ConfigError(f"materials.{phase}.diffusivity: missing")


def hardening(cfg: Config, phase: str) -> float:
    """Linear isotropic hardening modulus H; E/100 of the phase unless given."""
    ph = getattr(cfg.materials, phase)
    return ph.hardening if ph.hardening is not None else ph.E / 100.0


def time_scale(cfg: Config) -> float:
    """t0: the configured one, else 1/L_eta (the Butler-Volmer reaction time)."""
    if cfg.scales.time is not None:
        return cfg.scales.time
    rate = cfg.phase_field.reaction_rate
    return 1.0 / rate if rate > 0 else 1.0


def derived_quantities(cfg: Config) -> dict[str, float]:
    """What `nzsp-fem --check` prints beside the resolved config (SI)."""
    return {
        "interface_width_m": interface_width(cfg),
        "thermal_voltage_V": thermal_voltage(cfg),
        "D_metal_m2_s": diffusivity(cfg, "metal"),
        "D_grain_m2_s": diffusivity(cfg, "grain"),
        "D_grain_boundary_m2_s": diffusivity(cfg, "grain_boundary"),
        "H_metal_Pa": hardening(cfg, "metal"),
        "H_grain_Pa": hardening(cfg, "grain"),
        "time_scale_s": time_scale(cfg),
        "nernst_einstein_D_grain_m2_s": nernst_einstein_diffusivity(cfg.materials.grain.conductivity, cfg),
    }
