"""Fault injection (issue 18): what a run does when its job is killed, a checkpoint is cut
short, the disk fills, the output directory vanishes or a second run starts beside it.

Every run is the command a user types (``python -m nzsp_fem``, ``mpirun``), on a 0.4 x
0.2 um bicrystal without mechanics: fixed dt = 1 us, 40 steps, outputs at 10, 20, 30 and
40 us. A fault is planted by a small wrapper around ``cli.main`` (KILLED_CHILD below)
where it must strike at one exact point of the run. Each child has a timeout, so a run
that hangs (the old behaviour after a SIGKILL) fails the test instead of blocking it.
Serial: each test starts processes of its own; the post-processing time limit test at
the end also runs in process on 2 ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import assert_one_line_error, child_environment, merge, tiny_bicrystal

from mpi4py import MPI

from nzsp_fem.config import parse_config
from nzsp_fem.io import postprocess
from nzsp_fem.io.checkpoint_files import verify
from nzsp_fem.run import run_single

COMM = MPI.COMM_WORLD
US = 1e-6
STEPS = 40
#: A hang becomes a failure after this long; the runs themselves take 5-30 s.
TIMEOUT = 240


def config(cache: Path, **output) -> dict:
    return merge(
        tiny_bicrystal(cache),
        {
            "name": "faults",
            "time": {"t_end": f"{STEPS} us", "n_outputs": 4},
            "solver": {"rtol": 1e-12, "atol": 1e-10},
            "output": {"verbosity": 0} | output,
        },
    )


#: ``python -c KILLED_CHILD FAULT STEP CONFIG -o OUT``: the CLI with FAULT planted at STEP.
KILLED_CHILD = r"""
import os, resource, shutil, signal, sys
from pathlib import Path
from nzsp_fem import cli
from nzsp_fem.io import checkpoint as ckpt
from nzsp_fem.solver.coupled import CoupledSolver

fault, at = sys.argv[1], int(sys.argv[2])
args = sys.argv[3:]
outdir = Path(args[args.index("-o") + 1])
real_step, real_write = CoupledSolver.try_step, ckpt._write_fields

def try_step(self, t, dt):
    k = round(t / 1e-6)  # steps done so far
    CoupledSolver.t_last = k + 1
    if k == at and fault == "fill-disk":
        with open(outdir.parent / "ballast", "wb") as f:  # until the file system is full
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
    if k == at and fault == "remove-outdir":
        shutil.rmtree(outdir)
    if k == at and fault == "file-size-limit":
        # like a quota: no file may grow past the VTX data written so far
        limit = (outdir / "fields" / "nodal.bp" / "data.0").stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return real_step(self, t, dt)

if fault == "no-room-for-fields":
    from nzsp_fem.io import rundir, storage

    def require_space(path, needed, what):
        if "fields" in what and CoupledSolver.t_last >= at - 0.5:
            raise storage.NoSpace(f"{path}: No space left on device (simulated)")

    rundir.require_space = require_space
CoupledSolver.t_last = 0.0


def write_fields(path, *a, **kw):
    real_write(path, *a, **kw)
    if fault == "kill-in-checkpoint" and f"checkpoint.tmp-{at}" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)  # data written, not yet published

CoupledSolver.try_step = try_step
ckpt._write_fields = write_fields
sys.exit(cli.main(args))
"""


def command(cfg: Path, outdir: Path, *extra, ranks: int = 1, fault: tuple | None = None) -> list[str]:
    if fault:
        base = [sys.executable, "-c", KILLED_CHILD, fault[0], str(fault[1]), str(cfg), "-o", str(outdir), *extra]
    else:
        base = [sys.executable, "-m", "nzsp_fem", str(cfg), "-o", str(outdir), *extra]
    return (["mpirun", "-n", str(ranks)] + base) if ranks > 1 else base


def run(cfg, outdir, *extra, ranks=1, fault=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(cfg, outdir, *extra, ranks=ranks, fault=fault),
        env=env or child_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def start(cfg, outdir, *extra, ranks=1, fault=None) -> subprocess.Popen:
    return subprocess.Popen(
        command(cfg, outdir, *extra, ranks=ranks, fault=fault),
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, outdir: Path, step: int) -> None:
    latest = outdir / "checkpoints" / "latest"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        name = latest.read_text().strip() if latest.exists() else ""
        if name.startswith("checkpoint-") and int(name.split("-")[1]) >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint {step} before the run ended: {proc.poll()}")


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL to every process of the job, as a batch system does at its hard limit
    (mpirun's ranks are in its session, not in its process group)."""
    victims = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == proc.pid:
                    victims.append(int(entry.name))
            except OSError:
                pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.communicate(timeout=60)


