"""Config files with ``extends:`` (config/loading.py): the child overrides its base,
nested sections merge key by key, lists replace, paths are relative to the file that
names them, chains of two work, a cycle or a missing base is a one-line ConfigError, and
``--set`` overrides apply after the whole chain is merged.

In process and cheap (no mesh, no solver); each test writes its YAML into its own
scratch directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nzsp_fem.config import ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE = """\
domain:
  size: [3 um, 2 um]
microstructure:
  grains: 4
  gb_width: 20 nm
  rng_seed: 11
time:
  t_end: 2 ms
  output_times: [0.5 ms, 1 ms, 1.5 ms]
output:
  probes:
    - {name: a, position: [1 um, 1 um]}
    - {name: b, position: [2 um, 1 um]}
"""


def test_child_overrides_base_nested_sections_merge_lists_replace(tmp_path):
    """Catches a child that replaces a whole section (losing gb_width and rng_seed from the
    base), a base that wins over the child, and lists merged or appended instead of
    replaced (the child's one probe and one output time are all there is)."""
    write(tmp_path / "base.yaml", BASE)
    child = write(
        tmp_path / "child.yaml",
        "extends: base.yaml\n"
        "microstructure:\n  grains: 2\n"
        "time:\n  output_times: [1 ms]\n"
        "output:\n  probes:\n    - {name: c, position: [0.5 um, 0.5 um]}\n"
        "solver:\n  max_it: 7\n",
    )
    cfg = load_config(child)
    assert cfg.microstructure.grains == 2  # child wins
    assert cfg.microstructure.gb_width == pytest.approx(20e-9)  # base kept inside the merged section
    assert cfg.microstructure.rng_seed == 11
    assert cfg.domain.size == pytest.approx([3e-6, 2e-6])  # a section only in the base
    assert cfg.time.t_end == pytest.approx(2e-3)
    assert cfg.time.output_times == pytest.approx([1e-3])  # list replaced, not merged
    assert [p.name for p in cfg.output.probes] == ["c"]
    assert cfg.output.probes[0].position == pytest.approx([0.5e-6, 0.5e-6])
    assert cfg.solver.max_it == 7  # a section only in the child
    assert cfg.solver.rtol == pytest.approx(1e-6)  # and the defaults under it
    assert cfg.name == "child"  # no name anywhere: the file named on the command line


def test_chain_of_two_with_paths_relative_to_each_file(tmp_path, monkeypatch):
    """Catches `extends` resolved against the working directory instead of the file that
    names it, and a chain that stops after one level: top.yaml -> mid/mid.yaml ->
    ../base/root.yaml, read from an unrelated working directory; each level overrides
    the one below, untouched keys come through from the root."""
    write(
        tmp_path / "base" / "root.yaml",
        "microstructure:\n  grains: 5\n  gb_width: 25 nm\n  rng_seed: 3\ntime:\n  t_end: 4 ms\n  n_outputs: 3\n",
    )
    write(
        tmp_path / "configs" / "mid" / "mid.yaml",
        "extends: ../../base/root.yaml\nmicrostructure:\n  grains: 3\n  rng_seed: 4\ntime:\n  t_end: 3 ms\n",
    )
    top = write(tmp_path / "configs" / "top.yaml", "extends: mid/mid.yaml\nmicrostructure:\n  grains: 2\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(top)
    assert cfg.microstructure.grains == 2  # top
    assert cfg.microstructure.rng_seed == 4  # mid over root
    assert cfg.microstructure.gb_width == pytest.approx(25e-9)  # root only
    assert cfg.time.t_end == pytest.approx(3e-3)  # mid over root
    assert cfg.time.n_outputs == 3  # root only
    assert cfg.name == "top"


@pytest.mark.parametrize("layout", ["a-b-a", "a-a", "a-b-c-b"])
def test_self_inclusion_is_a_one_line_config_error(tmp_path, layout):
    """Catches endless recursion (RecursionError after ~1000 reads) or a multi-line error
    on an `extends` cycle: a file extending itself, two files extending each other, and a
    cycle b -> c -> b below the entry point a."""
    names = layout.split("-")
    for here, base in zip(names, names[1:]):
        write(tmp_path / f"{here}.yaml", f"extends: {base}.yaml\ntime:\n  t_end: 1 ms\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "a.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "extends" in message and "includes itself" in message, message


def test_missing_base_names_the_file(tmp_path):
    """Catches a FileNotFoundError traceback, or an error naming the child instead of the
    missing base, when `extends` points at a file that does not exist."""
    child = write(tmp_path / "child.yaml", "extends: no_such_base.yaml\nmicrostructure:\n  grains: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    message = str(err.value)
    assert "\n" not in message
    assert "no_such_base.yaml" in message and "no such config file" in message, message


def test_extends_must_be_a_file_name(tmp_path):
    """Catches a list or mapping under `extends` crashing with a TypeError."""
    child = write(tmp_path / "child.yaml", "extends: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="extends: expected a file name"):
        load_config(child)


def test_bad_value_in_the_base_is_reported_through_the_child(tmp_path):
    """Catches a base that is merged without validation: a wrong unit in the base is a
    ConfigError naming the key when the child is loaded."""
    write(tmp_path / "base.yaml", "materials:\n  grain:\n    E: 3 m\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmicrostructure:\n  grains: 2\n")
    with pytest.raises(ConfigError, match=r"materials\.grain\.E:.*pressure"):
        load_config(child)


def test_set_overrides_apply_after_extends(tmp_path):
    """Catches --set applied to the child before its base is merged beneath it (the base
    would then win again) and --set that cannot reach a key only the base defines:
    both overridden keys take the --set value, their neighbours keep the merged ones."""
    write(tmp_path / "base.yaml", BASE)
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmicrostructure:\n  grains: 2\n")
    cfg = load_config(child, ["microstructure.grains=3", "time.t_end=5 ms", "microstructure.gb_width=10 nm"])
    assert cfg.microstructure.grains == 3  # set by the child, overridden
    assert cfg.time.t_end == pytest.approx(5e-3)  # set only by the base, overridden
    assert cfg.microstructure.gb_width == pytest.approx(10e-9)
    assert cfg.microstructure.rng_seed == 11  # untouched keys of the base
    assert cfg.time.output_times == pytest.approx([0.5e-3, 1e-3, 1.5e-3])
    # later --set wins over earlier ones
    cfg = load_config(child, ["microstructure.grains=3", "microstructure.grains=5"])
    assert cfg.microstructure.grains == 5


def test_set_replaces_a_list_from_the_base(tmp_path):
    """Catches --set merging into an inherited list instead of replacing it."""
    write(tmp_path / "base.yaml", BASE)
    child = write(tmp_path / "child.yaml", "extends: base.yaml\n")
    cfg = load_config(child, ["time.output_times=[1 ms]"])
    assert cfg.time.output_times == pytest.approx([1e-3])
    assert [p.name for p in cfg.output.probes] == ["a", "b"]
