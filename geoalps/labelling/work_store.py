"""The work folder of a run: one file per finished tile, so an interrupted run can ``--resume``.

Tile results (polygons, scores, features; never pixels) are written by the driver as each tile
finishes, atomically (temp file + rename), so a crash at any moment leaves only whole tiles. A
fingerprint of the inputs and options guards against resuming with different settings.

Tile files are data only: ``tiles/<key>.npz`` of plain arrays (:meth:`TileResult.to_arrays`: WKB
geometries, JSON scalars) read with ``allow_pickle=False``, so a work folder someone else can write
to (a shared disk) can hold wrong numbers but never code; a file that is not such a record is
refused as damaged. Work folders of older geoalps (``tiles/*.pkl``, pickles) are refused by
their format (``run.json``), never read.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from geoalps.errors import ResumeError
from geoalps.files import write_bytes_atomic
from geoalps.objects.tile_result import TileResult

# 2: tile results moved to geoalps.objects.tile_result; 3: tiles/*.npz (data only) instead of pickles
_FORMAT = "geoalps-work/3"


def fingerprint(scenes: list[Any], settings: dict[str, Any], remote_versions: bool = True) -> dict[str, Any]:
    """What must not change between an interrupted run and its ``--resume``: each scene's file
    identity (path, size, modification time; for a URL or STAC item, where it is (redacted), its
    grid and, for http(s) files, the server's ETag, Last-Modified and size) and every setting
    that changes tile results.

    ``remote_versions``: ask the servers (one HEAD request per http(s) file, see
    :mod:`geoalps.inputs.remote_version`); off for runs that cannot be resumed.
    """
    from geoalps.inputs.remote import is_virtual, redact
    from geoalps.inputs.remote_version import http_urls, remote_version

    files = []
    for scene in scenes:
        if is_virtual(scene.path):
            entry = {"path": scene.shown, "grid": [scene.width, scene.height, scene.count, scene.dtype,
                                                   list(scene.transform)[:6], scene.col_off, scene.row_off],
                     "source_sha1": hashlib.sha1(redact(scene.path).encode()).hexdigest()}
            versions = {redact(url): remote_version(url) for url in http_urls(scene.path)} if remote_versions else {}
            versions = {url: v for url, v in versions.items() if v}
            if versions:  # absent when nothing could be had: the fingerprint is what it always was
                entry["versions"] = versions
            files.append(entry)
            continue
        stat = os.stat(scene.path)
        files.append({"path": os.path.abspath(scene.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"format": _FORMAT, "scenes": files, "settings": settings}


class WorkStore:
    """A folder of finished tile results keyed by ``Tile.key``."""

    def __init__(self, folder: Path, temporary: bool = False) -> None:
        self.folder = Path(folder)
        self.temporary = temporary

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike | None, prints: dict[str, Any], resume: bool, overwrite: bool) -> "WorkStore":
        """Create the work folder, or reopen it for ``resume`` after checking the fingerprint.

        ``folder=None`` makes a temporary folder (runs without an output file cannot resume).
        Remote files are compared by their recorded versions (:func:`_check_versions`): a
        changed one refuses the resume, one whose version cannot be had now is warned about.
        """
        if folder is None:
            return cls(Path(tempfile.mkdtemp(prefix="geoalps-work-")), temporary=True)._init(prints)
        folder = Path(folder)
        if folder.exists():
            stored = cls._read_run(folder)
            if resume:
                wanted = json.loads(_serialised(prints))  # as run.json holds it (tuples are lists)
                problem = _difference(stored, wanted) or _check_versions(stored, wanted)
                if problem:
                    raise ResumeError(f"{folder}: work folder was made {problem}; "
                                       "run without --resume and with --overwrite to start over")
                return cls(folder)
            if not overwrite:
                raise ResumeError(f"{folder}: work folder of an unfinished run exists; pass --resume to "
                                   "continue it or --overwrite to start over")
            shutil.rmtree(folder)
        return cls(folder)._init(prints)

    def _init(self, prints: dict[str, Any]) -> "WorkStore":
        (self.folder / "tiles").mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.folder / "run.json", _serialised(prints).encode())
        return self

    @staticmethod
    def _read_run(folder: Path) -> dict[str, Any] | None:
        try:
            stored = json.loads((folder / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return stored if isinstance(stored, dict) else None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- tiles -----------------------------------------------------------------------------
    def _tile_path(self, key: str) -> Path:
        return self.folder / "tiles" / f"{key}.npz"

    def finished(self) -> set[str]:
        return {p.stem for p in (self.folder / "tiles").glob("*.npz")}

    def save(self, key: str, result: TileResult) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **result.to_arrays())
        write_bytes_atomic(self._tile_path(key), buffer.getvalue())

    def load(self, key: str) -> TileResult:
        """The tile result saved under ``key``, read as data (``allow_pickle=False``).

        Raises:
            ResumeError: one line naming the file when it is not a tile result (damaged, or an
                object array that would need unpickling).
        """
        path = self._tile_path(key)
        try:
            with np.load(path, allow_pickle=False) as arrays:
                result = TileResult.from_arrays(arrays)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, shapely_error()):
            raise ResumeError(f"{path}: damaged tile result in the work folder; delete it and --resume") from None
        if result.tile.key != key:
            raise ResumeError(f"{path}: tile result of another tile ({result.tile.key}); delete it and --resume")
        return result


def shapely_error() -> type[Exception]:
    """What shapely raises for WKB that does not parse."""
    import shapely.errors

    return shapely.errors.ShapelyError


def _serialised(prints: dict[str, Any]) -> str:
    return json.dumps(prints, indent=1, sort_keys=True, default=str)


def _without_versions(scenes: Any) -> Any:
    if not isinstance(scenes, list):
        return scenes
    return [{k: v for k, v in s.items() if k != "versions"} if isinstance(s, dict) else s for s in scenes]


def _difference(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    """Why ``stored`` cannot be resumed as ``wanted`` (remote file versions aside), or None."""
    if not stored:
        return "by another program or is damaged (no readable run.json)"
    if stored.get("format") != wanted.get("format"):
        return (f"by another version of geoalps (work folder format {stored.get('format')!r}, this version "
                f"writes {wanted.get('format')!r})")
    if _without_versions(stored.get("scenes")) != _without_versions(wanted.get("scenes")):
        return "for other scene files (or they changed since)"
    old, new = stored.get("settings", {}), wanted.get("settings", {})
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        return f"with other settings ({', '.join(changed)})"
    if {k: v for k, v in stored.items() if k != "scenes"} != {k: v for k, v in wanted.items() if k != "scenes"}:
        return "with other inputs or settings"
    return None


def _check_versions(stored: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The remote files of ``stored`` (same scenes as ``wanted``) against their versions now:
    why the resume is refused (``"from another version of URL (ETag changed)"``), or None.

    Files whose version was recorded but cannot be had now (the server no longer sends one, the
    request failed) are resumed with a warning on stderr, printed with ``--quiet`` too: tiles
    already finished may then come from another version, which only the user can rule out.
    Files recorded without a version (a server that sends none, work folders of geoalps before
    versions were recorded) are checked by their grid only, as before.
    """
    from geoalps.inputs.remote_version import version_changes

    unchecked = []
    for old_scene, new_scene in zip(stored.get("scenes", []), wanted.get("scenes", [])):
        now = new_scene.get("versions", {})
        for url, then in old_scene.get("versions", {}).items():
            changes = version_changes(then, now[url]) if url in now else None
            if changes:
                return f"from another version of {url} ({' and '.join(changes)} changed)"
            if changes is None:
                unchecked.append(url)
    for url in unchecked:
        print(f"geoalps: warning: {url}: the server does not state the file's version now (ETag, Last-Modified), "
              "so it cannot be checked that the file did not change since the interrupted run; resuming anyway",
              file=sys.stderr)
    return None


def settings_digest(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings, for dask task keys."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
