"""How a run ends, and what it leaves behind (run.run_single, cli.main, run_record,
exit_codes): completed, diverged (exit 3), interrupted by time.max_steps (exit 4),
stopped at a short circuit; refusal to overwrite and --restart without a run (exit 2);
checkpoint_every_minutes; the columns and values of timeseries.csv and probes.csv; a
study with a diverged case.

Every run is tiny (0.4 x 0.2 um, 2 grains, 25-40 nm cells, no mechanics, 1-4 steps).
The in-process tests run serially and under ``mpirun -n 2`` (files are checked on rank
0); the ones that spawn ``python -m nzsp_fem`` are marked serial.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from support import assert_one_line_error, child_environment, merge, tiny_bicrystal

from mpi4py import MPI

from nzsp_fem import cli
from nzsp_fem.config import parse_config
from nzsp_fem.exit_codes import STATUS_EXIT, exit_code
from nzsp_fem.io.run_record import RunRecord
from nzsp_fem.io.rundir import TIMESERIES_COLUMNS
from nzsp_fem.run import run_single
from nzsp_fem.solver.coupled import CoupledSolver
from nzsp_fem.study import run_study

COMM = MPI.COMM_WORLD
REPO = Path(__file__).resolve().parents[1]
US = 1e-6

#: timeseries.csv as the README's Outputs table lists it, in order (written out by hand).
README_TIMESERIES = [
    "t",
    "dt",
    "newton_iterations",
    "linear_iterations",
    "error_estimate",
    "interface_change",
    "segment",
    "applied_current_density_A_m2",
    "charge_passed_C",
    "metal_fraction",
    "connected_penetration_m",
    "gb_penetration_m",
    "planar_advance_m",
    "gb_metal_share",
    "branch_count",
    "gb_phi_i_span_V",
    "max_interface_current_density_A_m2",
    "isolated_metal_change",
    "electrode_current_A",
    "electrode_current_density_A_m2",
    "cell_voltage_V",
    "reservoir_current_A",
    "deposition_current_A",
    "anchor_current_A",
    "max_current_density_A_m2",
    "max_von_mises_Pa",
    "max_plastic_strain",
    "phi_gb_min_V",
    "phi_gb_max_V",
    "eta_min",
    "eta_max",
    "c_min",
    "c_max",
    "total_sodium_mol",
    "nuclei_grain",
    "nuclei_gb",
]
#: probes.csv per probe in the two-potential model: |i|, |i_e|, phi_i, phi_e (README).
PROBE_QUANTITIES = ["current_density_magnitude", "electronic_current_density_magnitude", "phi_i_V", "phi_e_V"]


# Helpers ------------------------------------------------------------------------------


def _deep_update(data: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            _deep_update(data[key], value)
        else:
            data[key] = value
    return data


def tiny(cache: Path, **changes) -> dict:
    """A 4 us run on a 0.4 x 0.2 um bicrystal with a 40 nm nucleus on the left electrode;
    fixed dt = 1 us, no mechanics, no figures, no checkpoints but the final one."""
    data = merge(
        tiny_bicrystal(cache),
        {
            "name": "tiny",
            "time": {"t_end": "4 us", "n_outputs": 1},
            "output": {"figures": False, "verbosity": 0, "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0},
        },
    )
    return _deep_update(copy.deepcopy(data), changes)


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A directory that is the same on every rank (rank 0's)."""
    path = str(tmp_path_factory.mktemp(name)) if COMM.rank == 0 else None
    return Path(COMM.bcast(path, root=0))


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # An empty cell is a value that does not apply to that row (no error estimate yet).
    values = np.array([[float(v or "nan") for v in r] for r in rows[1:]], dtype=float).reshape(
        len(rows) - 1, len(rows[0])
    )
    return rows[0], values


def column(path: Path, name: str) -> np.ndarray:
    header, values = read_csv(path)
    return values[:, header.index(name)]


def summary_of(outdir: Path) -> dict:
    return json.loads((outdir / "summary.json").read_text())


