"""The `nzsp-fem` command line: config validation, --check, --set, unit parsing.

Every CLI test spawns `python -m nzsp_fem` in a fresh directory, so the module is serial.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from support import assert_one_line_error, child_environment

from nzsp_fem.config import load_config
from nzsp_fem.config.units import to_si

pytestmark = pytest.mark.serial

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # s; a config that wrongly passes must fail the test, not hang it


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = child_environment()
    return subprocess.run(
        [sys.executable, "-m", "nzsp_fem", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def assert_user_error(r: subprocess.CompletedProcess, expected: tuple[str, ...]) -> None:
    """Exit 2 with one 'nzsp-fem: error: ...' line naming the problem, and no traceback."""
    assert_one_line_error(r, *expected)


class Bad(NamedTuple):
    id: str
    yaml: str | None  # None: no config file is written
    expected: tuple[str, ...]  # substrings of the error line
    args: tuple[str, ...] = ()


# Every case differs from a valid config (the defaults) in one place only.
BAD = [
    Bad(
        "pressure-given-length",
        "materials:\n  grain_boundary:\n    E: 3 m\n",
        ("materials.grain_boundary.E:", "pressure", "3 m"),
    ),
    Bad("unknown-top-level-key", "name: x\nbogus_section:\n  a: 1\n", ("bogus_section: unknown key",)),
    Bad(
        "unknown-nested-key",
        "materials:\n  grain:\n    youngs_modulus: 50 GPa\n",
        ("materials.grain.youngs_modulus: unknown key",),
    ),
    Bad("negative-gb-width", "microstructure:\n  gb_width: -30 nm\n", ("microstructure.gb_width:", "greater than 0")),
    Bad(
        "gb-width-not-below-grain-size",
        "microstructure:\n  grains: 2\n  gb_width: 1.5 um\n",
        ("microstructure.gb_width", "not smaller than the typical grain size"),
    ),
    Bad(
        "nucleus-outside-domain",
        "nuclei:\n  positions: [[1 um, 0.5 um], [2.5 um, 0.5 um]]\n",
        ("nuclei.positions", "outside the domain"),
    ),
    Bad(
        "seed-outside-domain",
        "microstructure:\n  seeds: [[0.5 um, 0.5 um], [1.5 um, 1.2 um]]\n",
        ("microstructure.seeds", "not strictly inside"),
    ),
    Bad(
        "gb-mesh-size-above-gb-width",
        "mesh:\n  size_gb: 40 nm\n",
        ("mesh.size_gb", "larger than microstructure.gb_width"),
    ),
    Bad("non-numeric", "phase_field:\n  mobility: fast\n", ("phase_field.mobility:", "'fast'")),
    Bad("list-instead-of-number", "materials:\n  grain:\n    E: [50, 60]\n", ("materials.grain.E:", "[50, 60]")),
    Bad("boolean-instead-of-number", "mechanics:\n  volume_expansion: true\n", ("mechanics.volume_expansion:",)),
    Bad(
        "nan",
        "electrochemistry:\n  equilibrium_potential: .nan\n",
        ("electrochemistry.equilibrium_potential:", "finite"),
    ),
    Bad("infinite-t_end", "time:\n  t_end: .inf\n", ("time.t_end:", "finite")),
    Bad("bad-enum", "solver:\n  preset: fast\n", ("solver.preset:", "'fast'")),
    Bad("dim-4", "domain:\n  dim: 4\n  size: [1 um, 1 um, 1 um, 1 um]\n", ("domain.dim:",)),
    Bad("dim-1", "domain:\n  dim: 1\n  size: [1 um]\n", ("domain.dim:",)),
    Bad("size-entries-not-dim", "domain:\n  dim: 3\n  size: [2 um, 1 um]\n", ("domain.size:", "dim is 3")),
    Bad("t_end-zero", "time:\n  t_end: 0\n", ("time.t_end:", "greater than 0")),
    Bad("t_end-negative", "time:\n  t_end: -1 ms\n", ("time.t_end:", "greater than 0")),
    # 1e-3 without a dot is a string to YAML 1.1: it must still read as a number of seconds
    Bad("dt_min-above-dt_max", "time:\n  dt_min: 1e-3\n  dt_max: 1e-6\n", ("time.dt_min:", "exceeds dt_max")),
    Bad(
        "metal-diffusivity-missing",
        "materials:\n  transport: nernst-einstein\n  metal:\n    diffusivity: null\n",
        ("materials.metal.diffusivity:",),
    ),
    Bad(
        "galvanostatic-without-current",
        "electrochemistry:\n  electrode:\n    mode: galvanostatic\n",
        ("electrochemistry.electrode.current_density:",),
    ),
    Bad(
        "gb-yield-stress",
        "materials:\n  grain_boundary:\n    yield_stress: 1 MPa\n",
        ("materials.grain_boundary.yield_stress:",),
    ),
    Bad("section-given-scalar", "materials: 3\n", ("materials:",)),
    Bad("invalid-yaml", "name: x\nmaterials:\n  grain: [1, 2\n", ("invalid-yaml.yaml:", "line 4", "not valid YAML")),
    Bad("empty-file", "", ("empty-file.yaml:", "empty config file")),
    Bad("comments-only", "# nothing here\n", ("comments-only.yaml:", "empty config file")),
    Bad("top-level-list", "- name: x\n- name: y\n", ("top-level-list.yaml:", "mapping")),
    Bad("top-level-scalar", "just text\n", ("top-level-scalar.yaml:", "mapping")),
    Bad(
        "study-parameter-unknown",
        "study:\n  parameter: materials.grain.stiffness\n  values: [1, 2]\n",
        ("study.parameter:", "'materials.grain.stiffness' is not a config key"),
    ),
    Bad(
        "study-parameter-section",
        "study:\n  parameter: materials.grain\n  values: [1, 2]\n",
        ("study.parameter:", "section"),
    ),
    Bad("missing-config-file", None, ("missing-config-file.yaml:", "no such config file")),
    Bad(
        "set-without-equals",
        "name: x\n",
        ("--set 'phase_field.mobility'", "key.path=value"),
        ("--set", "phase_field.mobility"),
    ),
    Bad("set-empty-key", "name: x\n", ("--set '=3'", "empty key"), ("--set", "=3")),
    Bad(
        "set-unknown-key",
        "name: x\n",
        ("materials.grain.stiffness: unknown key",),
        ("--set", "materials.grain.stiffness=50 GPa"),
    ),
    Bad(
        "set-wrong-unit",
        "name: x\n",
        ("materials.grain_boundary.E:", "pressure"),
        ("--set", "materials.grain_boundary.E=20 nm"),
    ),
    Bad("set-below-a-value", "name: x\n", ("name: is not a section",), ("--set", "name.first=x")),
]


def test_bad_cases_are_distinct():
    assert len({b.id for b in BAD}) == len(BAD)
    assert len({(b.yaml, b.args) for b in BAD}) == len(BAD)
    assert len(BAD) >= 15


@pytest.mark.parametrize("case", BAD, ids=[b.id for b in BAD])
def test_bad_config_exits_2(case, tmp_workdir):
    name = f"{case.id}.yaml"
    if case.yaml is not None:
        (tmp_workdir / name).write_text(case.yaml)
    r = run_cli(["--check", name, *case.args], tmp_workdir)
    assert_user_error(r, case.expected)
    assert r.stdout == ""
    assert sorted(p.name for p in tmp_workdir.iterdir()) == ([name] if case.yaml is not None else [])


@pytest.mark.parametrize(
    "case", [b for b in BAD if b.id in ("unknown-nested-key", "gb-mesh-size-above-gb-width")], ids=lambda b: b.id
)
def test_bad_config_without_check_makes_no_output(case, tmp_workdir):
    """A run rejects the config (and the geometry) before creating results/<name>."""
    name = f"{case.id}.yaml"
    (tmp_workdir / name).write_text(case.yaml)
    r = run_cli([name], tmp_workdir)
    assert_user_error(r, case.expected)
    assert sorted(p.name for p in tmp_workdir.iterdir()) == [name]


# --check on valid configs ----------------------------------------------------------

KAPPA0 = 2.7e-10  # J/m
W = 2.4e6  # J/m^3
VALID = f"""\
name: small
domain:
  dim: 2
  size: [2 um, 1 um]
