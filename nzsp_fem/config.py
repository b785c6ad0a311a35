"""The run configuration: YAML -> validated pydantic models with SI floats.

Defaults are the parameters of shared/MODEL.md (Table 1 of Gao et al. 2024 plus our
documented choices, see docs/model.md).
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .units import (
    Angle,
    Concentration,
    Conductivity,
    CurrentDensity,
    Diffusivity,
    Dimensionless,
    EnergyDensity,
    EnergyPerLength,
    Length,
    Mobility,
    Potential,
    Pressure,
    Rate,
    Temperature,
    Time,
    to_si,
)

FARADAY = 96485.33212  # C/mol
GAS_CONSTANT = 8.314462618  # J/(mol K)


_SUBPATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


class ConfigError(Exception):
    """A config problem, reported to the user on one line as 'key.path: message'."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class Scales(Strict):
    length: Length = 1e-6
    time: Time | None = None  # default 1/L_eta, the Butler-Volmer reaction time


class Domain(Strict):
    dim: Literal[2, 3] = 2
    size: list[Length] = Field(default_factory=lambda: [2e-6, 1e-6])

    @field_validator("size")
    @classmethod
    def _positive(cls, v):
        if any(x <= 0 for x in v):
            raise ValueError("every side must be positive")
        return v

    @model_validator(mode="after")
    def _dim_matches(self):
        if len(self.size) != self.dim:
            raise ValueError(f"size: has {len(self.size)} entries but dim is {self.dim}")
        return self


class Microstructure(Strict):
    grains: int = Field(6, ge=1, le=10000)
    seeds: list[list[Length]] | None = None
    rng_seed: int = 1
    gb_width: Length = Field(30e-9, gt=0)
    gb_representation: Literal["tagged", "smooth"] = "tagged"


class MeshSizes(Strict):
    size_grain: Length = Field(100e-9, gt=0)
    size_gb: Length = Field(15e-9, gt=0)
    size_nucleus: Length = Field(15e-9, gt=0)
    cache_dir: str = "meshes"


class Nuclei(Strict):
    radius: Length = Field(50e-9, gt=0)
    positions: Literal["grain_centres"] | list[list[Length]] = "grain_centres"
    electrode_layer: Length = Field(0.0, ge=0)


class Phase(Strict):
    E: Pressure = Field(gt=0)
    conductivity: Conductivity = Field(gt=0)
    diffusivity: Diffusivity | None = None
    yield_stress: Pressure | None = None
    hardening: Pressure | None = None  # default E/100


class Materials(Strict):
    mixing: Literal["paper", "metal-first"] = "paper"
    transport: Literal["independent", "nernst-einstein"] = "independent"
    nu: Dimensionless = Field(0.3, gt=-1, lt=0.5)
    metal: Phase = Field(default_factory=lambda: Phase(
        E=5e9, conductivity=1e7, diffusivity=1.5e-16, yield_stress=0.5e6))
    grain: Phase = Field(default_factory=lambda: Phase(
        E=50e9, conductivity=0.1, diffusivity=1.5e-14, yield_stress=50e6))
    grain_boundary: Phase = Field(default_factory=lambda: Phase(E=50e9, conductivity=0.25))

    @model_validator(mode="after")
    def _complete(self):
        for name in ("metal", "grain"):
            phase = getattr(self, name)
            if phase.yield_stress is None or phase.yield_stress <= 0:
                raise ValueError(f"{name}.yield_stress: expected a positive pressure")
            # Nernst-Einstein gives D of the electrolyte phases only; the metal always needs its own.
            needs_d = self.transport == "independent" or name == "metal"
            if needs_d and (phase.diffusivity is None or phase.diffusivity <= 0):
                raise ValueError(f"{name}.diffusivity: expected a positive diffusivity")
        if self.grain_boundary.yield_stress is not None:
            raise ValueError("grain_boundary.yield_stress: yield depends on eta only (MODEL.md); remove it")
        return self


class Anisotropy(Strict):
    strength: Dimensionless = Field(0.05, ge=0, lt=1)
    mode: int = Field(4, ge=0)
    angle: Angle = 0.0


class PhaseField(Strict):
    barrier_height: EnergyDensity = Field(3.6e6, gt=0)
    gradient_coefficient: EnergyPerLength = Field(1.8e-10, gt=0)
    mobility: Mobility = Field(1e-8, gt=0)
    reaction_rate: Rate = Field(0.6, ge=0)
    reaction_ramp_time: Time = Field(1e-4, ge=0)
    charge_transfer_coefficient: Dimensionless = Field(0.5, gt=0, lt=1)
    electrons: int = Field(1, ge=1)
    anisotropy: Anisotropy = Field(default_factory=Anisotropy)


class Electrode(Strict):
    mode: Literal["potentiostatic", "galvanostatic"] = "potentiostatic"
    potential: Potential = -0.45
    current_density: CurrentDensity | None = None

    @model_validator(mode="after")
    def _mode_value(self):
        if self.mode == "galvanostatic" and self.current_density is None:
            raise ValueError("current_density: required in galvanostatic mode (A/m^2; positive plates Na)")
        return self


