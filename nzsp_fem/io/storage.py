"""Faults of the file system a run writes to: one-line messages for failed writes, free
space checked before the large ADIOS2 writes, the record of what a checkpoint wrote,
and the lock that keeps a second run out of a running run's directory.

Why free space is checked before writing: ADIOS2 reports a failed write as a Python
RuntimeError, but the engine then stays open with data it cannot flush, and its C++
destructor throws again and aborts the process (SIGABRT, a stack dump, exit 134). So a
write that would not fit is refused before ADIOS2 sees it; a failure that gets through
anyway (a quota, a file-size limit) keeps the failed object alive in ``_UNCLOSABLE`` and
the command leaves through :func:`hard_exit`, which skips its destructor.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import os
import re
import socket
import sys
import time
from pathlib import Path


class StorageError(Exception):
    """Writing the run's results failed (disk full, quota, read-only or vanished output
    directory, permission): one line naming the path and the cause."""


class NoSpace(StorageError):
    """A write refused before it started because it would not fit: nothing was touched."""


#: Objects whose destructor would abort the process (a failed ADIOS2 engine).
_UNCLOSABLE: list = []

#: Margin on top of an estimated write, for ADIOS2 metadata and file-system blocks.
MARGIN_BYTES = 64 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADIOS_FILE = re.compile(r"file (\S+?)\s*:?\s*errno = (\d+)")


def keep_alive(obj) -> None:
    """Never destroy ``obj``: its destructor would throw inside C++ and abort."""
    if not _UNCLOSABLE:
        # An exception nobody catches must not reach the interpreter's teardown either.
        atexit.register(lambda: hard_exit(1) if _UNCLOSABLE else None)
    _UNCLOSABLE.append(obj)


def needs_hard_exit() -> bool:
    return bool(_UNCLOSABLE)


def hard_exit(code: int) -> None:
    """Leave without running destructors (see the module docstring), after MPI_Finalize so
    that mpirun sees an ordinary exit status rather than a rank that vanished."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.Finalize()
    finally:
        os._exit(code)


def describe(err: BaseException, path=None) -> str:
    """``<path>: <cause>`` for an OSError or an ADIOS2 RuntimeError."""
    if isinstance(err, OSError):
        where = err.filename or path
        cause = err.strerror or str(err)
        return f"{where}: {cause}" if where else cause
    text = _ANSI.sub("", str(err)).strip()
    m = _ADIOS_FILE.search(text)
    if m:
        code = int(m.group(2))
        return f"{m.group(1)}: {os.strerror(code)}"
    first = text.splitlines()[0] if text else type(err).__name__
    return f"{path}: {first}" if path else first


def is_storage_error(err: BaseException) -> bool:
    """OSError, or ADIOS2's RuntimeError about a file it could not write or open."""
    if isinstance(err, OSError):
        return True
    text = _ANSI.sub("", str(err))
    return isinstance(err, RuntimeError) and ("errno" in text or "ADIOS2" in text)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def require_space(path: Path, needed: int, what: str) -> None:
    """Raise StorageError if ``needed`` bytes (plus a margin) do not fit where ``path`` is."""
    free = free_bytes(path)
    if free < needed + MARGIN_BYTES:
        raise NoSpace(
            f"{path}: {os.strerror(errno.ENOSPC)} ({what} needs about {_mb(needed + MARGIN_BYTES)}, {_mb(free)} free)"
        )


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# ------------------------------------------------------------------------------------------
# what a checkpoint wrote
# ------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_record(root: Path, skip=("metadata.json",)) -> dict[str, dict]:
    """Size and SHA-256 of every file under ``root`` (relative paths)."""
    record = {}
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel in skip:
                continue
            record[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    return record


def check_record(root: Path, record: dict[str, dict]) -> str | None:
    """None if every recorded file is there with its size and checksum, else what is wrong
    (naming the file). Sizes first, so a truncated file is found without reading it all."""
    for rel, want in record.items():
        p = root / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{p} is missing"
        if size != want["size"]:
            return f"{p} has {size} bytes, {want['size']} were written"
    for rel, want in record.items():
        p = root / rel
        try:
            digest = _sha256(p)
        except OSError as err:
            return f"{p}: {err.strerror or err}"
        if digest != want["sha256"]:
            return f"{p} does not match its checksum"
    return None


# ------------------------------------------------------------------------------------------
# one run per output directory
# ------------------------------------------------------------------------------------------
LOCK_NAME = ".nzsp-fem.lock"
_HELD: dict[str, int] = {}


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f" ({text})" if text else ""


def lock_directory(path: Path) -> None:
    """Hold ``path/.nzsp-fem.lock`` (a POSIX lock, so it also works on NFS) until
    :func:`unlock_directory` or the process ends (a killed run frees it at once).
    Raises StorageError naming the holder if another process has it."""
    import fcntl

    key = str(path.resolve())
    if key in _HELD:  # re-entrant within one process (in-process runs in tests)
        return
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _holder(fd)
        os.close(fd)
        if err.errno in (errno.EACCES, errno.EAGAIN):
            raise DirectoryInUse(
                f"output directory {path} is in use by another run{holder}: wait for it to end, "
                f"or choose another directory with -o"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}\n".encode(), 0)
    _HELD[key] = fd


def unlock_directory(path: Path) -> None:
    fd = _HELD.pop(str(path.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the POSIX lock


class DirectoryInUse(Exception):
    """Another process holds the output directory's lock."""


__all__ = [
    "StorageError",
    "NoSpace",
    "DirectoryInUse",
    "describe",
    "is_storage_error",
    "require_space",
    "free_bytes",
    "tree_bytes",
    "file_record",
    "check_record",
    "keep_alive",
    "needs_hard_exit",
    "hard_exit",
    "lock_directory",
    "unlock_directory",
    "LOCK_NAME",
]
