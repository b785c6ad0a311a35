"""One-line config errors for values inside a union (config/loading.py ``_format_error``).

Pydantic reports a value that fits no branch of a union once per branch, each located
under a label of the branch's type (``nuclei.positions.literal['grain_centres']``). The
message must name the user's own key path and come from the branch the user meant.

In process and cheap (no mesh, no solver), except one CLI call.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError
from support import assert_one_line_error, child_environment

from nzsp_fem.config import ConfigError, parse_config
from nzsp_fem.config.loading import _format_error
from nzsp_fem.config.schema import Strict
from nzsp_fem.config.units import Length


def config_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_wrong_unit_inside_nucleus_positions_names_the_entry():
    """The issue's case: a time where a length belongs, inside the list branch. Catches
    the literal branch's "Input should be 'grain_centres'" reported instead, and the
    branch label left in the key path."""
    msg = config_error({"nuclei": {"positions": [["0.1 s", "0.2 um"]]}})
    assert msg.startswith("nuclei.positions.0.0: "), msg
    assert "expected a length" in msg and "0.1 s" in msg
    assert "literal" not in msg and "grain_centres" not in msg
    # the second entry of the second point: the path follows the value, not the first entry
    msg = config_error({"nuclei": {"positions": [["0.1 um", "0.2 um"], ["1 um", "2 kg"]]}})
    assert msg.startswith("nuclei.positions.1.1: expected a length"), msg


def test_misspelt_literal_still_reports_the_literal():
    """A string is meant for the literal branch: the message says which word is allowed,
    not "Input should be a valid list"; the key path has no branch label either."""
    msg = config_error({"nuclei": {"positions": "grain_centre"}})
    assert msg == "nuclei.positions: Input should be 'grain_centres', got 'grain_centre'", msg


def test_flat_list_reports_the_entry_that_is_not_a_point():
    """[x, y] instead of [[x, y]]: the list branch got deeper than the literal one."""
    msg = config_error({"nuclei": {"positions": ["0.1 um", "0.2 um"]}})
    assert msg.startswith("nuclei.positions.0: Input should be a valid list"), msg


class _Target(Strict):
    kind: Literal["electrode"] | list[Length] = "electrode"


class _Other(BaseModel):
    """Another union: a literal or a list of points, and a literal or a nested model."""

    seeds: Literal["random"] | list[list[Length]] = "random"
    target: Literal["none"] | _Target = "none"


def _message(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        _Other.model_validate(data)
    return _format_error(info.value, _Other)


def test_other_unions_are_reported_by_the_branch_the_value_entered():
    """The same rule on other union fields: a list of points (index path) and a nested
    section (key path inside the model branch). Catches a fix special-cased to
    nuclei.positions, and the model branch's label (``_Target``) left in the path."""
    msg = _message({"seeds": [["1 um", "1 um"], ["3 s", "1 um"]]})
    assert msg.startswith("seeds.1.0: expected a length, got '3 s'"), msg
    msg = _message({"target": {"kind": ["2 um", "5 V"]}})
    assert msg.startswith("target.kind.1: expected a length, got '5 V'"), msg
    msg = _message({"target": {"knd": "electrode"}})
    assert msg == "target.knd: unknown key", msg
    assert _message({"seeds": "randm"}) == "seeds: Input should be 'random', got 'randm'"


@pytest.mark.serial
def test_cli_reports_the_nucleus_entry_on_one_line(tmp_path):
    """What a user sees: exit 2 and one line naming nuclei.positions.0.0."""
    (tmp_path / "bad.yaml").write_text('nuclei:\n  positions: [["0.1 s", "0.2 um"]]\n')
    r = subprocess.run(
        [sys.executable, "-m", "nzsp_fem", "bad.yaml", "--check"],
        cwd=tmp_path,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(r, "nuclei.positions.0.0: expected a length, got '0.1 s'")


# time.stop_at_charge: the unit depends on the dimension --------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"time": {"stop_at_charge": "-1e-3 C/m"}}, "time.stop_at_charge: expected a positive charge"),
        ({"time": {"stop_at_charge": 0}}, "time.stop_at_charge: expected a positive charge"),
        ({"time": {"stop_at_charge": "1 mC"}}, "time.stop_at_charge: expected a charge per length"),
        ({"time": {"stop_at_charge": "2 s"}}, "time.stop_at_charge: expected a charge per length"),
        (
            {"domain": {"dim": 3, "size": ["1 um"] * 3}, "time": {"stop_at_charge": "1e-3 C/m"}},
            "time.stop_at_charge: expected a charge, got",
        ),
        (
            {"study": {"parameter": "time.stop_at_charge", "values": ["1e-4 C/m", "1e-3 C/m"]}},
            "study.parameter: cases compare at one common charge",
        ),
    ],
    ids=["negative", "zero", "2d-in-coulomb", "a-time", "3d-in-C/m", "study-varies-it"],
)
def test_stop_at_charge_errors(data, expected):
    """Catches a sign or unit that is not checked against the dimension (C/m in 2D, C in
    3D), and a study whose cases would stop at different charges."""
    msg = config_error(data)
    assert msg.startswith(expected) and "\n" not in msg, msg


def test_stop_at_charge_units():
    assert parse_config({"time": {"stop_at_charge": "1 uC/um"}}).time.stop_at_charge == pytest.approx(1.0)
    cfg = parse_config({"domain": {"dim": 3, "size": ["1 um"] * 3}, "time": {"stop_at_charge": "2 pC"}})
    assert cfg.time.stop_at_charge == pytest.approx(2e-12)
