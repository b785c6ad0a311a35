"""The run directory: refuses to overwrite, holds the log, resolved config, VTX fields,
timeseries.csv and summary.json. Only rank 0 writes text files; collective writers
(VTX) are called on every rank."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from ..problem import Diagnostics
from .storage import (
    LOCK_NAME,
    DirectoryInUse,
    NoSpace,
    StorageError,
    describe,
    keep_alive,
    lock_directory,
    require_space,
    tree_bytes,
    unlock_directory,
)


class OutputError(Exception):
    """A problem with the output directory, reported to the user on one line."""


# segment and applied_current_density_A_m2 come from the electrode protocol (solver/protocol.py).
TIMESERIES_COLUMNS = [
    "t",
    "dt",
    "newton_iterations",
    "linear_iterations",
    "error_estimate",
    "interface_change",
    "segment",
    "applied_current_density_A_m2",
    "charge_passed_C",
] + Diagnostics.names("series")


def prepare_directory(path: Path, comm, overwrite: bool, restart: bool) -> None:
    """Create the run directory and take its lock; never replace existing results
    silently, nor results that another process is still writing."""
    error, kind = None, OutputError
    if comm.rank == 0:
        try:
            held = [p for p in path.iterdir() if p.name != LOCK_NAME] if path.is_dir() else []
            if held and not (restart or overwrite):
                error = (
                    f"output directory {path} already holds results: pass --overwrite to replace "
                    f"them, --restart to resume, or -o to choose another directory"
                )
            elif restart and not held:
                error = f"--restart: {path} holds no run to resume"
            if error is None:
                path.mkdir(parents=True, exist_ok=True)
                lock_directory(path)
                if overwrite:
                    # The lock file stays: removing it would let a third run in beside this one.
                    for p in held:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except DirectoryInUse as err:
            error = str(err)
        except OSError as err:
            error, kind = f"cannot prepare the output directory: {describe(err, path)}", StorageError
    error, kind = comm.bcast((error, kind), root=0)
    if error:
        raise kind(error)


def release_directory(path: Path, comm) -> None:
    if comm.rank == 0:
        unlock_directory(path)


class RunLog:
    """Rank-0 lines to stdout (by verbosity) and to run.log (always). A failed write to
    run.log (disk full) does not stop the run here: it is kept in ``failed`` and reported
    at the next checked write, on every rank at once."""

    def __init__(self, path: Path, comm, verbosity: int = 1):
        self.comm, self.verbosity, self.path = comm, verbosity, path
        self.failed: str | None = None
        self.file = None
        if comm.rank == 0:
            try:
                self.file = open(path, "a", buffering=1)
            except OSError as err:
                self.failed = describe(err, path)

    def __call__(self, message: str, level: int = 1) -> None:
        if self.comm.rank != 0:
            return
        stamp = time.strftime("%H:%M:%S")
        if self.file:
            try:
                self.file.write(f"{stamp} {message}\n")
            except OSError as err:
                self.failed = self.failed or describe(err, self.path)
                _close_quietly(self.file)
                self.file = None
        if level <= self.verbosity:
            print(message, file=sys.stdout, flush=True)

    def close(self):
        if self.file:
            _close_quietly(self.file)
            self.file = None


def _close_quietly(file) -> None:
    """Close even if the last flush fails (the descriptor is closed either way), so that
    no 'Exception ignored' report follows at exit."""
    try:
        file.close()
    except OSError:
        pass


class CsvTable:
    """Append-only CSV on rank 0, flushed per row so a crash loses nothing written."""

    def __init__(self, path: Path, columns: list[str], comm, append: bool = False, keep_until: float | None = None):
        self.columns, self.comm = columns, comm
        self.file = None
        if comm.rank == 0:
            new = not (append and path.exists())
            if not new and keep_until is not None:
                _drop_rows_after(path, keep_until)
            self.file = open(path, "a" if not new else "w", newline="", buffering=1)
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(columns)

    def row(self, values: dict) -> None:
        if self.file:
            self.writer.writerow([_fmt(values.get(c)) for c in self.columns])
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()
            self.file = None

    def abandon(self):
        if self.file:
            _close_quietly(self.file)
            self.file = None


def _drop_rows_after(path: Path, t_keep: float) -> None:
    """On restart: rows written after the checkpoint are recomputed, so drop them."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # A row cut short by a full disk has fewer cells: it is dropped with the later ones.
    width = len(rows[0]) if rows else 0
    kept = rows[:1] + [r for r in rows[1:] if len(r) == width and _time(r[0]) <= t_keep * (1 + 1e-12)]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def _json_safe(value):
    """NaN (a measure undefined for this state) as null, numpy scalars as Python numbers:
    JSON has no NaN, and strict readers reject the bare token."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def write_json(path: Path, data: dict, comm) -> None:
    """Atomic write (temp + rename) so a reader never sees half a file."""
    if comm.rank == 0:
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise


def write_yaml(path: Path, data: dict, comm) -> None:
    if comm.rank == 0:
        path.write_text(yaml.safe_dump(data, sort_keys=False))


class FieldWriter:
    """VTX (.bp) writers for ParaView, one per function space (a VTX requirement).

    Before each write rank 0 checks that the series' growth at its last write (or, at the
    first, the size of the arrays) fits on the disk: ADIOS2 aborts the process when it
    cannot flush (io/storage.py). Raises StorageError on every rank."""

    def __init__(self, directory: Path, comm, suffix: str = ""):
        self.directory, self.comm, self.suffix = directory, comm, suffix
        self.writers: dict[str, object] = {}
        self.growth: dict[str, int] = {}  # rank 0 only
        self.first: dict[str, int] = {}

    def _needed(self, groups: dict[str, list]) -> int:
        """Bytes the next write may add: 1.2 x the last growth of each series (rank 0
        measures it), or 1.2 x its arrays before the first write. Collective."""
        for name, functions in groups.items():
            if name not in self.first:
                mesh = functions[0].function_space.mesh
                # values, node coordinates, connectivity and VTK's per-node/per-cell arrays
                local = sum(f.x.array.nbytes for f in functions) + 2 * mesh.geometry.x.nbytes
                local += 2 * mesh.geometry.dofmap.nbytes
                self.first[name] = int(1.2 * self.comm.allreduce(local))
        return sum(int(1.2 * self.growth[n]) if n in self.growth else self.first[n] for n in groups)

    def write(self, groups: dict[str, list], t: float) -> None:
        from dolfinx.io import VTXWriter

        need = self._needed(groups)
        error = None
        if self.comm.rank == 0:
            try:
                require_space(self.directory, need, "this output of the fields")
            except NoSpace as err:
                error = (NoSpace, str(err))
            except OSError as err:
                error = (StorageError, describe(err, self.directory))
        error = self.comm.bcast(error, root=0)
        if error:
            raise error[0](error[1])
        for name, functions in groups.items():
            path = self.directory / f"{name}{self.suffix}.bp"
            try:
                if name not in self.writers:
                    self.writers[name] = VTXWriter(self.comm, str(path), functions, engine="BP4")
                before = tree_bytes(path) if self.comm.rank == 0 else 0
                self.writers[name].write(t)
                if self.comm.rank == 0:
                    self.growth[name] = tree_bytes(path) - before
            except (RuntimeError, OSError) as err:
                error = describe(err, path)
                if name in self.writers:
                    keep_alive(self.writers.pop(name))
            errors = [e for e in self.comm.allgather(error) if e]
            if errors:
                self.abandon()
                raise StorageError(errors[0])

    def close(self):
        """Close every series; a failure (disk full while ADIOS2 writes the last metadata)
        raises StorageError on every rank after all were tried."""
        error = None
        for name, w in list(self.writers.items()):
            try:
                w.close()
            except RuntimeError as err:
                error = error or describe(err, self.directory / f"{name}{self.suffix}.bp")
                keep_alive(w)
        self.writers.clear()
        errors = [e for e in self.comm.allgather(error) if e]
        if errors:
            raise StorageError(errors[0])

    def abandon(self):
        """After a failure (on every rank): close what closes, keep the rest alive."""
        for w in self.writers.values():
            try:
                w.close()
            except RuntimeError:
                keep_alive(w)
        self.writers.clear()


__all__ = [
    "OutputError",
    "StorageError",
    "prepare_directory",
    "release_directory",
    "RunLog",
    "CsvTable",
    "write_json",
    "write_yaml",
    "FieldWriter",
    "TIMESERIES_COLUMNS",
]