def field_times(outdir: Path) -> list[float]:
    """The times of the VTX series fields/nodal.bp (ADIOS2 variable "step")."""
    import adios2

    from nzsp_fem.io import checkpoint  # noqa: F401  (selects adios2's MPI bindings first)

    with adios2.FileReader(str(outdir / "fields" / "nodal.bp")) as reader:
        n = int(reader.available_variables()["step"]["AvailableStepsCount"])
        return [float(t) for t in np.atleast_1d(reader.read("step", step_selection=[0, n]))]


def checkpoint_names(outdir: Path) -> list[str]:
    directory = outdir / "checkpoints"
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("checkpoint-"))


def latest_checkpoint_meta(outdir: Path) -> dict:
    """The run's metadata stored with the checkpoint that checkpoints/latest names."""
    name = (outdir / "checkpoints" / "latest").read_text().strip()
    return json.loads((outdir / "checkpoints" / name / "metadata.json").read_text())["metadata"]


class CheckpointSpy:
    """Wraps RunRecord.checkpoint: the (steps, t) of every checkpoint the loop writes."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = RunRecord.checkpoint

        def spy(record, run_state):
            self.calls.append((run_state["steps"], run_state["t"]))
            return real(record, run_state)

        monkeypatch.setattr(RunRecord, "checkpoint", spy)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nzsp_fem", *args],
        cwd=cwd,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One mesh cache for the module, so each geometry is meshed once."""
    return shared_dir(tmp_path_factory, "meshes")


# A completed run: timeseries.csv, probes.csv, output times, checkpoint_every_minutes -----

COMPLETED = {
    # dt 1 us growing by 1.5 to dt_max 1.5 us, outputs at 2 and 4 us. By the step rules
    # (every solve is easy): 1 (t=1), 1 landing on 2 (running dt 1.5 kept), 1.5 (t=3.5),
    # 0.5 landing on 4.
    "time": {"t_end": "4 us", "dt_initial": "1 us", "dt_max": "1.5 us", "growth_factor": 1.5, "n_outputs": 2},
    "output": {
        "checkpoint_every_minutes": 1e-6,  # 60 us of wall time: due after every step
        "checkpoint_every_steps": 0,
        "probes": [
            {"name": "gb", "position": ["0.2 um", "0.1 um"]},
            {"name": "grain", "position": ["0.3 um", "0.05 um"]},
        ],
    },
}
EXPECTED_T = [1 * US, 2 * US, 3.5 * US, 4 * US]
EXPECTED_DT = [1 * US, 1 * US, 1.5 * US, 0.5 * US]


@pytest.fixture(scope="module")
def completed(tmp_path_factory, cache):
    outdir = shared_dir(tmp_path_factory, "completed") / "run"
    with pytest.MonkeyPatch.context() as mp:
        spy = CheckpointSpy(mp)
        summary = run_single(parse_config(tiny(cache, **COMPLETED)), outdir, COMM)
    return outdir, summary, spy.calls


def test_completed_run_summary(completed):
    """Catches a completed run that reports another status, a reason, a t_final short of
    t_end, a wrong step count or a spurious short circuit (the nucleus reaches 40 nm of
    the 400 nm)."""
    _, summary, _ = completed
    assert summary["status"] == "completed" and summary["reason"] is None
    assert summary["t_final"] == pytest.approx(4 * US, rel=1e-12)
    assert summary["steps"] == 4
    assert summary["short_circuit"] is False and summary["short_circuit_time_s"] is None
    assert summary["mpi_size"] == COMM.size
    assert STATUS_EXIT[summary["status"]] == 0


