"""The files of the restart checkpoints (io/checkpoint.py describes the layout): finding
the complete ones, publishing a new one atomically, pruning old ones, and the record of
what each wrote (size and SHA-256 per file in metadata.json, checked before a restart
opens any of its files: a BP file cut short makes ADIOS2 wait for data that never comes)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from .storage import check_record, file_record

FORMAT = "nzsp-fem-cellwise-checkpoint"
FORMAT_VERSION = 1
# checkpoint-<step>, or checkpoint-<step>.old: a complete checkpoint moved aside while the
# same step is written again (only exists if a process died during that replacement).
_NAME = re.compile(r"^checkpoint-(\d+)(\.old)?$")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


# ------------------------------------------------------------------------------------------
# file system
# ------------------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            _fsync_path(Path(dirpath) / fn)
        _fsync_path(Path(dirpath))


def _step_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def _is_complete(path: Path) -> bool:
    if _step_of(path) is None or not path.is_dir():
        return False
    try:
        meta = json.loads((path / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT and meta.get("complete") is True


def list_checkpoints(directory) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest (smallest step) first. Not collective."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _is_complete(p)]
    return sorted(found, key=lambda p: (_step_of(p), not p.name.endswith(".old")))


def _latest(directory: Path) -> str | None:
    pointer = directory / "latest"
    try:
        name = pointer.read_text().strip()
    except OSError:
        name = ""
    if name and _is_complete(directory / name):
        return str(directory / name)
    found = list_checkpoints(directory)
    return str(found[-1]) if found else None


def _prepare_tmp(directory: Path, tmp: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("checkpoint.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()


def _write_pointer(directory: Path, name: str) -> None:
    tmp = directory / f"latest.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / "latest")
    _fsync_path(directory)


def _prune(directory: Path, current: Path, keep: int) -> None:
    step = _step_of(current)
    older = [p for p in list_checkpoints(directory) if _step_of(p) < step]
    newer = [p for p in list_checkpoints(directory) if _step_of(p) > step]
    for p in newer + older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)


def _publish(directory: Path, tmp: Path, final: Path, manifest: dict, keep: int) -> str:
    """Rank 0: record, metadata, fsync, rename, pointer, prune."""
    manifest = dict(manifest, files=file_record(tmp))
    with open(tmp / "metadata.json", "w") as f:
        json.dump(manifest, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    _fsync_path(tmp)
    _fsync_path(directory)
    replaced = final.with_name(final.name + ".old")
    if final.exists():  # the same step written again (after a restart)
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
    os.replace(tmp, final)
    _fsync_path(directory)
    _write_pointer(directory, final.name)
    shutil.rmtree(replaced, ignore_errors=True)
    _prune(directory, final, keep)
    return str(final)


def verify(path: Path) -> str | None:
    """None if the checkpoint holds every file its metadata.json records, each with the
    size and checksum it was written with; else what is wrong, naming the file. A
    checkpoint written before the record existed passes unchecked."""
    try:
        meta = json.loads((path / "metadata.json").read_text())
    except (OSError, ValueError) as err:
        return f"{path / 'metadata.json'} cannot be read ({err})"
    record = meta.get("files")
    return None if record is None else check_record(path, record)


def restart_candidates(directory) -> list[Path]:
    """Complete checkpoints to try, best first: the ``latest`` pointer's, then the others
    newest first. Not collective."""
    directory = Path(directory)
    latest = _latest(directory) if directory.is_dir() else None
    others = [p for p in reversed(list_checkpoints(directory)) if str(p) != latest]
    return ([Path(latest)] if latest else []) + others


def discard_unfinished(directory) -> None:
    """Remove checkpoints whose writing failed, to give their space back."""
    for stale in Path(directory).glob("checkpoint.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