microstructure:
  grains: 4
  gb_width: 30 nm
mesh:
  size_gb: 15 nm
phase_field:
  gradient_coefficient: {KAPPA0} J/m
  barrier_height: {W / 1e6} MJ/m^3
materials:
  grain_boundary:
    E: 50 GPa
    conductivity: 0.25 S/m
"""


def check(tmp_workdir: Path, *args: str) -> dict:
    (tmp_workdir / "small.yaml").write_text(VALID)
    r = run_cli(["--check", "small.yaml", *args], tmp_workdir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert sorted(p.name for p in tmp_workdir.iterdir()) == ["small.yaml"], "--check must write nothing"
    return yaml.safe_load(r.stdout)


def test_check_prints_resolved_config_and_interface_width(tmp_workdir):
    resolved = check(tmp_workdir)
    pf = resolved["phase_field"]
    assert pf["gradient_coefficient"] == pytest.approx(KAPPA0, rel=1e-12)
    assert pf["barrier_height"] == pytest.approx(W, rel=1e-12)
    width = resolved["derived"]["interface_width_m"]
    assert width == pytest.approx(math.sqrt(2 * KAPPA0 / W), rel=1e-12)
    assert width == pytest.approx(math.sqrt(2 * pf["gradient_coefficient"] / pf["barrier_height"]), rel=1e-12)
    # the rest of the resolved config is there, in SI
    assert resolved["name"] == "small"
    assert resolved["domain"]["size"] == pytest.approx([2e-6, 1e-6])
    assert resolved["microstructure"]["grains"] == 4
    assert resolved["materials"]["grain_boundary"]["E"] == pytest.approx(5e10)
    assert resolved["time"]["t_end"] > 0 and "dimensionless_groups" in resolved


def test_set_gradient_coefficient_changes_interface_width(tmp_workdir):
    base = check(tmp_workdir)["derived"]["interface_width_m"]
    resolved = check(tmp_workdir, "--set", f"phase_field.gradient_coefficient={4 * KAPPA0} J/m")
    assert resolved["phase_field"]["gradient_coefficient"] == pytest.approx(4 * KAPPA0, rel=1e-12)
    assert resolved["derived"]["interface_width_m"] == pytest.approx(2 * base, rel=1e-12)
    assert resolved["derived"]["interface_width_m"] == pytest.approx(math.sqrt(8 * KAPPA0 / W), rel=1e-12)


def test_set_quantity_with_units(tmp_workdir):
    resolved = check(
        tmp_workdir, "--set", "materials.grain_boundary.E=20 GPa", "--set", "time.dt_min=1e-12"
    )  # the second: a YAML-1.1 string number
    assert resolved["materials"]["grain_boundary"]["E"] == pytest.approx(2.0e10, rel=1e-12)
    assert resolved["time"]["dt_min"] == pytest.approx(1e-12, rel=1e-12)
    assert resolved["materials"]["grain"]["E"] == pytest.approx(5e10)  # others untouched


# Units, in process ------------------------------------------------------------------


def test_load_config_parses_units(tmp_workdir):
    path = tmp_workdir / "units.yaml"
    path.write_text(
        "materials:\n  grain:\n    E: 50 GPa\n  grain_boundary:\n    conductivity: 0.25 S/m\n"
        "microstructure:\n  gb_width: 10 nm\ntime:\n  t_end: 2 ms\n  dt_max: 1e-4\n"
    )
    cfg = load_config(path)
    assert cfg.materials.grain.E == pytest.approx(5e10, rel=1e-12)
    assert cfg.microstructure.gb_width == pytest.approx(1e-8, rel=1e-12)
    assert cfg.materials.grain_boundary.conductivity == pytest.approx(0.25, rel=1e-12)
    assert cfg.time.t_end == pytest.approx(2e-3, rel=1e-12)
    assert cfg.time.dt_max == pytest.approx(1e-4, rel=1e-12)
    assert cfg.name == "units"


@pytest.mark.parametrize(
    "value, dimension, si",
    [
        ("50 GPa", "pressure", 5e10),
        ("10 nm", "length", 1e-8),
        ("0.25 S/m", "conductivity", 0.25),
        ("1 mS/cm", "conductivity", 0.1),
        ("298.15 K", "temperature", 298.15),
        ("1e-3", "time", 1e-3),
        (3, "length", 3.0),
        ("5 %", "dimensionless", 0.05),
        ("90 deg", "angle", math.pi / 2),
    ],
)
def test_to_si(value, dimension, si):
    assert to_si(value, dimension) == pytest.approx(si, rel=1e-12)


@pytest.mark.parametrize(
    "value, dimension",
    [
        ("3 m", "pressure"),
        ("GPa", "length"),
        ("abc", "time"),
        (True, "length"),
        ([1], "length"),
        (float("nan"), "length"),
        ("inf", "time"),
        ("1e400 m", "length"),
    ],
)
def test_to_si_rejects(value, dimension):
    with pytest.raises(ValueError, match=f"expected a .*{dimension}"):
        to_si(value, dimension)