def test_timeseries_columns_and_values(completed):
    """Catches a lost, renamed or reordered column of timeseries.csv (against the README's
    list written out here), a summary-only value leaking into it, a row per attempt instead
    of per accepted step, dt that does not add up to t, and steps that miss the output
    times (t = 1, 2, 3.5, 4 us worked out by hand from the step rules)."""
    if COMM.rank:
        return
    outdir, summary, _ = completed
    header, rows = read_csv(outdir / "timeseries.csv")
    assert header == README_TIMESERIES
    assert header == TIMESERIES_COLUMNS
    assert "integral_eta" not in header and "status" not in header
    assert rows.shape == (summary["steps"], len(header))
    data = dict(zip(header, rows.T))
    # no protocol: one potentiostatic segment, which applies no current
    assert np.all(data["segment"] == 0) and np.all(np.isnan(data.pop("applied_current_density_A_m2")))
    # empty where no estimate applies (no earlier step to extrapolate from); its own tests
    estimate = data.pop("error_estimate")
    assert np.all(estimate[np.isfinite(estimate)] >= 0)
    # Null by definition here (README, morphology measures): no metal was isolated at the
    # start, and the GB (x = 0.2 um, parallel to the electrode) has no metal interface.
    assert np.all(np.isnan(data.pop("isolated_metal_change")))
    assert np.all(np.isnan(data.pop("max_interface_current_density_A_m2")))
    assert all(np.all(np.isfinite(v)) for v in data.values())
    np.testing.assert_allclose(data["cell_voltage_V"], -0.45, rtol=1e-12)
    newton = data["newton_iterations"]
    assert np.all(newton <= 5), f"the expected dt sequence assumes easy solves, got {newton}"
    assert newton.sum() == summary["newton_iterations"]
    t, dt = data["t"], data["dt"]
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.cumsum(dt), t, rtol=1e-12)
    np.testing.assert_allclose(t, EXPECTED_T, rtol=1e-12)
    np.testing.assert_allclose(dt, EXPECTED_DT, rtol=1e-12)
    assert t[-1] == pytest.approx(summary["t_final"], rel=1e-15)
    # physical sanity of a few columns
    assert np.all((data["metal_fraction"] > 0) & (data["metal_fraction"] < 1))
    assert np.all(data["eta_min"] <= data["eta_max"]) and np.all(data["c_min"] <= data["c_max"])
    assert np.all(data["max_von_mises_Pa"] == 0)  # mechanics off
    assert rows[-1, header.index("metal_fraction")] == pytest.approx(summary["metal_fraction"], rel=1e-12)


def test_probes_csv_rows_and_columns(completed):
    """Catches probes.csv without the t = 0 row, with a row per attempt or missing a step,
    rows at other times than timeseries.csv, or columns not named <probe>_<quantity> for
    each configured probe."""
    if COMM.rank:
        return
    outdir, summary, _ = completed
    header, rows = read_csv(outdir / "probes.csv")
    assert header == ["t"] + [f"{p}_{q}" for p in ("gb", "grain") for q in PROBE_QUANTITIES]
    assert rows.shape[0] == summary["steps"] + 1
    np.testing.assert_allclose(rows[:, 0], [0.0] + EXPECTED_T, rtol=1e-12, atol=0)
    np.testing.assert_allclose(rows[1:, 0], column(outdir / "timeseries.csv", "t"), rtol=1e-15)
    assert np.all(np.isfinite(rows))
    # the electrode is at -0.45 V: phi_e in the electrolyte lies between it and 0
    phi_e = rows[:, header.index("gb_phi_e_V")]
    assert np.all((phi_e >= -0.45 - 1e-9) & (phi_e <= 1e-9))


def test_fields_written_at_t0_and_each_output_time(completed):
    """Catches VTX output written at a step near, not on, an output time, or skipped."""
    if COMM.rank:
        return
    np.testing.assert_allclose(field_times(completed[0]), [0.0, 2 * US, 4 * US], rtol=1e-12, atol=0)


def test_checkpoint_every_minutes_writes_after_every_step(completed):
    """Catches checkpoint_every_minutes being ignored (1e-6 min = 60 us of wall time is due
    after every step) and a final checkpoint that is not the last step. Only the last two
    are kept, and the stored dt is the running one."""
    outdir, summary, calls = completed
    steps = [s for s, _ in calls]
    assert sorted(set(steps)) == [1, 2, 3, 4]
    assert steps[-1] == summary["steps"] and calls[-1][1] == pytest.approx(4 * US, rel=1e-12)
    if COMM.rank == 0:
        assert checkpoint_names(outdir) == ["checkpoint-3", "checkpoint-4"]
        meta = latest_checkpoint_meta(outdir)
        assert meta["run"]["steps"] == 4 and meta["run"]["t"] == pytest.approx(4 * US, rel=1e-12)
        # a restart resumes with the running dt (1.5 us), not the 0.5 us landing step
        assert meta["run"]["controller_dt"] == pytest.approx(1.5 * US, rel=1e-12)


