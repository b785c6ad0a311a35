"""The public Python API (nzsp_fem.__init__): one validation for every config source,
Simulation stepped by hand against Simulation.run, the loop's observer hooks, the run
state's checkpoint form, the README's Python snippet and the example scripts.

The stepping tests use support.tiny_bicrystal (fixed 1 us steps); the README snippet and
the examples run in child processes with short end times (serial)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import REPO, child_environment, merge, tiny_bicrystal

from mpi4py import MPI

import nzsp_fem
from nzsp_fem.config import ConfigError

COMM = MPI.COMM_WORLD
US = 1e-6


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = str(tmp_path_factory.mktemp("meshes")) if COMM.rank == 0 else None
    return Path(COMM.bcast(path, root=0))


def tiny(cache: Path, **sections) -> dict:
    base = merge(
        tiny_bicrystal(cache),
        {"name": "api", "time": {"t_end": "3 us", "n_outputs": 1}, "output": {"figures": False, "verbosity": 0}},
    )
    return merge(base, sections)


# Exports and configs ---------------------------------------------------------------------


def test_exports_resolve_and_are_documented():
    """Every name in __all__ exists and has a docstring (the lazy ones load on access)."""
    for name in nzsp_fem.__all__:
        obj = getattr(nzsp_fem, name)
        assert (obj.__doc__ or "").strip(), name
    with pytest.raises(AttributeError):
        nzsp_fem.no_such_name  # noqa: B018


def test_dict_yaml_and_model_give_the_same_config(tmp_workdir, cache):
    """A mapping, a YAML file with the same keys and a Config made from either validate to
    equal configs, overrides (mapping or --set texts) included."""
    data = tiny(cache)
    path = tmp_workdir / "api.yaml"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump(data))
    COMM.barrier()
    over = {"time.t_end": "2 us"}
    from_dict = nzsp_fem.load_config(data, overrides=over)
    from_yaml = nzsp_fem.load_config(path, overrides=["time.t_end=2 us"])
    from_model = nzsp_fem.load_config(nzsp_fem.load_config(data), overrides=over)
    assert from_dict.model_dump() == from_yaml.model_dump() == from_model.model_dump()
    assert from_dict.time.t_end == pytest.approx(2 * US)


PROTOCOL = {"segments": [{"current_density": "1 mA/cm^2", "duration": "2 us"}]}


@pytest.mark.parametrize("source", ["dict", "yaml", "model"])
def test_protocol_and_another_t_end_is_refused_from_every_source(tmp_workdir, cache, source):
    """A protocol with a time.t_end other than its duration is the same one-line error from
    a dict, a YAML file and an override of a Config (parse_config used to skip it)."""
    data = tiny(cache, protocol=PROTOCOL)
    del data["time"]["t_end"]
    with_end = merge(data, {"time": {"t_end": "5 us"}})
    path = tmp_workdir / f"{source}.yaml"
    if COMM.rank == 0:
        path.write_text(yaml.safe_dump(with_end))
    COMM.barrier()
    given = {
        "dict": lambda: nzsp_fem.load_config(with_end),
        "yaml": lambda: nzsp_fem.load_config(path),
        "model": lambda: nzsp_fem.load_config(nzsp_fem.load_config(data), overrides={"time.t_end": "5 us"}),
    }[source]
    with pytest.raises(ConfigError, match=r"^time\.t_end: 5e-06 s differs from the protocol's total duration"):
        given()
    assert nzsp_fem.load_config(data).time.t_end == pytest.approx(2 * US)


def test_run_state_checkpoint_form_reads_old_keys():
    """RunState survives its checkpoint form, and a checkpoint written before the keys were
    renamed (newton_total, short_circuit_time) still restores."""
    from nzsp_fem.solver.protocol import VoltagePeak

    state = nzsp_fem.RunState(t=1.5, steps=3, newton_iterations=9, short_circuit_time_s=1.0)
    state.voltage_peak = VoltagePeak(2, 0.3)
    assert nzsp_fem.RunState.from_dict(state.to_dict()) == state
    old = {"t": 1.5, "steps": 3, "newton_total": 9, "short_circuit_time": 1.0, "restarts": 0, "controller_dt": 1.0}
    restored = nzsp_fem.RunState.from_dict(old)
    assert restored.newton_iterations == 9 and restored.short_circuit_time_s == 1.0
    assert restored.voltage_peak == VoltagePeak()


# Stepping ----------------------------------------------------------------------------------


def test_step_by_step_equals_run(tmp_workdir, cache):
    """Stepping by hand and run() take the same steps to the same state and report the
    same Newton iterations (the loop is one), and step() writes nothing."""
    cfg = nzsp_fem.load_config(tiny(cache))
    sim = nzsp_fem.Simulation(cfg, COMM)
    infos = []
    while not sim.finished:
        infos.append(sim.step())
    eta_by_hand = sim.fields.eta.x.array.copy()
    # The ionic potential in volts, also under its name before phi_i (CHANGELOG.md).
    pb = sim.problem
    assert "phi_i" in sim.fields.names and "phi" not in sim.fields.names
    phi_i = sim.fields.phi_i.x.array.copy()
    assert np.ptp(pb.sub_values("phi_i")) > 0
    np.testing.assert_array_equal(phi_i, pb.sub_values("phi_i") * pb.scaling.potential)
    np.testing.assert_array_equal(sim.fields.phi.x.array, phi_i)
    assert sim.status == "completed" and sim.reason is None
    assert [i.step for i in infos] == [1, 2, 3]
    np.testing.assert_allclose([i.t for i in infos], [US, 2 * US, 3 * US], rtol=1e-12)
    with pytest.raises(RuntimeError, match="the run has finished"):
        sim.step()
    sim.close()
    assert not any(tmp_workdir.iterdir())

    other = nzsp_fem.Simulation(cfg, COMM, polycrystal=sim.poly)  # same mesh and partition
    summary = other.run(tmp_workdir / "run")
    assert summary["steps"] == 3 and summary["newton_iterations"] == sum(i.report.newton_iterations for i in infos)
    np.testing.assert_array_equal(other.fields.eta.x.array, eta_by_hand)
    if COMM.rank == 0:
        with open(tmp_workdir / "run" / "timeseries.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["newton_iterations"]) for r in rows] == [i.report.newton_iterations for i in infos]


class Hooks:
    """Bounds dt, asks for a landing at 2.5 us, changes the state after step 2, counts calls."""

    checkpoint_key = "hooks"

    def __init__(self):
        self.before, self.accepted, self.finished = [], [], 0
        self.changed_at = None

    def before_step(self, sim, t, dt):
        self.before.append((t, dt))

    def max_dt(self, sim):
        return 0.6 * US if sim.t >= 2.5 * US * (1 - 1e-9) else None

    def next_breakpoint(self, sim):
        return 2.5 * US

    def on_step_accepted(self, sim, info):
        self.accepted.append((info.t, info.landed, sim.finished))
        if info.step == 2:
            # An outside change of the state (as a nucleation model makes): kept as committed.
            eta = sim.problem.sub_values("eta").copy()
            sim.problem.set_sub("eta", np.clip(eta + 0.01, 0.0, 1.0))
            sim.state_changed()
            self.changed_at = sim.problem.w_old.x.array.copy()

    def on_finish(self, sim):
        self.finished += 1

    def checkpoint_state(self):
        return {"accepted": len(self.accepted)}


def test_observer_hooks_shape_the_steps(tmp_workdir, cache):
    """max_dt and next_breakpoint shorten the steps (1, 1, then 0.5 to land on 2.5 us, then
    at most 0.6 us to t_end = 4 us); before_step sees every attempt,
    on_step_accepted every step, state_changed makes the changed state the committed one,
    on_finish runs once, stop() ends the run with its reason, and the observer's state is
    in the checkpoint."""
    cfg = nzsp_fem.load_config(tiny(cache, time={"t_end": "4 us"}))
    sim = nzsp_fem.Simulation(cfg, COMM)
    hooks = sim.add_observer(Hooks())
    seen = []
    sim.add_observer(lambda s, info: seen.append(info.dt))
    info = sim.step()
    assert info is not None and info.t == pytest.approx(US)
    info = sim.step()
    assert np.array_equal(sim.problem.w_old.x.array, hooks.changed_at)
    summary = sim.run(tmp_workdir / "run")
    t = np.array([a[0] for a in hooks.accepted])
    np.testing.assert_allclose(t[:3], [1 * US, 2 * US, 2.5 * US], rtol=1e-9)
    assert hooks.accepted[2][1] is True  # landed on the breakpoint
    assert np.all(np.diff(t[2:]) <= 0.6 * US * (1 + 1e-9)) and t[-1] == pytest.approx(4 * US, rel=1e-12)
    assert len(hooks.before) == len(t) and hooks.finished == 1 and len(seen) == len(t)
    assert hooks.accepted[-1][2] and not any(a[2] for a in hooks.accepted[:-1])  # sim.finished
    assert summary["status"] == "completed" and summary["steps"] == len(t)

    stopper = nzsp_fem.Simulation(cfg, COMM)
    stopper.add_observer(lambda s, info: s.stop("enough") if info.step == 2 else None)
    summary = stopper.run(tmp_workdir / "stopped")
    assert summary["steps"] == 2 and summary["reason"] == "enough" and summary["status"] == "completed"
    if COMM.rank == 0:
        checkpoint = tmp_workdir / "run" / "checkpoints" / f"checkpoint-{len(t)}"
        manifest = json.loads((checkpoint / "metadata.json").read_text())
        assert manifest["metadata"]["run"]["observers"] == {"hooks": {"accepted": len(t)}}


# README and examples -----------------------------------------------------------------------


def _python_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's Python section holds one snippet"
    return blocks[0]


def _run_child(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=child_environment() | env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.serial
def test_readme_python_snippet_runs_as_written(tmp_path):
    """The README's snippet, verbatim, in a directory that has the repository's configs/
    and mesh cache: it steps the demo by hand, then runs it with outputs."""
    for name in ("configs", "meshes"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "snippet.py").write_text(_python_snippet())
    r = _run_child(["snippet.py"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"^t = 4\.000e-06 s", r.stdout, flags=re.M), r.stdout
    assert re.search(r"^completed \d+ steps$", r.stdout, flags=re.M), r.stdout
    assert (tmp_path / "results" / "demo-python" / "summary.json").exists()


@pytest.mark.serial
def test_parameter_sweep_example(tmp_path):
    r = _run_child([str(REPO / "examples" / "parameter_sweep.py")], REPO, NZSP_EXAMPLE_T_END="2 us")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if re.match(r"^\s+\d[\d.]* S/m ", line)]
    assert len(lines) == 2 and all(" 2.000e-06 " in line for line in lines), r.stdout


@pytest.mark.serial
def test_callback_example(tmp_path):
    out = tmp_path / "callback"
    r = _run_child(
        [str(REPO / "examples" / "callback.py")], REPO, NZSP_EXAMPLE_T_END="2 us", NZSP_EXAMPLE_OUTPUT=str(out)
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "completed (None)" in r.stdout and "front:" in r.stdout, r.stdout
    assert (out / "summary.json").exists() and (out / "timeseries.csv").exists()
    assert not os.path.exists(REPO / "results" / "example-callback")
