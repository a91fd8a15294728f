"""Writing files so that nothing is ever half-written: a temporary path beside the target, renamed
into place only when the write succeeded. Every output of geoalps (GeoPackages, rasters, k-means
models, checkpoints, work-folder tiles, downloads' final rename) goes through here.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from geoalps.errors import OutputError


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber an existing output (unless ``overwrite``) before any work starts."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: output exists (pass --overwrite to replace it)")
    if path.exists() and path.is_dir():
        raise OutputError(f"{path}: output is a folder")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: output folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the destination's suffix (``keep_suffix``) so GDAL drivers are
    picked by extension, and does not exist yet (GDAL wants to create the file itself). Without
    ``keep_suffix`` it ends in ``.tmp``, so a leftover after a hard kill never looks like an
    output to a glob. SQLite side files of a GeoPackage left by a failed write are removed too.
    """
    path = check_writable(path, overwrite)
    prefix, suffix = (f".{path.stem}.", f".tmp{path.suffix}") if keep_suffix else (f".{path.name}.", ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    os.remove(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        for leftover in (tmp_path, Path(f"{tmp_path}-journal"), Path(f"{tmp_path}-wal"), Path(f"{tmp_path}-shm")):
            if leftover.exists():
                leftover.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file (flushed to disk when ``fsync``), so a
    crash at any moment leaves the old file or the new one, never a torn one. Overwrites."""
    path = Path(path)
    with atomic_path(path, overwrite=True, keep_suffix=False) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
    return path