def test_checkpoint_every_minutes_counts_wall_minutes(tmp_workdir, cache, monkeypatch):
    """A fake wall clock in the loop that advances 40 s per solve, checkpoints every 1
    minute: due when more than 60 s have passed since the last one, i.e. after steps 2
    (80 s) and 4 (80 s later), then the final one. Catches the interval read in seconds
    (every step) or hours (never), and a timer not restarted after a checkpoint (then
    steps 2, 3 and 4)."""
    import nzsp_fem.run

    clock = [0.0]
    monkeypatch.setattr(nzsp_fem.run, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    real = CoupledSolver.try_step

    def slow_step(self, t, dt):
        clock[0] += 40.0
        return real(self, t, dt)

    monkeypatch.setattr(CoupledSolver, "try_step", slow_step)
    spy = CheckpointSpy(monkeypatch)
    cfg = parse_config(tiny(cache, output={"checkpoint_every_minutes": 1.0}))
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["steps"] == 4
    steps = [s for s, _ in spy.calls]
    assert sorted(set(steps)) == [2, 4] and steps[-1] == 4


def test_no_periodic_checkpoints_only_the_final_one(tmp_workdir, cache, monkeypatch):
    """Catches checkpoint_every_steps = 0 or checkpoint_every_minutes = 0 read as "every
    time" (0 divides everything; any wall time exceeds 0 minutes): only the final
    checkpoint, at the last step, is written."""
    spy = CheckpointSpy(monkeypatch)
    cfg = parse_config(tiny(cache, time={"t_end": "2 us"}))
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert spy.calls == [(2, pytest.approx(2 * US, rel=1e-12))]
    if COMM.rank == 0:
        assert checkpoint_names(tmp_workdir / "run") == ["checkpoint-2"]


def test_checkpoint_every_steps(tmp_workdir, cache, monkeypatch):
    """Catches checkpoint_every_steps counted from another origin (steps 1, 3 instead of
    2, 4) or ignored: every 2nd step of 3, then the final one at step 3."""
    spy = CheckpointSpy(monkeypatch)
    cfg = parse_config(tiny(cache, time={"t_end": "3 us"}, output={"checkpoint_every_steps": 2}))
    run_single(cfg, tmp_workdir / "run", COMM)
    assert [s for s, _ in spy.calls] == [2, 3]


# Diverged ---------------------------------------------------------------------------


def test_diverged_after_accepted_steps_keeps_them(tmp_workdir, cache, monkeypatch):
    """Steps 1-3 converge, then every attempt fails (injected after the real solve). The
    loop must retry with dt 1, 0.5, 0.25 us (cut 0.5, dt_min 0.25 us) and stop before
    0.125: exit 3, status diverged with the solver's reason, the three accepted rows kept
    in timeseries.csv, the fields written at the stop time, and no checkpoint of the
    unconverged attempt (the last one is the periodic one of step 2). Catches a loop that
    retries forever or below dt_min, stops on the first failure, reports completed, loses
    the computed rows, or exits 0."""
    attempts = []
    real = CoupledSolver.try_step

    def fail_after_3us(self, t, dt):
        report = real(self, t, dt)
        if t >= 3 * US * (1 - 1e-9):
            attempts.append(dt)
            if report.converged:
                self.problem.rollback()
                report.converged, report.reason_name = False, "INJECTED_FAILURE"
        return report

    monkeypatch.setattr(CoupledSolver, "try_step", fail_after_3us)
    spy = CheckpointSpy(monkeypatch)
    config = tiny(cache, time={"dt_min": "0.25 us"}, output={"checkpoint_every_steps": 2})
    path = tmp_workdir / "diverge.yaml"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump(config))
    COMM.barrier()
    outdir = tmp_workdir / "run"
    assert cli.main([str(path), "-o", str(outdir)]) == 3
    np.testing.assert_allclose(attempts, [1 * US, 0.5 * US, 0.25 * US], rtol=1e-12)
    assert [s for s, _ in spy.calls] == [2]
    if COMM.rank:
        return
    summary = summary_of(outdir)
    assert summary["status"] == "diverged" and summary["reason"] == "INJECTED_FAILURE"
    assert summary["steps"] == 3 and summary["t_final"] == pytest.approx(3 * US, rel=1e-12)
    np.testing.assert_allclose(column(outdir / "timeseries.csv", "t"), [1 * US, 2 * US, 3 * US], rtol=1e-12)
    assert checkpoint_names(outdir) == ["checkpoint-2"]
    np.testing.assert_allclose(field_times(outdir), [0.0, 3 * US], rtol=1e-12, atol=0)
    assert (outdir / "final_state.vtu").exists()