class Electrochemistry(Strict):
    c0: Concentration = Field(1e4, gt=0)
    c_metal: Concentration = Field(9.71e4, gt=0)
    temperature: Temperature = Field(298.15, gt=0)
    equilibrium_potential: Potential = 0.0
    electrode: Electrode = Field(default_factory=Electrode)
    # c = 1 on the right edge (bulk electrolyte reservoir, the paper's BC); false makes
    # that edge no-flux for Na+, so total Na is conserved (a verification setting).
    reservoir: bool = True


class Mechanics(Strict):
    enabled: bool = True
    plasticity: bool = True
    volume_expansion: Dimensionless = Field(0.05, ge=0, lt=1)
    stack_pressure: Pressure = Field(0.0, ge=0)
    displacement_degree: Literal[1, 2] = 1


class TimeStepping(Strict):
    t_end: Time = Field(0.05, gt=0)
    dt_initial: Time = Field(1e-7, gt=0)
    dt_min: Time = Field(1e-13, gt=0)
    dt_max: Time = Field(1e-3, gt=0)
    growth_factor: float = Field(1.5, gt=1)
    cut_factor: float = Field(0.5, gt=0, lt=1)
    easy_iterations: int = Field(5, ge=1)
    output_times: list[Time] | None = None
    n_outputs: int = Field(10, ge=1)
    max_steps: int = Field(10**7, ge=1)
    # A short-circuited cell is dead: stop there (status completed, short_circuit true).
    stop_at_short_circuit: bool = True

    @model_validator(mode="after")
    def _order(self):
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min: {self.dt_min:g} s exceeds dt_max = {self.dt_max:g} s")
        if not self.dt_min <= self.dt_initial <= self.dt_max:
            raise ValueError(f"dt_initial: {self.dt_initial:g} s is not in [dt_min, dt_max] = "
                             f"[{self.dt_min:g}, {self.dt_max:g}] s")
        if self.output_times is not None and any(t <= 0 or t > self.t_end for t in self.output_times):
            raise ValueError(f"output_times: must lie in (0, t_end] = (0, {self.t_end:g}] s")
        return self


class Solver(Strict):
    preset: Literal["direct", "iterative"] = "direct"
    bounds: bool = False
    # c itself by default: exact Na balance and no stall (docs/model.md item 2); ln c
    # keeps c > 0 but has no solution once a step's Na demand exceeds the local supply.
    log_concentration: bool = False
    rtol: float = Field(1e-6, gt=0)
    atol: float = Field(1e-6, gt=0)
    stol: float = Field(1e-10, ge=0)
    max_it: int = Field(25, ge=1)
    quadrature_degree: int = Field(2, ge=1, le=8)
    # The metal is ~equipotential once it conducts 1e4x better than the electrolyte;
    # Table 1's 1e8 contrast swamps Newton's merit function (see docs/model.md). null = off.
    metal_conductivity_contrast_cap: float | None = Field(1e4, gt=1)
    petsc_options: dict[str, Any] = Field(default_factory=dict)


class Probe(Strict):
    name: str
    position: list[Length]


class Output(Strict):
    directory: str | None = None
    probes: list[Probe] = Field(default_factory=list)
    checkpoint_every_steps: int = Field(100, ge=0)
    checkpoint_every_minutes: float = Field(30.0, ge=0)
    figures: bool = True
    figures_at_output_times: bool = False
    verbosity: int = Field(1, ge=0, le=3)


class Study(Strict):
    parameter: str
    values: list[Any] = Field(min_length=1)
    # Ranks per case; by default all ranks work on each case unless ranks outnumber cases.
    ranks_per_case: int | None = Field(None, ge=1)


