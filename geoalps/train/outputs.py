"""Output files appear whole or not at all: write to a temp name in the same folder, then rename.

The temp file sits next to the target so ``os.replace`` is a same-filesystem atomic rename.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from geoalps.errors import GeoAlpsError


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise a one-line error if ``path`` exists and ``overwrite`` is False; check its folder exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise GeoAlpsError(f"{path}: exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise GeoAlpsError(f"{path}: folder {path.parent} does not exist")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it to ``path`` only if the block succeeds.

    Args:
        path: the final file name.
        overwrite: replace an existing file; otherwise refuse before any work is done.
    """
    path = Path(path)
    refuse_overwrite(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers (GDAL, torch.save) create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