@pytest.mark.serial
def test_solver_divergence_exits_3_and_restart_refuses(tmp_workdir, cache):
    """A real divergence: Newton limited to 1 iteration (a step needs 2) fails at dt 1,
    0.5, 0.25 us with dt_min 0.25 us. The process exits 3 with status diverged and SNES's
    reason, an empty time series (header only) and no checkpoint; --restart on it is a
    one-line error (exit 2), not a traceback. Catches an exit status taken from elsewhere
    than the summary, a diverged run that writes a checkpoint of the failed state, and a
    restart that silently starts from scratch."""
    config = tiny(cache, time={"dt_min": "0.25 us"}, solver={"max_it": 1})
    (tmp_workdir / "diverge.yaml").write_text(yaml.safe_dump(config))
    outdir = tmp_workdir / "run"
    r = run_cli(["diverge.yaml", "-o", str(outdir)], tmp_workdir)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    summary = summary_of(outdir)
    assert summary["status"] == "diverged" and summary["reason"] == "DIVERGED_MAX_IT"
    assert summary["steps"] == 0 and summary["t_final"] == 0.0
    header, rows = read_csv(outdir / "timeseries.csv")
    assert header == README_TIMESERIES and rows.shape[0] == 0
    assert checkpoint_names(outdir) == []

    before = snapshot(outdir)
    r = run_cli(["diverge.yaml", "-o", str(outdir), "--restart"], tmp_workdir)
    assert_one_line_error(r, "--restart", "no complete checkpoint")
    after = snapshot(outdir)
    for name in ("summary.json", "timeseries.csv", "final_state.vtu"):
        assert after[name] == before[name], name


# max_steps, overwrite refusal, --restart without a run -------------------------------