def summary_of(outdir: Path) -> dict:
    return json.loads((outdir / "summary.json").read_text())


def assert_equal_results(got: dict, ref: dict, rtol: float) -> None:
    assert got["status"] == ref["status"] == "completed"
    assert got["steps"] == ref["steps"] == STEPS and got["restarts"] == 1
    # Every physical value of the summary (the run's own bookkeeping differs by design).
    keys = [k for k, v in ref.items() if isinstance(v, float) and k not in ("wall_time_s",)]
    assert "t_final" in keys and "integral_eta" in keys and len(keys) > 15
    for key in keys:
        assert got[key] == pytest.approx(ref[key], rel=rtol, abs=1e-15, nan_ok=True), key


def assert_no_crash_text(r: subprocess.CompletedProcess) -> None:
    both = r.stdout + r.stderr
    for text in ("Traceback", "Process received signal", "Aborted", "terminate called", "ADIOS2 EXCEPTION"):
        assert text not in both, both


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The mesh cache and the uninterrupted run's summary (1 rank, no figures)."""
    root = tmp_path_factory.mktemp("faults")
    cache = root / "meshes"
    cfg = root / "plain.yaml"
    cfg.write_text(yaml.safe_dump(config(cache, figures=False)))
    r = run(cfg, root / "reference")
    assert r.returncode == 0, r.stdout + r.stderr
    return root, cache, summary_of(root / "reference")


def write_config(path: Path, cache: Path, **output) -> Path:
    path.write_text(yaml.safe_dump(config(cache, **output)))
    return path


@pytest.mark.serial
def test_sigkill_of_the_whole_job_then_restart_on_another_rank_count(base, tmp_path):
    """The issue's scenario with default outputs (figures, animation, checkpoints at output
    times): a 2-rank job killed with SIGKILL after its 20 us checkpoint leaves unclosed VTX
    series; --restart on 1 rank ends in bounded time, exits 0 and equals the uninterrupted
    run to 1e-6, and the animation reads the killed series up to their last complete step
    (run.log says so). Catches the restart that slept forever in RunRecord.close ->
    _animate -> write_animation on fields/nodal.bp (the streaming adios2.Stream reader)."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache)
    out = tmp_path / "out"
    proc = start(cfg, out, ranks=2)
    wait_for_checkpoint(proc, out, 20)
    kill_job(proc)
    assert not (out / "summary.json").exists()
    from nzsp_fem.io.animation import unclosed_series

    assert (out / "fields" / "nodal.bp") in unclosed_series(out)  # the fault is real

    t0 = time.perf_counter()
    r = run(cfg, out, "--restart")
    elapsed = time.perf_counter() - t0
    print(f"\nrestart after SIGKILL: exit {r.returncode} in {elapsed:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_equal_results(summary_of(out), ref, 1e-6)
    log = (out / "run.log").read_text()
    assert "fields/nodal.bp was not closed" in log
    assert "animation: " in log and (out / "figures" / "eta.gif").stat().st_size > 0


@pytest.mark.serial
def test_sigkill_during_a_checkpoint_write_resumes_from_the_previous_one(base, tmp_path):
    """SIGKILL while checkpoint 10 is written (its data on disk, not yet published), with
    checkpoint_every_steps=5 and the animation on: --restart resumes from checkpoint-5,
    ignores the unfinished one and ends equal to the uninterrupted run. Catches a restart
    that reads a checkpoint that was never completed, and (today) the same endless wait
    in the animation as above."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=5)
    out = tmp_path / "out"
    r = run(cfg, out, fault=("kill-in-checkpoint", 10))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert (out / "checkpoints" / "checkpoint.tmp-10").is_dir()
    r = run(cfg, out, "--restart")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restarted from checkpoint-5:" in (out / "run.log").read_text()
    assert_equal_results(summary_of(out), ref, 1e-9)


