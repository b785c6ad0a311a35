"""Electrode protocols and the critical current density (config/protocol.py,
solver/protocol.py, problem/coupled.py set_electrode, run.py, study.py; docs/protocols.md).

Pure Python: the ramp of Fig. 1a, segment timing, steps landing on segment boundaries,
t_end from the protocol, the voltage-collapse criterion, one-line errors for bad input.
Runs (0.2 x 0.1 um, one grain, a Na layer on the electrode, no mechanics, a few seconds
each; serially and under ``mpirun -n 2``): a protocol with galvanostatic plating at two
currents, stripping and a potentiostatic hold shows its steps in timeseries.csv, with the
measured electrode current equal to the applied one to solver tolerance; a plating
staircase shorts the cell in the segment Faraday's law predicts, which summary.json
reports as the critical current density; a voltage collapse stops the run and sets it.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from support import merge

from mpi4py import MPI

from nzsp_fem import cli
from nzsp_fem.config import ConfigError, load_config, parse_config, with_value
from nzsp_fem.config.protocol import (
    MAX_SEGMENTS,
    Ramp,
    Segment,
    electrode_segments,
    expand_ramp,
    segment_ends,
    segment_index,
)
from nzsp_fem.physics.parameters import FARADAY
from nzsp_fem.run import run_single
from nzsp_fem.solver import StepController
from nzsp_fem.solver.protocol import ElectrodeProtocol, VoltagePeak

COMM = MPI.COMM_WORLD
MA_CM2 = 10.0  # A/m^2


def shared_dir(tmp_path_factory, name: str) -> Path:
    path = str(tmp_path_factory.mktemp(name)) if COMM.rank == 0 else None
    return Path(COMM.bcast(path, root=0))


def read_table(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {name: np.array([float(r[k] or "nan") for r in rows[1:]]) for k, name in enumerate(rows[0])}


# The ramp, segments and timing (pure Python) -------------------------------------------


def test_ramp_expands_like_fig_1a():
    """0.05 to 0.65 mA/cm^2 in 0.05 steps, plating then stripping: 13 currents, 26 segments
    alternating plate (+) and strip (-) at the same magnitude, each held for the hold time.
    Catches an exclusive end (12 currents, from 0.65 = 0.05 + 12 x 0.05 rounding below),
    strip before plate, a lost sign, or mA/cm^2 not converted to A/m^2."""
    ramp = Ramp(first="0.05 mA/cm^2", last="0.65 mA/cm^2", step="0.05 mA/cm^2", hold="30 min")
    segments = expand_ramp(ramp)
    assert len(segments) == 26
    signed = [s.signed_current_density for s in segments]
    expected = np.repeat(np.arange(1, 14) * 0.05 * MA_CM2, 2) * np.tile([1, -1], 13)
    np.testing.assert_allclose(signed, expected, rtol=1e-12)
    assert [s.direction for s in segments[:4]] == ["plate", "strip", "plate", "strip"]
    assert all(s.mode == "galvanostatic" and s.duration == 1800.0 for s in segments)
    plating_only = expand_ramp(ramp.model_copy(update={"plate_then_strip": False}))
    assert [s.signed_current_density for s in plating_only] == pytest.approx(expected[::2], rel=1e-12)
    # A last value between steps is not reached: 0.05, 0.25, 0.45 of "up to 0.6".
    uneven = Ramp(first="0.05 mA/cm^2", last="0.6 mA/cm^2", step="0.2 mA/cm^2", hold=1, plate_then_strip=False)
    assert [s.current_density for s in expand_ramp(uneven)] == pytest.approx([0.5, 2.5, 4.5], rel=1e-12)


def test_protocol_sets_t_end_and_output_times_are_checked_against_it():
    """t_end is the protocol's total duration (26 x 30 min for the ramp above), output
    times are validated against that end, not the default 0.05 s, and a resolved config
    parses back to the same end; a study over a protocol value recomputes it."""
    data = {
        "protocol": {
            "ramp": {"first": "0.05 mA/cm^2", "last": "0.65 mA/cm^2", "step": "0.05 mA/cm^2", "hold": "30 min"}
        },
        "time": {"output_times": ["1 h", "13 h"]},
    }
    cfg = parse_config(data)
    assert cfg.time.t_end == pytest.approx(26 * 1800.0, rel=1e-12)
    assert parse_config(cfg.model_dump()).time.t_end == cfg.time.t_end
    longer = with_value(cfg, "protocol.ramp.hold", "1 h")
    assert longer.time.t_end == pytest.approx(26 * 3600.0, rel=1e-12)
    # Given by the user beside a protocol, another t_end is refused, from a dict as from YAML.
    with pytest.raises(ConfigError, match="time.t_end: .* differs from the protocol's total duration"):
        parse_config(merge(cfg.model_dump(), {"protocol": {"ramp": {"hold": "1 h"}}}))


def test_segment_timing_and_a_run_without_protocol():
    """A step that starts on a boundary belongs to the next segment, one that starts just
    before it to the current one; past the end, the last. Without a protocol the electrode
    section is one segment over the whole run, a negative current being a strip."""
    ends = segment_ends(expand_ramp(Ramp(first=1, last=2, step=1, hold=2.0)))
    assert ends == [2.0, 4.0, 6.0, 8.0]
    assert [segment_index(ends, t) for t in (0.0, 1.999, 2.0, 3.0, 4.0 * (1 - 1e-12), 7.9, 8.0)] == [
        0,
        0,
        1,
        1,
        2,
        3,
        3,
    ]
    cfg = parse_config({"electrochemistry": {"electrode": {"mode": "galvanostatic", "current_density": -50}}})
    (only,) = electrode_segments(cfg)
    assert only.direction == "strip" and only.signed_current_density == -50.0
    assert only.duration == cfg.time.t_end
    (pot,) = electrode_segments(parse_config({}))
    assert pot.mode == "potentiostatic" and pot.potential == -0.45


def test_steps_land_on_breakpoints_without_writing_output():
    """Breakpoints at 0.25 and 0.7 with dt 0.3: steps land on each (landed = True) but they
    are not output times, and the landing step does not shrink the running dt. Catches a
    controller that steps across a segment boundary (the current would change mid-step)."""
    ctl = StepController(t_end=1.0, dt=0.3, dt_min=1e-3, dt_max=1.0, growth=1.0, breakpoints=[0.7, 0.25, 1.0, 0.0])
    assert ctl.breakpoints == [0.25, 0.7]
    times = [(t, landed) for t, _, landed in ctl.dry_run()]
    assert [x for x, _ in times] == pytest.approx([0.25, 0.55, 0.7, 1.0], rel=1e-12)
    assert [landed for _, landed in times] == [True, False, True, True]
    assert not ctl.is_output_time(0.25) and not ctl.is_output_time(0.7) and ctl.is_output_time(1.0)
    assert ctl.dt == pytest.approx(0.3, rel=1e-12)


def test_voltage_collapse_criterion():
    """|V| below the fraction of its peak in the same galvanostatic segment: not at the
    first value, not across segments (the peak restarts), never in a potentiostatic or a
    zero-current segment, and off without the setting."""
    segments = [
        Segment(current_density=5.0, duration=1),
        Segment(current_density=10.0, direction="strip", duration=1),
        Segment(potential=-0.1, duration=1),
        Segment(current_density=0.0, duration=1),
    ]
    problem = SimpleNamespace(
        segments=segments,
        cfg=SimpleNamespace(protocol=SimpleNamespace(voltage_collapse=0.5)),
    )
    protocol = ElectrodeProtocol(problem)
    state = VoltagePeak()
    seen = [protocol.voltage_collapsed(0, v, state) for v in (-0.2, -0.3, -0.16, -0.149)]
    assert seen == [False, False, False, True]
    # a new segment starts its own peak: 0.1 after 0.3 in segment 0 is no collapse
    assert not protocol.voltage_collapsed(1, 0.1, state)
    assert protocol.voltage_collapsed(1, 0.049, state)
    assert not protocol.voltage_collapsed(2, 0.0, state) and not protocol.voltage_collapsed(3, 0.0, state)
    assert protocol.critical_current_density(1) == 10.0 and protocol.critical_current_density(2) is None
    problem.cfg.protocol.voltage_collapse = None
    assert not ElectrodeProtocol(problem).voltage_collapsed(0, 1e-9, VoltagePeak(0, 1.0))


# Bad input: one line naming the key ------------------------------------------------------

BAD = [
    ("negative-current", {"segments": [{"current_density": "-0.5 mA/cm^2", "duration": "1 s"}]},
     ("protocol.segments.0.current_density:", "magnitude", "strip")),
    ("current-in-volts", {"segments": [{"current_density": "0.5 V", "duration": "1 s"}]},
     ("protocol.segments.0.current_density:", "expected a current density")),
    ("both-controls", {"segments": [{"current_density": 5, "potential": "-0.1 V", "duration": "1 s"}]},
     ("protocol.segments.0:", "not both")),
    ("misspelt-key", {"segments": [{"curent_density": 5, "duration": "1 s"}]},
     ("protocol.segments.0.curent_density: unknown key",)),
    ("direction-on-potential", {"segments": [{"potential": "-0.1 V", "direction": "strip", "duration": 1}]},
     ("protocol.segments.0.direction:",)),
    ("no-duration", {"segments": [{"current_density": 5}]}, ("protocol.segments.0.duration:", "missing")),
    ("zero-duration", {"segments": [{"current_density": 5, "duration": 0}]}, ("protocol.segments.0.duration:",)),
    ("bad-direction", {"segments": [{"current_density": 5, "duration": 1, "direction": "up"}]},
     ("protocol.segments.0.direction:", "'up'")),
    ("segments-and-ramp", {"segments": [{"current_density": 5, "duration": 1}],
                           "ramp": {"first": 1, "last": 2, "step": 1, "hold": 1}},
     ("protocol:", "not both")),
    ("empty", {"segments": []}, ("protocol.segments:", "empty")),
    ("ramp-downwards", {"ramp": {"first": "0.5 mA/cm^2", "last": "0.1 mA/cm^2", "step": "0.1 mA/cm^2", "hold": 1}},
     ("protocol.ramp.last:", "below first")),
    ("ramp-unit-slip", {"ramp": {"first": "0.05 mA/cm^2", "last": "0.65 A/cm^2", "step": "0.05 mA/cm^2", "hold": 1}},
     ("protocol.ramp.step:", f"at most {MAX_SEGMENTS}")),
    ("hold-in-metres", {"ramp": {"first": 1, "last": 2, "step": 1, "hold": "1 m"}},
     ("protocol.ramp.hold:", "expected a time")),
    ("collapse-fraction", {"segments": [{"current_density": 5, "duration": 1}], "voltage_collapse": 1.5},
     ("protocol.voltage_collapse:",)),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_protocol_is_a_one_line_error(case, tmp_workdir, capsys):
    """`nzsp-fem --check` exits 2 with one 'nzsp-fem: error:' line naming the key path."""
    name, protocol, expected = case
    path = tmp_workdir / f"{name}.yaml"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump({"protocol": protocol}))
    COMM.barrier()
    assert cli.main(["--check", str(path)]) == 2
    err = capsys.readouterr().err
    if COMM.rank:
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nzsp-fem: error: "), err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


def test_t_end_given_with_a_protocol_must_match_it(tmp_workdir):
    """A protocol sets the end of the run: a different time.t_end in the file or from
    --set is an error; the same value (a resolved config read back) is not."""
    data = {"protocol": {"segments": [{"current_density": 5, "duration": "2 s"}]}, "time": {"t_end": "5 s"}}
    path = tmp_workdir / "conflict.yaml"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump(data))
    COMM.barrier()
    with pytest.raises(ConfigError, match=r"^time\.t_end: 5 s differs from the protocol's total duration 2 s"):
        load_config(path)
    assert load_config(path, ["time.t_end=2 s"]).time.t_end == 2.0
    with pytest.raises(ConfigError, match="time.t_end"):
        load_config(path, ["time.t_end=1 s"])


# Runs -------------------------------------------------------------------------------------

LX, LY = 0.2e-6, 0.1e-6


def planar(cache: Path, protocol: dict, **changes) -> dict:
    """One grain with a Na layer on the electrode: a planar front. Nernst-Einstein
    transport, so that Na+ migration carries what the ionic conductivity conducts (with
    Table 1's D the electrolyte ahead of a galvanostatic front runs dry)."""
    data = {
        "name": "protocol",
        "domain": {"size": [LX, LY]},
        "microstructure": {"grains": 1},
        "mesh": {"size_grain": "20 nm", "size_gb": "20 nm", "size_nucleus": "20 nm", "cache_dir": str(cache)},
        "nuclei": {"positions": [], "electrode_layer": "100 nm"},
        "materials": {"transport": "nernst-einstein"},
        "phase_field": {"gradient_coefficient": "7.2e-10 J/m", "reaction_ramp_time": 0},
        "mechanics": {"enabled": False},
        "time": {"dt_initial": "1 ms", "dt_max": "5 ms", "n_outputs": 1},
        "output": {"figures": False, "verbosity": 0, "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0},
        "protocol": protocol,
    }
    return merge(copy.deepcopy(data), changes)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return shared_dir(tmp_path_factory, "meshes")


STEPS = {
    "segments": [
        {"current_density": "200 mA/cm^2", "duration": "10 ms"},
        {"current_density": "400 mA/cm^2", "duration": "10 ms"},
        {"current_density": "200 mA/cm^2", "duration": "10 ms", "direction": "strip"},
        {"potential": "-0.1 V", "duration": "10 ms"},
    ]
}
APPLIED = [2000.0, 4000.0, -2000.0, None]


@pytest.fixture(scope="module")
def steps_run(tmp_path_factory, cache):
    outdir = shared_dir(tmp_path_factory, "steps") / "run"
    summary = run_single(parse_config(planar(cache, STEPS)), outdir, COMM)
    table = read_table(outdir / "timeseries.csv") if COMM.rank == 0 else None
    return summary, table


def test_protocol_run_lands_on_segments_and_reports_them(steps_run):
    """The run completes at the protocol's end (40 ms) with a step ending on every segment
    boundary; each row names the segment its step belongs to and its applied current
    (NaN while potentiostatic). Catches steps across a boundary, a segment index off by
    one at the boundary, or a strip reported with the plating sign."""
    summary, table = steps_run
    assert summary["status"] == "completed" and summary["t_final"] == pytest.approx(0.04, rel=1e-12)
    assert summary["critical_current_density_A_m2"] is None and summary["voltage_collapse_time_s"] is None
    if COMM.rank:
        return
    t, segment = table["t"], table["segment"]
    for end in (0.01, 0.02, 0.03, 0.04):
        assert np.min(np.abs(t - end)) <= 1e-12 * end, f"no step ends on {end}"
    starts = t - table["dt"]
    expected_segment = np.array([segment_index([0.01, 0.02, 0.03, 0.04], s) for s in starts])
    np.testing.assert_array_equal(segment, expected_segment)
    assert set(segment.astype(int)) == {0, 1, 2, 3}
    for k, applied in enumerate(APPLIED):
        rows = table["applied_current_density_A_m2"][segment == k]
        if applied is None:
            assert np.all(np.isnan(rows))
        else:
            np.testing.assert_array_equal(rows, applied)


def test_galvanostatic_current_equals_the_segment_to_solver_tolerance(steps_run):
    """Under galvanostatic control the measured electrode current density (the electronic
    flux through the electrode, from the charge residual) equals the segment's to 1e-6
    relative, at every step, including the first after each change. A Neumann term with the
    wrong sign or scale, or a current Constant not updated between segments, gives an
    error of order 1 (-1, 0.5 or 2 times the applied value), far outside this."""
    if COMM.rank:
        return
    _, table = steps_run
    galvanostatic = table["segment"] < 3
    applied = table["applied_current_density_A_m2"][galvanostatic]
    measured = table["electrode_current_density_A_m2"][galvanostatic]
    error = np.max(np.abs(measured - applied) / np.abs(applied))
    print(f"\n[galvanostatic] max relative error of the measured current {error:.2e}")
    assert error < 1e-6
    assert np.max(np.abs(-measured - applied) / np.abs(applied)) > 1  # the sign is tested
    # the metal takes exactly that charge: electrode = deposition (+ the anchor's share)
    deposition = table["deposition_current_A"] / LY
    np.testing.assert_allclose(table["electrode_current_density_A_m2"], deposition, rtol=1e-4, atol=1e-3)


def test_voltage_steps_follow_the_segments(steps_run):
    """The cell voltage (electrode minus reservoir) is negative while plating and larger
    in magnitude at the larger current, positive while stripping, and exactly the applied
    -0.1 V in the potentiostatic hold, where the electrode current is the one it draws."""
    if COMM.rank:
        return
    _, table = steps_run
    v, segment = table["cell_voltage_V"], table["segment"]
    mean = [float(np.mean(v[segment == k])) for k in range(4)]
    print(f"\n[voltage steps] mean V per segment {np.round(mean, 4)} V")
    assert np.all(v[segment == 0] < 0) and np.all(v[segment == 1] < 0) and np.all(v[segment == 2] > 0)
    assert np.max(v[segment == 1]) < np.min(v[segment == 0])  # |V| grew with the current
    np.testing.assert_allclose(v[segment == 3], -0.1, rtol=1e-12)
    assert np.all(table["electrode_current_density_A_m2"][segment == 3] > 0)  # -0.1 V plates


CCD = {"ramp": {"first": "200 mA/cm^2", "last": "1 A/cm^2", "step": "400 mA/cm^2", "hold": "50 ms",
                "plate_then_strip": False}}  # fmt: skip


def test_short_circuit_gives_the_critical_current_density(tmp_workdir, cache):
    """Staircase 0.2, 0.6, 1 A/cm^2, 50 ms each, of a planar front starting 100 nm from a
    200 nm gap. Faraday: the front advances i t / (n F c_m), 10.7 and 32 nm in the first
    two holds, so it reaches the reservoir in the third: the run stops there on a short
    circuit and reports that segment's 1 A/cm^2 as the critical current density; the
    voltage figure is written. Catches a CCD taken from another segment, a signed CCD, or
    a short that goes unreported."""
    cfg = parse_config(
        planar(cache, CCD, nuclei={"electrode_layer": "140 nm"}, output={"figures": True, "animation": False})
    )
    c_m = cfg.electrochemistry.c_metal
    advance = sum(i * 0.05 for i in (2000.0, 6000.0)) / (FARADAY * c_m)
    assert 140e-9 + advance < LX < 140e-9 + advance + 1e4 * 0.05 / (FARADAY * c_m)  # the design
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["status"] == "completed" and summary["reason"] == "short circuit"
    assert summary["short_circuit"] and 0.1 < summary["short_circuit_time_s"] < 0.15
    assert summary["critical_current_density_A_m2"] == pytest.approx(1e4, rel=1e-12)
    if COMM.rank == 0:
        on_disk = json.loads((tmp_workdir / "run" / "summary.json").read_text())
        assert on_disk["critical_current_density_A_m2"] == pytest.approx(1e4, rel=1e-12)
        assert (tmp_workdir / "run" / "figures" / "voltage.png").stat().st_size > 10_000


def test_voltage_collapse_stops_the_run_with_its_segment_current(tmp_workdir, cache, monkeypatch):
    """The criterion (tested above) firing in the second segment of the staircase stops
    the run with reason "voltage collapse", no short, its time in summary.json and the
    second segment's current as the CCD."""
    real = ElectrodeProtocol.voltage_collapsed
    calls = []

    def collapse_in_segment_1(self, k, voltage, state):
        calls.append(k)
        return real(self, k, voltage, state) or k == 1

    monkeypatch.setattr(ElectrodeProtocol, "voltage_collapsed", collapse_in_segment_1)
    cfg = parse_config(planar(cache, dict(CCD, voltage_collapse=0.5)))
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["reason"] == "voltage collapse" and not summary["short_circuit"]
    assert summary["voltage_collapse_time_s"] == pytest.approx(summary["t_final"], rel=1e-15)
    assert 0.05 < summary["t_final"] <= 0.1
    assert summary["critical_current_density_A_m2"] == pytest.approx(6000.0, rel=1e-12)
    assert calls[-1] == 1 and calls.count(1) == 1


def test_study_table_and_ccd_figure(tmp_workdir):
    """study.csv has the CCD column and ccd.png is drawn from the cases' summaries, with a
    case that did not fail (CCD null) among them."""
    from nzsp_fem.study import case_configs, write_ccd_figure, write_study_table

    cfg = parse_config(
        {
            "protocol": CCD,
            "study": {"parameter": "materials.grain_boundary.conductivity", "values": ["0.25 S/m", "2.5 S/m", 25]},
        }
    )
    if COMM.rank:
        return
    cases = case_configs(cfg)
    for (dirname, _, _), ccd in zip(cases, (6000.0, 2000.0, None)):
        (tmp_workdir / dirname).mkdir()
        (tmp_workdir / dirname / "summary.json").write_text(json.dumps({"critical_current_density_A_m2": ccd}))
    write_study_table(tmp_workdir, cfg, cases)
    with open(tmp_workdir / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["critical_current_density_A_m2"] for r in rows] == ["6000.0", "2000.0", ""]
    assert write_ccd_figure(tmp_workdir, cfg, cases).stat().st_size > 10_000


def test_example_ccd_study_config_is_valid():
    """The shipped example parses: 13 currents plated and stripped, 20 min each, and the
    run ends with the protocol (26 x 1200 s)."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "examples" / "ccd_study.yaml")
    assert len(electrode_segments(cfg)) == 26 and cfg.time.t_end == pytest.approx(26 * 1200.0, rel=1e-12)
    assert cfg.study.parameter == "materials.grain_boundary.conductivity"


def test_restart_in_the_middle_of_a_protocol(tmp_workdir, cache, steps_run):
    """Interrupted (time.max_steps) inside the second segment and resumed with --restart:
    the run finishes the protocol with every row in its segment, the current applied as
    before the interruption, and the same final state as the uninterrupted run. Catches a
    restart that starts over at segment 0's current, or moves the restored potentials as
    if a segment had just changed."""
    summary0, table0 = steps_run
    data = planar(cache, STEPS)
    # the steps the uninterrupted run took to mid-segment 1 (the same step sequence here)
    steps = COMM.bcast(int(np.sum(table0["t"] < 0.015)) if COMM.rank == 0 else None, root=0)
    first = run_single(parse_config(merge(data, {"time": {"max_steps": steps}})), tmp_workdir / "run", COMM)
    assert first["status"] == "interrupted" and 0.01 < first["t_final"] < 0.02
    summary = run_single(parse_config(data), tmp_workdir / "run", COMM, restart=True)
    assert summary["status"] == "completed" and summary["t_final"] == pytest.approx(0.04, rel=1e-12)
    assert summary["metal_fraction"] == pytest.approx(summary0["metal_fraction"], rel=1e-6)
    if COMM.rank:
        return
    table = read_table(tmp_workdir / "run" / "timeseries.csv")
    starts = table["t"] - table["dt"]
    np.testing.assert_array_equal(table["segment"], [segment_index([0.01, 0.02, 0.03, 0.04], s) for s in starts])
    galvanostatic = table["segment"] < 3
    applied = table["applied_current_density_A_m2"][galvanostatic]
    measured = table["electrode_current_density_A_m2"][galvanostatic]
    assert np.max(np.abs(measured - applied) / np.abs(applied)) < 1e-6