@pytest.mark.serial
def test_max_steps_interrupts_with_usable_checkpoint_and_refuses_overwrite(tmp_workdir, cache):
    """time.max_steps 2 of 4: exit 4, status interrupted, reason "max_steps reached",
    t_final 2 us, fields and a checkpoint at step 2. A second run without --overwrite is
    a one-line error (exit 2) that leaves every file as it was. --restart with a larger
    max_steps then completes from the checkpoint: steps 3 and 4 only, each row once.
    Catches max_steps ignored or off by one, an interrupted run without a final
    checkpoint, a rerun that clobbers results, and a checkpoint that cannot be resumed."""
    (tmp_workdir / "short.yaml").write_text(yaml.safe_dump(tiny(cache, time={"max_steps": 2})))
    outdir = tmp_workdir / "run"
    r = run_cli(["short.yaml", "-o", str(outdir)], tmp_workdir)
    assert r.returncode == 4, r.stdout + r.stderr
    summary = summary_of(outdir)
    assert summary["status"] == "interrupted" and summary["reason"] == "max_steps reached"
    assert summary["steps"] == 2 and summary["t_final"] == pytest.approx(2 * US, rel=1e-12)
    np.testing.assert_allclose(column(outdir / "timeseries.csv", "t"), [1 * US, 2 * US], rtol=1e-12)
    np.testing.assert_allclose(field_times(outdir), [0.0, 2 * US], rtol=1e-12, atol=0)
    assert checkpoint_names(outdir) == ["checkpoint-2"]
    meta = latest_checkpoint_meta(outdir)
    assert meta["run"]["steps"] == 2 and meta["run"]["t"] == pytest.approx(2 * US, rel=1e-12)

    before = snapshot(outdir)
    r = run_cli(["short.yaml", "-o", str(outdir)], tmp_workdir)
    assert_one_line_error(r, str(outdir), "--overwrite")
    assert snapshot(outdir) == before

    r = run_cli(["short.yaml", "-o", str(outdir), "--restart", "--set", "time.max_steps=100"], tmp_workdir)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = summary_of(outdir)
    assert summary["status"] == "completed" and summary["restarts"] == 1
    assert summary["steps"] == 4 and summary["t_final"] == pytest.approx(4 * US, rel=1e-12)
    np.testing.assert_allclose(column(outdir / "timeseries.csv", "t"), [1 * US, 2 * US, 3 * US, 4 * US], rtol=1e-12)
    assert "restarted from checkpoint-2" in (outdir / "run.log").read_text()


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_restart_without_a_run_is_a_one_line_error(tmp_workdir, cache, capsys, state):
    """Catches --restart on a nonexistent or empty directory starting a fresh run (or
    crashing): exit 2, one line naming the directory, and nothing created. (In process:
    cli.main returns the exit status that `python -m nzsp_fem` exits with.)"""
    path, outdir = tmp_workdir / "tiny.yaml", tmp_workdir / "run"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump(tiny(cache)))
        if state == "empty":
            outdir.mkdir()
    COMM.barrier()
    capsys.readouterr()
    assert cli.main([str(path), "-o", str(outdir), "--restart"]) == 2
    out, err = capsys.readouterr()
    if COMM.rank:
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nzsp-fem: error: --restart"), err
    assert str(outdir) in lines[0] and "no run to resume" in lines[0], lines[0]
    assert out == ""
    assert (not outdir.exists()) if state == "missing" else list(outdir.iterdir()) == []


# Short circuit ---------------------------------------------------------------------

# A Na layer 0.5 um thick on a 0.4 um wide domain: metal from electrode to electrode.
SHORTED = {"nuclei": {"electrode_layer": "0.5 um"}, "time": {"t_end": "3 us"}}


def test_short_circuit_stops_after_the_first_step(tmp_workdir, cache):
    """Metal connects both electrodes from the start: the first accepted step (t = 1 us)
    detects it, the run stops there with status completed (exit 0), reason "short
    circuit", short_circuit true at 1 us. Catches a missed short circuit, a run that
    carries on to t_end, or one that reports diverged/interrupted."""
    path = tmp_workdir / "shorted.yaml"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump(tiny(cache, **SHORTED)))
    COMM.barrier()
    outdir = tmp_workdir / "run"
    assert cli.main([str(path), "-o", str(outdir)]) == 0
    if COMM.rank:
        return
    summary = summary_of(outdir)
    assert summary["status"] == "completed" and summary["reason"] == "short circuit"
    assert summary["short_circuit"] is True
    assert summary["short_circuit_time_s"] == pytest.approx(1 * US, rel=1e-12)
    assert summary["steps"] == 1 and summary["t_final"] == pytest.approx(1 * US, rel=1e-12)
    assert column(outdir / "timeseries.csv", "t") == pytest.approx([1 * US], rel=1e-12)
    assert checkpoint_names(outdir) == ["checkpoint-1"]


def test_short_circuit_recorded_once_when_not_stopping(tmp_workdir, cache):
    """stop_at_short_circuit false: the run goes on to t_end (3 steps), still completed,
    and short_circuit_time_s stays the first step's t (1 us). Catches the flag being
    ignored and a detection time overwritten by later steps."""
    cfg = parse_config(tiny(cache, **_deep_update(copy.deepcopy(SHORTED), {"time": {"stop_at_short_circuit": False}})))
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["status"] == "completed" and summary["reason"] is None
    assert summary["steps"] == 3 and summary["t_final"] == pytest.approx(3 * US, rel=1e-12)
    assert summary["short_circuit"] is True
    assert summary["short_circuit_time_s"] == pytest.approx(1 * US, rel=1e-12)