@pytest.mark.serial
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(base, tmp_path, damage):
    """The issue's third scenario: max_steps 20, checkpoints every 5 steps (15 and 20 kept);
    checkpoint-20/fields.bp/data.0 cut to 1000 bytes, or the same size with its bytes
    changed. metadata.json records every file's size and SHA-256; --restart checks them
    before opening a BP file, warns naming the file, resumes from checkpoint-15 and ends
    equal to the uninterrupted run. Catches the restart that slept in ADIOS2 on the
    truncated file, and one that silently reads damaged values."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=5, figures=False)
    out = tmp_path / "out"
    r = run(cfg, out, "--set", "time.max_steps=20")
    assert r.returncode == 4, r.stdout + r.stderr
    data = out / "checkpoints" / "checkpoint-20" / "fields.bp" / "data.0"
    record = json.loads((data.parents[1] / "metadata.json").read_text())["files"]
    assert record["fields.bp/data.0"]["size"] == data.stat().st_size and len(record["fields.bp/data.0"]["sha256"]) == 64
    if damage == "truncated":
        os.truncate(data, 1000)
    else:
        raw = bytearray(data.read_bytes())
        raw[-2000:-1000] = bytes(1000)
        data.write_bytes(bytes(raw))
    assert verify(data.parents[1]) is not None

    r = run(cfg, out, "--restart")
    assert r.returncode == 0, r.stdout + r.stderr
    warning = [line for line in r.stdout.splitlines() if line.startswith("warning: checkpoint-20 is damaged")]
    assert len(warning) == 1 and str(data) in warning[0], r.stdout
    assert "restarted from checkpoint-15:" in (out / "run.log").read_text()
    assert_equal_results(summary_of(out), ref, 1e-9)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.mark.serial
def test_full_disk_is_one_line_and_restart_resumes_after_freeing_space(base, tmp_path):
    """The output on an 8 MB tmpfs that fills up at step 12 (a file written until
    ENOSPC): exit 5 with one line naming the file and "No space left on device", no
    traceback or stack dump; checkpoint-10 intact (its record checks); after the file is
    removed, --restart resumes from it and ends equal to the uninterrupted run. Without a
    mountable tmpfs (not root), a file-size limit plays the full disk. Catches the
    SIGABRT (exit 134) with 30 lines of frames, and a failed write that damages the
    checkpoint to resume from."""
    root, cache, ref = base
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "8m")
    try:
        cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=5, figures=False)
        out = disk / "out"
        fault = ("fill-disk", 12) if mounted else ("file-size-limit", 12)
        r = run(cfg, out, fault=fault)
        assert_no_crash_text(r)
        assert_one_line_error(r, str(out), "No space left on device" if mounted else "File too large", status=5)
        line = r.stderr.strip()
        assert "checkpoints/checkpoint-10 is intact" in line and "--restart" in line, line
        assert verify(out / "checkpoints" / "checkpoint-10") is None
        (out.parent / "ballast").unlink(missing_ok=True)
        r = run(cfg, out, "--restart")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "restarted from checkpoint-10:" in (out / "run.log").read_text()
        assert_equal_results(summary_of(out), ref, 1e-9)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.serial
def test_full_disk_at_an_output_time_still_writes_its_checkpoint(base, tmp_path):
    """The 10 us output of the fields refused for lack of space (simulated at the free-
    space check, with checkpoint_every_steps 0): the checkpoint due at that output time,
    which a restart needs, is still written; exit 5 naming checkpoint-10 as intact, and
    --restart resumes from it. Catches a run that stops at the refused fields output and
    leaves nothing to resume from (the 2 MB demo wrote no checkpoint)."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=0, figures=False)
    out = tmp_path / "out"
    r = run(cfg, out, fault=("no-room-for-fields", 10))
    assert_no_crash_text(r)
    assert_one_line_error(r, "No space left on device", status=5)
    line = r.stderr.strip()
    assert "checkpoints/checkpoint-10 is intact" in line, line
    assert verify(out / "checkpoints" / "checkpoint-10") is None
    r = run(cfg, out, "--restart")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restarted from checkpoint-10:" in (out / "run.log").read_text()
    assert_equal_results(summary_of(out), ref, 1e-9)


