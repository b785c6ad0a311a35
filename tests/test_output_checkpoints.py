"""Checkpoints at output times (``output.checkpoint_at_output_times``, on by default).

The periodic checkpoints default to every 100 steps or 30 minutes, so a short run killed
hard (SIGKILL, an out-of-memory kill, a node failure) before either left nothing to
restart from. These tests use the periodic defaults and a 0.4 x 0.2 um bicrystal without
mechanics, fixed dt = 1 us, outputs at 2, 4 and 6 us.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import child_environment, merge, tiny_bicrystal

from mpi4py import MPI

from nzsp_fem.config import parse_config
from nzsp_fem.io.run_record import RunRecord
from nzsp_fem.run import run_single

COMM = MPI.COMM_WORLD
US = 1e-6


def config(cache: Path, **output) -> dict:
    return merge(
        tiny_bicrystal(cache),
        {
            "name": "outputs",
            "time": {"t_end": "6 us", "n_outputs": 3},
            # the periodic defaults, written out: neither is due in 6 steps
            "output": {"checkpoint_every_steps": 100, "checkpoint_every_minutes": 30, "figures": False, "verbosity": 0}
            | output,
        },
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = str(tmp_path_factory.mktemp("meshes")) if COMM.rank == 0 else None
    return Path(COMM.bcast(path, root=0))


def checkpoint_steps(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = RunRecord.checkpoint

    def spy(record, run_state):
        calls.append(run_state["steps"])
        return real(record, run_state)

    monkeypatch.setattr(RunRecord, "checkpoint", spy)
    return calls


@pytest.mark.parametrize("switch, expected", [(True, [2, 4, 6]), (False, [6])])
def test_checkpoint_at_each_output_time(switch, expected, tmp_workdir, cache, monkeypatch):
    """On: one checkpoint at each output time (steps 2 and 4) and the final one (step 6,
    the last output time, written once). Off: the final one only. Catches the switch
    ignored either way and the last output time checkpointed twice."""
    calls = checkpoint_steps(monkeypatch)
    cfg = parse_config(config(cache, checkpoint_at_output_times=switch))
    summary = run_single(cfg, tmp_workdir / "run", COMM)
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert calls == expected


#: A run whose process kills itself with SIGKILL when it starts the step after t = 5 us:
#: like a batch system's hard kill, nothing after that point runs (no final checkpoint).
KILLED_CHILD = """
import os, signal, sys
from nzsp_fem import cli
from nzsp_fem.solver.coupled import CoupledSolver

real = CoupledSolver.try_step

def try_step(self, t, dt):
    if t > 4.5e-6:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, t, dt)

CoupledSolver.try_step = try_step
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.serial
def test_hard_kill_before_periodic_checkpoint_restarts_from_last_output(tmp_workdir, cache):
    """Killed at step 6 of a run whose periodic checkpoints are never due: the checkpoint
    of the last output time (4 us, step 4) is there, and --restart resumes from it and
    completes with each step once in timeseries.csv (the killed run's 5 us row is
    recomputed, not kept twice). Without checkpoints at output times --restart finds
    nothing."""
    path = tmp_workdir / "run.yaml"
    path.write_text(yaml.safe_dump(config(cache)))
    outdir = tmp_workdir / "out"
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, *args], cwd=tmp_workdir, env=child_environment(), capture_output=True, text=True, timeout=300
    )
    killed = run("-c", KILLED_CHILD, str(path), "-o", str(outdir))
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert not (outdir / "summary.json").exists()
    latest = (outdir / "checkpoints" / "latest").read_text().strip()
    assert latest == "checkpoint-4"
    meta = json.loads((outdir / "checkpoints" / latest / "metadata.json").read_text())["metadata"]
    assert meta["run"]["t"] == pytest.approx(4 * US, rel=1e-12)

    restarted = run("-m", "nzsp_fem", str(path), "-o", str(outdir), "--restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6 and summary["restarts"] == 1
    assert "restarted from checkpoint-4: t=4.000000e-06 s" in (outdir / "run.log").read_text()
    with open(outdir / "timeseries.csv", newline="") as f:
        times = [float(row["t"]) for row in csv.DictReader(f)]
    assert times == pytest.approx([k * US for k in range(1, 7)], rel=1e-9)


def test_restart_reads_checkpoint_with_the_old_potential_name(tmp_workdir, cache):
    """Checkpoints written before the ionic potential was named phi_i record it as "phi" in
    their field layout. Two copies of a 4 us run's checkpoints, one with its layout renamed
    back to "phi", each restarted to 6 us: both resume from step 4 and end in the same
    state (bit for bit on one rank; two restarts on two ranks differ by ~1e-15, so 1e-12).
    Catches the old name refused as another layout (--restart error) and an old name
    mapped to any other field (phi_e: the layouts differ again)."""
    first = parse_config(merge(config(cache), {"time": {"t_end": "4 us", "n_outputs": 2}}))
    assert run_single(first, tmp_workdir / "new", COMM)["steps"] == 4
    if COMM.rank == 0:
        shutil.copytree(tmp_workdir / "new", tmp_workdir / "old")
        for meta_path in (tmp_workdir / "old" / "checkpoints").glob("checkpoint-*/metadata.json"):
            manifest = json.loads(meta_path.read_text())
            layout = manifest["metadata"]["fields"]
            assert [f[0] for f in layout].count("phi_i") == 1, layout
            manifest["metadata"]["fields"] = [["phi", *f[1:]] if f[0] == "phi_i" else f for f in layout]
            meta_path.write_text(json.dumps(manifest))
    COMM.barrier()
    longer = parse_config(config(cache))
    summaries = {name: run_single(longer, tmp_workdir / name, COMM, restart=True) for name in ("new", "old")}
    for summary in summaries.values():
        assert summary["status"] == "completed" and summary["steps"] == 6 and summary["restarts"] == 1
    keys = [k for k in summaries["new"] if k.startswith("integral_")]
    assert keys
    assert {k: summaries["old"][k] for k in keys} == pytest.approx({k: summaries["new"][k] for k in keys}, rel=1e-12)
