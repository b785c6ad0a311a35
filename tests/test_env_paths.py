"""Config and output paths outside the repository under bin/nzsp-env.

bin/nzsp-env's root file system shows the repository and the working directory; it also
binds the directories of path arguments (``nzsp-fem /elsewhere/run.yaml -o /data/out``).
The tests run inside that runtime, where bin/nzsp-env runs commands natively, so the
binding itself cannot be exercised here: the directories it would bind are checked
through ``NZSP_ENV_SHOW_BINDS=1`` (the same function feeds the mounts), and a file that
stays invisible gets an error saying what to do.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import REPO

from nzsp_fem.config import ConfigError, load_config

pytestmark = pytest.mark.serial


def shown_binds(*args: str, cwd: Path = REPO) -> list[str]:
    env = dict(os.environ, NZSP_ENV_SHOW_BINDS="1")
    r = subprocess.run(
        ["bash", str(REPO / "bin" / "nzsp-env"), "true", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_config_and_output_outside_the_repository_are_bound(tmp_path):
    """A config in one outside directory, an output directory not made yet under another
    (its nearest existing ancestor is bound, so the run can create it), --output=DIR.
    Catches a wrapper that binds only the repository and the working directory (nothing
    printed), an output path bound by a directory that does not exist yet, and nested
    or duplicate binds."""
    assert not tmp_path.is_relative_to(REPO)
    configs, results, more = tmp_path / "configs", tmp_path / "results", tmp_path / "more"
    for d in (configs, results, more / "deeper"):
        d.mkdir(parents=True)
    (configs / "run.yaml").write_text("{}\n")
    binds = shown_binds(
        "nzsp-fem",
        str(configs / "run.yaml"),
        "-o",
        str(results / "new" / "run1"),
        f"--output={more}",
        str(more / "deeper"),  # inside an already bound directory: no second bind
        str(configs / "base.yaml"),  # a second path in the same directory
    )
    assert binds == sorted([str(configs), str(results), str(more)])


def test_paths_already_visible_or_not_paths_are_not_bound(tmp_path):
    """Nothing for files in the repository or the working directory, words without a
    '/', ``--set key=value``, or system directories (binding /usr/bin would hide the
    runtime's own programs)."""
    (tmp_path / "here.yaml").write_text("{}\n")
    binds = shown_binds(
        "nzsp-fem",
        str(REPO / "configs" / "demo.yaml"),
        "here.yaml",
        "./here.yaml",
        "--set",
        "materials.grain_boundary.E=20 GPa",
        "--check",
        "/usr/bin/python3",
        "/etc/hosts",
        cwd=tmp_path,
    )
    assert binds == []


def test_relative_path_above_the_working_directory_is_bound(tmp_path):
    """``nzsp-fem ../inputs/run.yaml`` from a sibling directory."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "inputs" / "run.yaml").write_text("{}\n")
    assert shown_binds("nzsp-fem", "../inputs/run.yaml", cwd=tmp_path / "work") == [str(tmp_path / "inputs")]


def test_invisible_base_file_says_what_to_do(tmp_path, monkeypatch):
    """Inside the runtime, a file outside everything bound (here reached through
    ``extends:``) is reported with the way out; a plain typo in the working directory is
    reported without it."""
    monkeypatch.setenv("NZSP_IN_ENV", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "far.yaml").write_text("extends: /nzsp-nonexistent-dir/base.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "far.yaml")
    msg = str(info.value)
    assert msg.startswith("/nzsp-nonexistent-dir/base.yaml: no such config file"), msg
    assert "inside bin/nzsp-env" in msg and "run from a directory that contains it" in msg
    (tmp_path / "near.yaml").write_text("extends: typo.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "near.yaml")
    assert str(info.value) == f"{tmp_path / 'typo.yaml'}: no such config file"
