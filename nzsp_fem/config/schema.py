"""The run configuration as validated pydantic models holding SI floats.

Defaults are the parameters of docs/model.md (Table 1 of Gao et al. 2024 plus our
documented choices). Quantities derived from them (thermal voltage, Nernst-Einstein D,
default hardening, interface width) are physics: nzsp_fem.physics.parameters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .base import Strict
from .protocol import Protocol
from .units import (
    Angle,
    Concentration,
    Conductivity,
    CurrentDensity,
    Diffusivity,
    Dimensionless,
    EnergyDensity,
    EnergyPerArea,
    EnergyPerLength,
    Length,
    Mobility,
    MolarVolume,
    NucleationRate,
    Potential,
    Pressure,
    Rate,
    Temperature,
    Time,
    to_si,
)


class ConfigError(Exception):
    """A config problem, reported to the user on one line as 'key.path: message'."""


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
    # A labelled grain image (PNG, TIFF, .npy; relative to the config file) instead of
    # Voronoi grains: 2D, tagged GBs (nzsp_fem/mesh/image.py). It covers domain.size.
    image: str | None = None
    pixel_size: Length | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _image_pixels(self):
        if self.image is not None and self.pixel_size is None:
            raise ValueError("pixel_size: required with microstructure.image (e.g. '20 nm')")
        if self.image is None and self.pixel_size is not None:
            raise ValueError("pixel_size: only used with microstructure.image")
        if self.image is not None and self.seeds is not None:
            raise ValueError("seeds: the grains come from microstructure.image; remove seeds")
        return self


class MeshSizes(Strict):
    size_grain: Length = Field(100e-9, gt=0)
    size_gb: Length = Field(15e-9, gt=0)
    size_nucleus: Length = Field(15e-9, gt=0)
    # A band of this width along the electrode (x = 0) meshed at size_nucleus, so that the
    # electrode deposit's front stays resolved as it advances (0: no band).
    electrode_band: Length = Field(0.0, ge=0)
    cache_dir: str = "meshes"


class Nuclei(Strict):
    radius: Length = Field(50e-9, gt=0)
    positions: Literal["grain_centres"] | list[list[Length]] = "grain_centres"
    electrode_layer: Length = Field(0.0, ge=0)
    # Also a nucleus (a half disc) centred on the electrode wherever a GB meets it: the
    # deposit that can follow a GB is the one attached to the electrode.
    at_electrode_junctions: bool = False


class Phase(Strict):
    E: Pressure = Field(gt=0)
    # Ionic (Na+) conductivity; for the metal it is Table 1's "conductivity of sodium",
    # which the single-potential model uses and the two-potential model reads as electronic.
    conductivity: Conductivity = Field(gt=0)
    # Electronic conductivity (two potentials only); 0 is allowed (no electron leakage).
    electronic_conductivity: Conductivity | None = Field(None, ge=0)
    diffusivity: Diffusivity | None = None
    yield_stress: Pressure | None = None
    hardening: Pressure | None = None  # default E/100


class Materials(Strict):
    mixing: Literal["paper", "metal-first"] = "paper"
    # "single-ion": D follows, pointwise, from the ionic conductivity the charge equation
    # uses (Nernst-Einstein), so c = c0 solves Nernst-Planck in the electrolyte, as in a
    # single-ion conductor; "nernst-einstein": each electrolyte phase's D from its own
    # sigma, mixed by `mixing` (disagrees with sigma where metal fills a GB);
    # "independent": the phases' own D (Table 1's D_SE is 178x below its sigma's value).
    transport: Literal["single-ion", "nernst-einstein", "independent"] = "single-ion"
    nu: Dimensionless = Field(0.3, gt=-1, lt=0.5)
    metal: Phase = Field(
        default_factory=lambda: Phase(
            E=5e9, conductivity=1e7, electronic_conductivity=1e7, diffusivity=1.5e-16, yield_stress=0.5e6
        )
    )
    grain: Phase = Field(
        default_factory=lambda: Phase(
            E=50e9, conductivity=0.1, electronic_conductivity=1e-8, diffusivity=1.5e-14, yield_stress=50e6
        )
    )
    grain_boundary: Phase = Field(
        default_factory=lambda: Phase(E=50e9, conductivity=0.25, electronic_conductivity=1e-8)
    )

    @model_validator(mode="after")
    def _complete(self):
        for name in ("metal", "grain"):
            phase = getattr(self, name)
            if phase.yield_stress is None or phase.yield_stress <= 0:
                raise ValueError(f"{name}.yield_stress: expected a positive pressure")
            # Nernst-Einstein gives D of the electrolyte phases only (the metal needs its own);
            # single-ion transport derives every D from the conductivities.
            needs_d = self.transport == "independent" or (self.transport == "nernst-einstein" and name == "metal")
            if needs_d and (phase.diffusivity is None or phase.diffusivity <= 0):
                raise ValueError(f"{name}.diffusivity: expected a positive diffusivity")
        for name in ("metal", "grain", "grain_boundary"):
            if getattr(self, name).electronic_conductivity is None:
                raise ValueError(f"{name}.electronic_conductivity: expected a conductivity (0 allowed)")
        if self.metal.electronic_conductivity <= 0:
            raise ValueError("metal.electronic_conductivity: expected a positive conductivity")
        if self.grain_boundary.yield_stress is not None:
            raise ValueError("grain_boundary.yield_stress: yield depends on eta only (docs/model.md); remove it")
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
    # "printed": the paper's Allen-Cahn + Butler-Volmer (eq. 1); "bounded": the whole
    # driving force inside Butler-Volmer (docs/model.md, consistent extension), which keeps
    # 0 <= eta <= 1 and c >= 0 with exact Na balance.
    kinetics: Literal["printed", "bounded"] = "bounded"


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
    # "single": the paper's one potential (eqs. 1, 5); "two": electronic phi_e and ionic
    # phi_i with eta_a = phi_e - phi_i - E_eq (docs/model.md, consistent extension).
    potentials: Literal["single", "two"] = "two"
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
    # Accuracy: the largest local error of a step in eta (and c/c0), estimated from the
    # backward-Euler solution against its linear-extrapolation predictor; null = steps set
    # by Newton effort only. The cap bounds max |delta eta| per step, so the front moves at
    # most about that fraction of the interface width per step (null = no cap).
    error_tolerance: float | None = Field(0.02, gt=0)
    max_interface_change: float | None = Field(0.25, gt=0, le=1)
    output_times: list[Time] | None = None
    n_outputs: int = Field(10, ge=1)
    max_steps: int = Field(10**7, ge=1)
    # A short-circuited cell is dead: stop there (status completed, short_circuit true).
    stop_at_short_circuit: bool = True
    # Stop once this charge has passed the electrode (C/m in 2D, C in 3D; positive plates
    # Na), so that cases compare at equal deposited Na; t_end stays the upper bound.
    # Checked against the dimension by Config (the unit depends on domain.dim).
    stop_at_charge: float | str | None = None

    @model_validator(mode="after")
    def _order(self):
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min: {self.dt_min:g} s exceeds dt_max = {self.dt_max:g} s")
        if not self.dt_min <= self.dt_initial <= self.dt_max:
            raise ValueError(
                f"dt_initial: {self.dt_initial:g} s is not in [dt_min, dt_max] = [{self.dt_min:g}, {self.dt_max:g}] s"
            )
        if self.output_times is not None and any(t <= 0 or t > self.t_end for t in self.output_times):
            raise ValueError(f"output_times: must lie in (0, t_end] = (0, {self.t_end:g}] s")
        return self


class Solver(Strict):
    # "auto": the iterative field split, or direct (MUMPS) when bounds is on (solver/presets.preset_for).
    preset: Literal["direct", "iterative", "auto"] = "auto"
    bounds: bool = False
    # c itself by default: exact Na balance and no stall (docs/model.md item 2); ln c
    # keeps c > 0 but has no solution once a step's Na demand exceeds the local supply.
    log_concentration: bool = False
    rtol: float = Field(1e-6, gt=0)
    atol: float = Field(1e-6, gt=0)
    stol: float = Field(1e-10, ge=0)
    max_it: int = Field(25, ge=1)
    quadrature_degree: int = Field(2, ge=1, le=8)
    # Printed kinetics: d eta/dt and the pointwise Allen-Cahn rate by vertex quadrature
    # (mass lumping), as the bounded kinetics always are. Each node then sees its own
    # Butler-Volmer rate: eta >= 0, and the metal grows at FiPy's rate on coarse meshes
    # (docs/performance.md, "Against FiPy at equal accuracy"); consistent (false), the
    # reaction leaks to the node ahead (+4.9 % metal at 10 nm). The default since it is no
    # less robust where users start (with the reaction ramp): without the ramp, a full-rate
    # start near the printed model's runaway fold may have no solution lumped on a coarse
    # mesh where the consistent rate still converges (tests/test_physics.py's BASE).
    lumped_rate: bool = True
    # The metal is ~equipotential once it conducts 1e4x better than the electrolyte;
    # Table 1's 1e8 contrast swamps Newton's merit function (see docs/model.md). null = off.
    metal_conductivity_contrast_cap: float | None = Field(1e4, gt=1)
    # Two potentials: Na+ conductivity left inside the metal, relative to the grain's
    # (keeps phi_i defined where no reaction reads it), and the strength of the lumped
    # anchor eps (1 - h(eta))^2 (phi_e - phi_i - E_eq) that defines phi_e where nothing
    # conducts electrons (docs/model.md: isolated metal).
    metal_ionic_conductivity_floor: float = Field(1e-3, gt=0)
    electronic_anchor: float = Field(1e-6, ge=0)
    petsc_options: dict[str, Any] = Field(default_factory=dict)


class Probe(Strict):
    name: str
    position: list[Length]


class Output(Strict):
    directory: str | None = None
    probes: list[Probe] = Field(default_factory=list)
    checkpoint_every_steps: int = Field(100, ge=0)
    checkpoint_every_minutes: float = Field(30.0, ge=0)
    # A run killed (SIGKILL, a crash) before the first periodic checkpoint can still be
    # restarted from its last output time.
    checkpoint_at_output_times: bool = True
    figures: bool = True
    figures_at_output_times: bool = False
    # figures/eta.gif from the VTX fields at the end of the run (needs figures: true).
    animation: bool = True
    verbosity: int = Field(1, ge=0, le=3)


class Nucleation(Strict):
    """Discrete nucleation where electrons reach the electrolyte (docs/model.md, "Discrete
    nucleation"; issue 21). Off by default; needs two potentials."""

    enabled: bool = False
    # J0 of J = J0 exp(-dG*/kT): site density N_A/V_m times the attempt frequency kT/h at
    # 298 K (classical nucleation theory's upper bound); 0 switches insertions off.
    rate_prefactor: NucleationRate = Field(1.58e41, ge=0)
    # gamma: Na's surface energy (Tyson & Miller 1977), an upper bound for the unknown
    # Na/NZSP interface energy.
    interface_energy: EnergyPerArea = Field(0.26, gt=0)
    molar_volume: MolarVolume = Field(2.37e-5, gt=0)
    # 2D only: the thickness h of the disc-shaped (2D) nucleus; null = one atomic layer,
    # (V_m/N_A)^(1/3) = 0.34 nm for Na.
    layer_thickness: Length | None = Field(None, gt=0)
    # The inserted nucleus: at least one interface width (checked), better 2-3.
    radius: Length = Field(50e-9, gt=0)
    # The nucleus forms over this time through the reaction sink; it is also the time
    # within which electrons must be able to reach it (the supply criterion).
    hold_time: Time = Field(1e-3, gt=0)
    seed: int = Field(0, ge=0)
    # The step is limited so that sum(J dV) dt over the cells that can take a nucleus
    # stays below this, but never below hold_time / 40 (null: no limit; docs/model.md).
    max_expected_per_step: float | None = Field(0.1, gt=0, le=1)


class Study(Strict):
    parameter: str
    values: list[Any] = Field(min_length=1)
    # Ranks per case; by default all ranks work on each case unless ranks outnumber cases.
    ranks_per_case: int | None = Field(None, ge=1)


class Config(Strict):
    """A validated run configuration: every section, values in SI units. Make one with
    nzsp_fem.load_config (a YAML path, a mapping of sections or another Config)."""

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
    # Replaces electrochemistry.electrode over time and sets time.t_end (config/protocol.py).
    protocol: Protocol | None = None
    nucleation: Nucleation = Field(default_factory=Nucleation)
    study: Study | None = None

    @model_validator(mode="before")
    @classmethod
    def _end_of_protocol(cls, data: Any) -> Any:
        # Before the fields are validated, so that output_times are checked against the
        # protocol's end; an invalid protocol is left to its own field's error.
        if not isinstance(data, dict) or data.get("protocol") is None:
            return data
        try:
            protocol = Protocol.model_validate(data["protocol"])
        except ValueError:
            return data
        time = data.get("time")
        time = time.model_dump() if isinstance(time, BaseModel) else dict(time or {})
        return dict(data, time=dict(time, t_end=protocol.duration))

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
        charge = self.time.stop_at_charge
        if isinstance(charge, str):
            unit = "charge per length" if d == 2 else "charge"
            try:
                charge = to_si(charge, unit)
            except ValueError as err:
                raise ValueError(f"time.stop_at_charge: {err} ({'C/m in 2D' if d == 2 else 'C in 3D'})") from None
            self.time.stop_at_charge = charge
        if charge is not None and not charge > 0:
            raise ValueError(
                f"time.stop_at_charge: expected a positive charge (plated Na), got {charge:g} "
                f"{'C/m' if d == 2 else 'C'}"
            )
        m, ec = self.materials, self.electrochemistry
        leak = m.grain.electronic_conductivity or m.grain_boundary.electronic_conductivity
        if ec.potentials == "two" and not leak and self.solver.electronic_anchor <= 0:
            raise ValueError(
                "solver.electronic_anchor: must be positive when the electrolyte conducts no electrons "
                "(phi_e would be undefined away from the metal)"
            )
        self._check_nucleation()
        if self.study is not None:
            check_parameter_path(self, self.study.parameter)
            if self.study.parameter == "time.stop_at_charge":
                raise ValueError(
                    "study.parameter: cases compare at one common charge; set time.stop_at_charge once "
                    "and vary a material or electrode parameter"
                )
            if self.protocol is not None and self.study.parameter == "time.t_end":
                raise ValueError("study.parameter: time.t_end is set by the protocol; vary the protocol instead")
        return self

    def _check_nucleation(self) -> None:
        nu = self.nucleation
        if not nu.enabled:
            return
        if self.electrochemistry.potentials != "two":
            raise ValueError(
                "nucleation.enabled: needs electrochemistry.potentials: two (eta_loc = phi_e - phi_i - E_eq)"
            )
        if self.domain.dim == 3 and nu.layer_thickness is not None:
            raise ValueError("nucleation.layer_thickness: only used in 2D (3D nuclei are spheres); remove it")
        # sqrt(2 kappa0 / W), as physics.parameters.interface_width (config imports no physics)
        pf = self.phase_field
        width = (2 * pf.gradient_coefficient / pf.barrier_height) ** 0.5
        if nu.radius < width:
            raise ValueError(
                f"nucleation.radius: {nu.radius:.3g} m is below one interface width ({width:.3g} m); "
                "a nucleus needs 2-3 widths to be resolved"
            )


def config_value(cfg: Config, dotted: str) -> Any:
    """The value at a dotted key path (``materials.grain_boundary.E``); ValueError if the
    path names no config key or a section."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ValueError(f"{dotted!r} is not a config key")
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        raise ValueError(f"{dotted!r} is a section, not a value")
    return node


def check_parameter_path(cfg: Config, dotted: str) -> None:
    """study.parameter names a config value."""
    try:
        config_value(cfg, dotted)
    except ValueError as err:
        raise ValueError(f"study.parameter: {err}") from None
