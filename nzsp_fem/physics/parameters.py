"""Physical constants and the quantities derived from the model's parameters.

Each function takes the SI values it needs, never the Config: ``physics/scaling.Scaling``,
built once from the Config, is the one place that reads the Config's sections and passes
them here (and ``Scaling.derived_quantities`` is what ``nzsp-fem --check`` prints).
"""

from __future__ import annotations

import math

from ..config import ConfigError
from .materials import PhaseValues

FARADAY = 96485.33212  # C/mol
GAS_CONSTANT = 8.314462618  # J/(mol K)

PHASES = ("metal", "grain", "grain_boundary")


def thermal_voltage(temperature: float) -> float:
    """RT/F (V): the potential scale of Butler-Volmer and Nernst-Planck."""
    return GAS_CONSTANT * temperature / FARADAY


def interface_width(gradient_coefficient: float, barrier_height: float) -> float:
    """sqrt(2 kappa0 / W): the length of the tanh profile of the 1D equilibrium."""
    return math.sqrt(2 * gradient_coefficient / barrier_height)


def nernst_einstein_diffusivity(conductivity: float, temperature: float, electrons: int, c0: float) -> float:
    """D = sigma R T / (n^2 F^2 c0) for a single mobile ion species."""
    n = electrons
    return conductivity * GAS_CONSTANT * temperature / (n * n * FARADAY**2 * c0)


def capped_metal_conductivity(
    conductivity: float, electrolyte_conductivity: float, contrast_cap: float | None
) -> float:
    """A metal conductivity as the solver uses it (SI): capped at contrast_cap x the best
    electrolyte's (``electrolyte_conductivity``, the larger of grain and GB).

    With Table 1's contrast of 1e8 the charge rows inside the metal are 1e8 times the
    others, so Newton's line search only sees them and stagnates; at 1e4 the metal is
    still equipotential to 1e-4 of the electrolyte's potential drop.
    """
    if contrast_cap is None:
        return conductivity
    return min(conductivity, contrast_cap * electrolyte_conductivity)


def ionic_conductivities(
    conductivities: PhaseValues, capped_metal: float, two_potentials: bool, metal_floor: float
) -> PhaseValues:
    """The conductivity of each phase in the charge equation of the ions (SI), from the
    configured ones.

    With two potentials the metal conducts no Na+, but a floor (``metal_floor`` x the
    grain's) keeps phi_i defined there (no reaction reads it, h'(eta) = 0); with the
    paper's single potential the metal's (capped) conductivity carries the current."""
    metal = metal_floor * conductivities.grain if two_potentials else capped_metal
    return PhaseValues(metal, conductivities.grain, conductivities.grain_boundary)


def diffusivities(
    transport: str,
    two_potentials: bool,
    conductivities: PhaseValues,
    ionic: PhaseValues,
    given: tuple[float | None, float | None, float | None],
    temperature: float,
    electrons: int,
    c0: float,
) -> PhaseValues:
    """D of each phase (SI) after the transport option, from the configured conductivities,
    the ionic ones (:func:`ionic_conductivities`) and the configured diffusivities
    (``given``: metal, grain, GB; None where not set).

    Single-ion transport: Nernst-Einstein of the phase's conductivity in the charge equation
    (the solver mixes D exactly as that conductivity, so this is each phase's pure value),
    except the metal's with one potential."""

    def nernst_einstein(sigma: float) -> float:
        return nernst_einstein_diffusivity(sigma, temperature, electrons, c0)

    values: dict[str, float] = {}
    for phase, own in zip(PHASES, given):
        # With one potential the metal's conductivity is electronic: its Na+ D stays its own
        # (Nernst-Einstein of 2500 S/m would be a Boltzmann factor of e^17 across the metal).
        metal_own = phase == "metal" and not two_potentials
        if transport == "single-ion" and not metal_own:
            values[phase] = nernst_einstein(getattr(ionic, phase))
        elif transport == "nernst-einstein" and phase != "metal":
            values[phase] = nernst_einstein(getattr(conductivities, phase))
        elif own is not None:
            values[phase] = own
        elif phase == "grain_boundary":
            values[phase] = values["grain"]
        else:
            raise ConfigError(f"materials.{phase}.diffusivity: missing")
    return PhaseValues(**values)


def hardening(E: float, given: float | None) -> float:
    """Linear isotropic hardening modulus H; E/100 of the phase unless given."""
    return given if given is not None else E / 100.0


def time_scale(configured: float | None, reaction_rate: float) -> float:
    """t0: the configured one, else 1/L_eta (the Butler-Volmer reaction time)."""
    if configured is not None:
        return configured
    return 1.0 / reaction_rate if reaction_rate > 0 else 1.0