def test_deep_but_unconnected_metal_is_no_short_circuit(tmp_workdir, cache):
    """A 0.3 um layer in a 0.4 um domain: deeper than half the width, but 100 nm (five
    interface widths) short of the counter electrode. Catches a short circuit decided by
    penetration depth alone instead of connectivity to x = Lx."""
    cfg = parse_config(tiny(cache, nuclei={"electrode_layer": "0.3 um"}, time={"t_end": "2 us"}))
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["connected_penetration_m"] > 0.2 * US  # the depth gate alone would fire
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["short_circuit"] is False and summary["short_circuit_time_s"] is None


# Exit status of several runs and a study with a diverged case ---------------------------


@pytest.mark.parametrize(
    "statuses, code",
    [
        (["completed"], 0),
        (["completed", "completed"], 0),
        (["diverged"], 3),
        (["interrupted"], 4),
        (["completed", "interrupted"], 4),
        (["interrupted", "diverged", "completed"], 3),
    ],
)
def test_exit_code_worst_status_wins(statuses, code):
    """Catches a study exit status taken from its first or last case, or "interrupted"
    winning over "diverged" (README: 3 diverged, 4 interrupted)."""
    assert exit_code(statuses) == code


def test_study_with_a_diverged_case(tmp_workdir, cache):
    """Two cases, solver.max_it 25 and 1 (the second cannot converge a step): the study
    returns exit status 3 and study.csv says completed / diverged per case. Catches a
    study that reports 0 when a case diverged, or a status column that is not the case's."""
    config = tiny(
        cache,
        name="study-diverged",
        time={"t_end": "2 us", "dt_min": "0.25 us"},
        study={"parameter": "solver.max_it", "values": [25, 1]},
    )
    outdir = tmp_workdir / "study"
    assert run_study(parse_config(config), outdir) == 3
    if COMM.rank:
        return
    with open(outdir / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["solver.max_it"], r["status"]) for r in rows] == [("25", "completed"), ("1", "diverged")]
    assert [int(r["steps"]) for r in rows] == [2, 0]
    for r in rows:
        assert summary_of(outdir / r["case"])["status"] == r["status"]


@pytest.mark.skipif(COMM.size != 2, reason="needs mpirun -n 2")
def test_study_case_on_two_ranks_matches_serial(tmp_workdir, cache):
    """ranks_per_case 2 under mpirun -n 2: both ranks work on every case (mpi_size 2 in
    each summary), and each case's results equal the same case run on one rank, within
    solver tolerance. Catches cases split over groups when ranks_per_case asks for all
    ranks, and partition-dependent results."""
    values = ["0.25 S/m", "25 S/m"]
    config = tiny(
        cache,
        name="study-2ranks",
        time={"t_end": "2 us"},
        solver={"rtol": 1e-8, "atol": 1e-10},
        study={"parameter": "materials.grain_boundary.conductivity", "values": values, "ranks_per_case": 2},
    )
    outdir = tmp_workdir / "study"
    assert run_study(parse_config(config), outdir) == 0
    serial = []
    if COMM.rank == 0:
        for k, value in enumerate(values):
            case = tiny(cache, time={"t_end": "2 us"}, solver={"rtol": 1e-8, "atol": 1e-10})
            case["materials"] = {"grain_boundary": {"conductivity": value}}
            serial.append(run_single(parse_config(case), tmp_workdir / f"serial-{k}", MPI.COMM_SELF))
    COMM.barrier()
    if COMM.rank:
        return
    with open(outdir / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row, ref in zip(rows, serial):
        parallel = summary_of(outdir / row["case"])
        assert parallel["mpi_size"] == 2 and ref["mpi_size"] == 1
        assert parallel["status"] == ref["status"] == "completed"
        assert parallel["steps"] == ref["steps"] and parallel["dofs"] == ref["dofs"]
        for key in ("integral_eta", "integral_c", "integral_phi", "electrode_current_A", "metal_fraction"):
            assert parallel[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-30), key
    # the cases differ (the parameter reached them): the GB potential drop changes by ~3 %
    phi = [summary_of(outdir / r["case"])["integral_phi"] for r in rows]
    assert phi[0] != pytest.approx(phi[1], rel=1e-2)
