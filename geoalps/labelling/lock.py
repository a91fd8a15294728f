"""One run at a time on an output and its work folder.

Two ``geoalps label`` runs on the same output (two ``--resume`` started together, a second
``--overwrite``) would both write every tile and then rename over each other. A run therefore
holds an exclusive POSIX record lock (``fcntl.lockf``) on a hidden lock file beside what it
writes (``.<name>.geoalps-lock``) from before it touches the work folder until it exits. The
kernel releases it when its process dies (``kill -9`` included), so a lock can never be stale.
A record lock, not ``flock``: a flock belongs to the open file, which forked dask workers inherit,
so workers orphaned by a killed run would hold it on; a record lock belongs to the process alone.
Record locks do not exclude the process from itself, so paths this process holds are also kept
in a set here. The holder's pid is written inside only so the refusal can name it. Costs one open
file a run. Where ``fcntl`` does not exist (Windows) runs are not locked.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

from geoalps.errors import BusyError, OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Lock files this process holds (record locks do not refuse their own process).
_HELD: set[str] = set()
_HELD_GUARD = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """``out.gpkg`` -> ``.out.gpkg.geoalps-lock`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.geoalps-lock"


def _holder(lock_file: Path) -> str:
    try:
        pid = lock_file.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def run_lock(*paths: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of every path in ``paths`` (an output, a work folder) for the block.

    Raises:
        BusyError: another live process holds one of them ("OUT: in use by process N").
    """
    with contextlib.ExitStack() as stack:
        seen = set()
        for path in paths:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                stack.enter_context(_one_lock(Path(path)))
        yield


@contextlib.contextmanager
def _one_lock(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_file = lock_path(path)
    key = os.path.abspath(lock_file)
    with _HELD_GUARD:
        if key in _HELD:
            raise BusyError(f"{path}: in use by this process (another geoalps run); wait for it to finish")
        _HELD.add(key)
    try:
        with _locked_file(path, lock_file):
            yield
    finally:
        with _HELD_GUARD:
            _HELD.discard(key)


@contextlib.contextmanager
def _locked_file(path: Path, lock_file: Path) -> Iterator[None]:
    """The record lock itself. Never open the lock file a second time in this process while
    holding it: closing any descriptor of a file drops this process's record locks on it."""
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the lock file {lock_file} ({exc.strerror})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BusyError(f"{path}: in use by {_holder(lock_file)} (another geoalps run); "
                            "wait for it to finish") from None
        # The previous holder removes the file on release: if we locked a file that was just
        # removed (or replaced), lock the one now at the path instead.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_file))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_file.unlink()  # still locked: a waiting run sees the file is gone and retries
        os.close(fd)
