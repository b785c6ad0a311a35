"""The run directory: refuses to overwrite, holds the log, resolved config, VTX fields,
timeseries.csv and summary.json. Only rank 0 writes text files; collective writers
(VTX) are called on every rank."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from ..problem import Diagnostics


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
    """Create the run directory; never replace existing results silently."""
    error = None
    if comm.rank == 0:
        if path.exists() and any(path.iterdir()):
            if restart:
                pass
            elif overwrite:
                shutil.rmtree(path)
            else:
                error = (
                    f"output directory {path} already holds results: pass --overwrite to replace "
                    f"them, --restart to resume, or -o to choose another directory"
                )
        elif restart:
            error = f"--restart: {path} holds no run to resume"
        if error is None:
            path.mkdir(parents=True, exist_ok=True)
    error = comm.bcast(error, root=0)
    if error:
        raise OutputError(error)


class RunLog:
    """Rank-0 lines to stdout (by verbosity) and to run.log (always)."""

    def __init__(self, path: Path, comm, verbosity: int = 1):
        self.comm, self.verbosity = comm, verbosity
        self.file = open(path, "a", buffering=1) if comm.rank == 0 else None

    def __call__(self, message: str, level: int = 1) -> None:
        if self.comm.rank != 0:
            return
        stamp = time.strftime("%H:%M:%S")
        self.file.write(f"{stamp} {message}\n")
        if level <= self.verbosity:
            print(message, file=sys.stdout, flush=True)

    def close(self):
        if self.file:
            self.file.close()


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


def _drop_rows_after(path: Path, t_keep: float) -> None:
    """On restart: rows written after the checkpoint are recomputed, so drop them."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and float(r[0]) <= t_keep * (1 + 1e-12)]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def write_json(path: Path, data: dict, comm) -> None:
    """Atomic write (temp + rename) so a reader never sees half a file."""
    if comm.rank == 0:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
        os.replace(tmp, path)


def write_yaml(path: Path, data: dict, comm) -> None:
    if comm.rank == 0:
        path.write_text(yaml.safe_dump(data, sort_keys=False))


class FieldWriter:
    """VTX (.bp) writers for ParaView, one per function space (a VTX requirement)."""

    def __init__(self, directory: Path, comm, suffix: str = ""):
        self.directory, self.comm, self.suffix = directory, comm, suffix
        self.writers: dict[str, object] = {}

    def write(self, groups: dict[str, list], t: float) -> None:
        from dolfinx.io import VTXWriter

        for name, functions in groups.items():
            if name not in self.writers:
                path = self.directory / f"{name}{self.suffix}.bp"
                self.writers[name] = VTXWriter(self.comm, str(path), functions, engine="BP4")
            self.writers[name].write(t)

    def close(self):
        for w in self.writers.values():
            w.close()
        self.writers.clear()


__all__ = [
    "OutputError",
    "prepare_directory",
    "RunLog",
    "CsvTable",
    "write_json",
    "write_yaml",
    "FieldWriter",
    "TIMESERIES_COLUMNS",
]
