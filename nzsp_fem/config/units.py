"""Physical quantities in the config: SI numbers or unit strings, parsed by pint to SI floats."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Annotated

import pint
from pydantic import BeforeValidator, PlainSerializer

# Why a name per dimensionality: error messages read "expected a pressure", not "[mass] / ...".
DIMENSION_NAMES = {
    "length": "m",
    "time": "s",
    "pressure": "Pa",
    "conductivity": "S/m",
    "diffusivity": "m^2/s",
    "concentration": "mol/m^3",
    "energy density": "J/m^3",
    "energy per length": "J/m",
    "mobility": "m^3/(J*s)",
    "rate": "1/s",
    "potential": "V",
    "current density": "A/m^2",
    "charge": "C",
    "charge per length": "C/m",
    "energy per area": "J/m^2",
    "molar volume": "m^3/mol",
    "nucleation rate": "1/(m^3*s)",
    "temperature": "K",
    "angle": "rad",
    "dimensionless": "",
}


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    return pint.UnitRegistry(autoconvert_offset_to_baseunit=False)


def to_si(value, dimension: str) -> float:
    """Parse ``value`` (number = SI already, or a string with units) into an SI float.

    Raises ValueError with the message pydantic shows after the key path.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a {dimension}, got {value!r}")
    if isinstance(value, (int, float)):
        return _finite(float(value), dimension, value)
    if not isinstance(value, str):
        raise ValueError(f"expected a {dimension} (number or string with units), got {value!r}")
    try:  # YAML 1.1 reads 1e-3 (no dot) as a string: a bare number is SI all the same
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        return _finite(number, dimension, value)
    ureg = registry()
    try:
        quantity = ureg.Quantity(value.strip())
    except Exception:  # pint raises many types for unparsable text
        raise ValueError(f"expected a {dimension}, got {value!r} (not a quantity pint can read)") from None
    reference = ureg.Quantity(1.0, DIMENSION_NAMES[dimension]) if DIMENSION_NAMES[dimension] else ureg.Quantity(1.0)
    if quantity.dimensionality != reference.dimensionality:
        raise ValueError(f"expected a {dimension}, got {value!r}")
    magnitude = quantity.to(reference.units).magnitude if DIMENSION_NAMES[dimension] else quantity.to("").magnitude
    return _finite(float(magnitude), dimension, value)


def _finite(x: float, dimension: str, given) -> float:
    if not math.isfinite(x):
        raise ValueError(f"expected a finite {dimension}, got {given!r}")
    return x


def quantity(dimension: str):
    """Annotated float type accepting '50 GPa' or 5e10 for a field of the given dimension."""
    if dimension not in DIMENSION_NAMES:
        raise KeyError(dimension)
    return Annotated[float, BeforeValidator(lambda v: to_si(v, dimension)), PlainSerializer(float)]


Length = quantity("length")
Time = quantity("time")
Pressure = quantity("pressure")
Conductivity = quantity("conductivity")
Diffusivity = quantity("diffusivity")
Concentration = quantity("concentration")
EnergyDensity = quantity("energy density")
EnergyPerLength = quantity("energy per length")
Mobility = quantity("mobility")
Rate = quantity("rate")
Potential = quantity("potential")
CurrentDensity = quantity("current density")
Temperature = quantity("temperature")
Angle = quantity("angle")
Dimensionless = quantity("dimensionless")
EnergyPerArea = quantity("energy per area")
MolarVolume = quantity("molar volume")
NucleationRate = quantity("nucleation rate")