class Config(Strict):
    name: str = "run"
    scales: Scales = Field(default_factory=Scales)
    domain: Domain = Field(default_factory=Domain)
    microstructure: Microstructure = Field(default_factory=Microstructure)
    mesh: MeshSizes = Field(default_factory=MeshSizes)
    nuclei: Nuclei = Field(default_factory=Nuclei)
    materials: Materials = Field(default_factory=Materials)
    phase_field: PhaseField = Field(default_factory=PhaseField)
    electrochemistry: Electrochemistry = Field(default_factory=Electrochemistry)
    mechanics: Mechanics = Field(default_factory=Mechanics)
    time: TimeStepping = Field(default_factory=TimeStepping)
    solver: Solver = Field(default_factory=Solver)
    output: Output = Field(default_factory=Output)
    study: Study | None = None

    @model_validator(mode="after")
    def _cross_checks(self):
        d = self.domain.dim
        for i, seed in enumerate(self.microstructure.seeds or []):
            if len(seed) != d:
                raise ValueError(f"microstructure.seeds[{i}]: expected {d} coordinates")
        if isinstance(self.nuclei.positions, list):
            for i, p in enumerate(self.nuclei.positions):
                if len(p) != d:
                    raise ValueError(f"nuclei.positions[{i}]: expected {d} coordinates")
        for i, probe in enumerate(self.output.probes):
            if len(probe.position) != d:
                raise ValueError(f"output.probes[{i}].position: expected {d} coordinates")
            if any(x < 0 or x > L for x, L in zip(probe.position, self.domain.size)):
                raise ValueError(f"output.probes[{i}].position: outside the domain")
        if self.study is not None:
            check_parameter_path(self, self.study.parameter)
        return self

    # Derived quantities -------------------------------------------------------------
    def thermal_voltage(self) -> float:
        return GAS_CONSTANT * self.electrochemistry.temperature / FARADAY

    def interface_width(self) -> float:
        """sqrt(2 kappa0 / W): the length of the tanh profile of the 1D equilibrium."""
        pf = self.phase_field
        return math.sqrt(2 * pf.gradient_coefficient / pf.barrier_height)

    def diffusivity(self, phase: str) -> float:
        """D of 'metal', 'grain' or 'grain_boundary', after the transport option."""
        m = self.materials
        ph = getattr(m, phase)
        if m.transport == "nernst-einstein" and phase != "metal":
            return nernst_einstein_diffusivity(ph.conductivity, self)
        if ph.diffusivity is not None:
            return ph.diffusivity
        if phase == "grain_boundary":
            return self.diffusivity("grain")
        raise ConfigError(f"materials.{phase}.diffusivity: missing")

    def hardening(self, phase: str) -> float:
        ph = getattr(self.materials, phase)
        return ph.hardening if ph.hardening is not None else ph.E / 100.0

    def time_scale(self) -> float:
        if self.scales.time is not None:
            return self.scales.time
        rate = self.phase_field.reaction_rate
        return 1.0 / rate if rate > 0 else 1.0

    def derived(self) -> dict[str, float]:
        return {
            "interface_width_m": self.interface_width(),
            "thermal_voltage_V": self.thermal_voltage(),
            "D_metal_m2_s": self.diffusivity("metal"),
            "D_grain_m2_s": self.diffusivity("grain"),
            "D_grain_boundary_m2_s": self.diffusivity("grain_boundary"),
            "H_metal_Pa": self.hardening("metal"),
            "H_grain_Pa": self.hardening("grain"),
            "time_scale_s": self.time_scale(),
            "nernst_einstein_D_grain_m2_s": nernst_einstein_diffusivity(self.materials.grain.conductivity, self),
        }


def nernst_einstein_diffusivity(conductivity: float, cfg: Config) -> float:
    """D = sigma R T / (n^2 F^2 c0) for a single mobile ion species."""
    n = cfg.phase_field.electrons
    return conductivity * GAS_CONSTANT * cfg.electrochemistry.temperature / (
        n * n * FARADAY**2 * cfg.electrochemistry.c0)


# Loading ---------------------------------------------------------------------------------

def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    if (first["type"] not in ("extra_forbidden", "missing") and "got" not in msg
            and not isinstance(first.get("input"), (dict, list))):
        msg = f"{msg}, got {first['input']!r}"
    # Model validators name their own sub-path ("grain.yield_stress: ..."): join it on.
    if path and _SUBPATH.match(msg):
        return f"{path}.{msg}"
    return f"{path}: {msg}" if path else msg

def _merged(defaults: Any, given: Any) -> Any:
    """Sections given by the user are laid over the defaults; values and lists replace."""
    if isinstance(defaults, dict) and isinstance(given, dict):
        out = dict(defaults)
        for key, value in given.items():
            out[key] = _merged(defaults.get(key), value) if key in defaults else value
        return out
    return given


def parse_config(data: dict) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of sections at the top level")
    try:
        return Config.model_validate(_merged(Config().model_dump(), data))
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path[:i + 1])}: is not a section, cannot set {'.'.join(path)}")
        node = child
    node[path[-1]] = value


def _read_yaml(path: Path, chain: tuple = ()) -> dict:
    """A config file as a dict; ``extends: other.yaml`` (relative to it) is merged beneath."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from None
    if data is None:
        raise ConfigError(f"{path}: empty config file (write '{{}}' to run with all defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"extends: expected a file name, got {base!r}")
        base_path = (path.parent / base).resolve()
        if base_path in chain:
            raise ConfigError(f"extends: {base} includes itself")
        data = _merged(_read_yaml(base_path, chain + (base_path,)), data)
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    data = _read_yaml(path, (path.resolve(),))
    data["name"] = data.get("name") or path.stem
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value)
    return parse_config(data)


def check_parameter_path(cfg: Config, dotted: str) -> None:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ValueError(f"study.parameter: {dotted!r} is not a config key")
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        raise ValueError(f"study.parameter: {dotted!r} is a section, not a value")


def with_value(cfg: Config, dotted: str, value: Any) -> Config:
    """A copy of ``cfg`` with one key changed, revalidated (studies use it)."""
    data = cfg.model_dump()
    data["study"] = None
    apply_override(data, dotted.split("."), copy.deepcopy(value))
    return parse_config(data)


__all__ = ["Config", "ConfigError", "load_config", "parse_config", "with_value", "to_si",
           "FARADAY", "GAS_CONSTANT", "nernst_einstein_diffusivity"]
