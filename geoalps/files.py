"""Writing files so that nothing is ever half-written: a temporary path beside the target, renamed
into place only when the write succeeded. Every output of geoalps (GeoPackages, rasters, k-means
models, checkpoints, work-folder tiles, downloads' final rename) goes through here.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

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
    try:  # os.access says yes for root, and for /proc or a read-only mount: try it
        fd, probe = tempfile.mkstemp(prefix=".geoalps-probe-", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"{path}: output folder {parent} is not writable ({exc.strerror or exc})") from None
    return path


def _same_file_key(path: str | os.PathLike) -> tuple:
    """What identifies a file on disk: (device, inode) when it exists (hard links, symlinks),
    else its fully resolved path."""
    try:
        stat = os.stat(path)
        return ("inode", stat.st_dev, stat.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def check_distinct(inputs: Iterable, outputs: Iterable[tuple[str, Iterable]]) -> None:
    """Before any work: refuse an output that is one of the inputs, or that another output of
    the same run also writes (after resolving symlinks and ``..``, hard links included).

    ``inputs``: the files the command reads (None and URLs are skipped). ``outputs``: pairs
    ``(how the output is named in messages, the files it writes: itself and its sidecars)``.

    Raises:
        OutputError: "OUT: is also an input (IN); ..." or "OUT: would also be written as OTHER".
    """
    from geoalps.inputs.remote import is_virtual

    read = {}
    for path in inputs:
        if path is not None and not is_virtual(str(path)) and os.path.exists(path):
            read.setdefault(_same_file_key(path), str(path))
    written: dict[tuple, str] = {}
    for shown, files in outputs:
        for path in files:
            if path is None:
                continue
            key = _same_file_key(path)
            if key in read:
                given = "" if os.path.abspath(read[key]) == os.path.abspath(path) else f" ({read[key]})"
                via = "" if str(path) == shown else f": it writes {path}"
                raise OutputError(f"{shown}: is one of the inputs{given}{via}; geoalps never overwrites an input, "
                                  "write to another file")
            if key in written and written[key] != shown:
                raise OutputError(f"{shown}: would overwrite another output of the same run ({written[key]} "
                                  f"writes {path} too); give the outputs different names")
            written[key] = shown


def _temporary_pattern(path: Path) -> re.Pattern:
    """The names :func:`atomic_path` gives temporaries of ``path``: ``.<stem>.XXXXXXXX.tmp<suffix>``
    with SQLite's side files and the sidecars written with it (style, Shapefile parts, metadata),
    and ``.<name>.XXXXXXXX.tmp`` (byte writes, such as its ``.qml``)."""
    random = r"\.[A-Za-z0-9_]{8}\.tmp"
    suffixes = "|".join(re.escape(s) for s in {path.suffix, ".qml", ".shx", ".dbf", ".prj", ".cpg"} if s)
    names = "|".join(re.escape(n) for n in (path.name, f"{path.stem}.qml"))
    return re.compile(rf"^\.(?:{re.escape(path.stem)}{random}(?:{suffixes})(?:-journal|-wal|-shm|\.geoalps\.json)?"
                      rf"|(?:{names}){random})$")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed run left beside ``path`` (``kill -9`` during the final
    write); only names :func:`atomic_path` makes for this very output. Call it only while
    holding the output's lock (:mod:`geoalps.labelling.lock`), so no live run's files go."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    pattern = _temporary_pattern(path)
    removed = []
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if pattern.match(entry.name) and entry.is_file() and not entry.is_symlink():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


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