@pytest.mark.serial
def test_write_failure_inside_adios2_exits_cleanly(base, tmp_path):
    """A failure that no free-space check foresees (a quota, here a file-size limit at the
    size of fields/nodal.bp/data.0 when the 10 us output is due): ADIOS2 raises, and its
    engine would abort the process when destroyed. Exit 5 with one line naming the file,
    no 'terminate called' or stack dump, checkpoint-5 intact. Catches the exit 134."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=5, figures=False)
    out = tmp_path / "out"
    r = run(cfg, out, fault=("file-size-limit", 9))
    assert_no_crash_text(r)
    assert_one_line_error(r, "File too large", str(out), status=5)
    assert verify(out / "checkpoints" / "checkpoint-5") is None


@pytest.mark.serial
def test_output_directory_removed_during_the_run(base, tmp_path):
    """The output directory removed at step 12: exit 5, one line naming it, no
    traceback, and it is not silently made again. Catches the run that recreated
    checkpoints/ (mkdir with parents) and carried on writing into a new directory."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=5, figures=False)
    out = tmp_path / "out"
    r = run(cfg, out, fault=("remove-outdir", 12))
    assert_no_crash_text(r)
    assert_one_line_error(r, f"output directory {out} was removed", status=5)
    assert not out.exists()


@pytest.mark.serial
def test_second_run_on_a_running_directory_is_refused(base, tmp_path):
    """While a run writes into a directory, a second one with --restart or --overwrite is
    refused (exit 2, one line naming the directory, nothing touched) and the first ends
    normally with each step once in timeseries.csv. Catches the second run that resumed
    from the first one's checkpoint and interleaved its rows, or removed its files."""
    root, cache, ref = base
    cfg = write_config(tmp_path / "run.yaml", cache, checkpoint_every_steps=5, figures=False)
    out = tmp_path / "out"
    first = start(cfg, out)
    try:
        wait_for_checkpoint(first, out, 10)
        # Paused (it keeps its lock), so that it is surely still running meanwhile.
        os.kill(first.pid, signal.SIGSTOP)
        before = sorted(p.name for p in out.rglob("*"))
        for flag in ("--restart", "--overwrite"):
            r = run(cfg, out, flag)
            assert_one_line_error(r, str(out), "in use by another run")
            assert sorted(p.name for p in out.rglob("*")) == before
        os.kill(first.pid, signal.SIGCONT)
        out_text, err_text = first.communicate(timeout=TIMEOUT)
    finally:
        if first.poll() is None:
            kill_job(first)
    assert first.returncode == 0, out_text + err_text
    summary = summary_of(out)
    assert summary["restarts"] == 0 and summary["steps"] == STEPS
    t = np.genfromtxt(out / "timeseries.csv", delimiter=",", names=True)["t"]
    assert len(t) == STEPS and np.all(np.diff(t) > 0)


SLOW_CHILD = """
import sys, time
from pathlib import Path
out = Path(sys.argv[2])
done = (out / "summary.json").exists() and (out / "checkpoints" / "latest").exists()
(out / f"before-{sys.argv[1]}").write_text(str(done))
time.sleep(60)
"""


def test_postprocessing_hang_is_stopped_and_the_run_completes(tmp_workdir, monkeypatch):
    """Each optional step (final_state.png, the animation) hangs for 60 s; with a 2 s
    limit each is stopped, logged, and the run completes (status completed) in far less
    than 60 s. Each step found summary.json and the final checkpoint already written.
    Catches post-processing run before the results, or without a time limit."""
    monkeypatch.setattr(postprocess, "CHILD", [sys.executable, "-c", SLOW_CHILD])
    monkeypatch.setenv("NZSP_POSTPROCESS_TIME_LIMIT", "2")
    data = config(tmp_workdir / "meshes", checkpoint_every_steps=0)
    data["time"]["t_end"] = "2 us"
    cfg = parse_config(data)
    out = tmp_workdir / "run"
    t0 = time.perf_counter()
    summary = run_single(cfg, out, COMM)
    elapsed = time.perf_counter() - t0
    assert summary["status"] == "completed" and elapsed < 40
    if COMM.rank == 0:
        log = (out / "run.log").read_text()
        for step in ("final-figure", "animation"):
            assert (out / f"before-{step}").read_text() == "True"
        assert log.count("not written: stopped at its time limit of 2 s") == 2, log


def test_readme_documents_the_output_exit_status():
    """The exit status of I/O faults is defined once and documented next to 0/2/3/4, and
    the README says what each fault leaves behind (catches a renumbered status)."""
    from nzsp_fem.exit_codes import EXIT_OUTPUT

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert EXIT_OUTPUT == 5 and "4 interrupted" in readme
    assert f"{EXIT_OUTPUT} results could not be written" in readme
    assert "## When things go wrong" in readme and "KillWait" in readme
