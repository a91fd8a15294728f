"""The work folder of a run: one file per finished tile, so an interrupted run can ``--resume``.

Tile results (polygons, scores, features; never pixels) are written by the driver as each tile
finishes, atomically (temp file + rename), so a crash at any moment leaves only whole tiles. A
fingerprint of the inputs and options guards against resuming with different settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from geoalps.errors import ResumeError
from geoalps.files import write_bytes_atomic

_FORMAT = "geoalps-work/2"  # 2: tile results moved to geoalps.objects.tile_result


def fingerprint(scenes: list[Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What must not change between an interrupted run and its ``--resume``: each scene's file
    identity (path, size, modification time; for a URL or STAC item, where it is (redacted) and
    its grid) and every setting that changes tile results."""
    from geoalps.inputs.remote import is_virtual, redact

    files = []
    for scene in scenes:
        if is_virtual(scene.path):
            files.append({"path": scene.shown, "grid": [scene.width, scene.height, scene.count, scene.dtype,
                                                        list(scene.transform)[:6], scene.col_off, scene.row_off],
                          "source_sha1": hashlib.sha1(redact(scene.path).encode()).hexdigest()})
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
        """
        if folder is None:
            return cls(Path(tempfile.mkdtemp(prefix="geoalps-work-")), temporary=True)._init(prints)
        folder = Path(folder)
        if folder.exists():
            stored = cls._read_run(folder)
            if resume:
                if stored != prints:
                    raise ResumeError(f"{folder}: work folder was made {_difference(stored, prints)}; "
                                       "run without --resume and with --overwrite to start over")
                return cls(folder)
            if not overwrite:
                raise ResumeError(f"{folder}: work folder of an unfinished run exists; pass --resume to "
                                   "continue it or --overwrite to start over")
            shutil.rmtree(folder)
        return cls(folder)._init(prints)

    def _init(self, prints: dict[str, Any]) -> "WorkStore":
        (self.folder / "tiles").mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.folder / "run.json", json.dumps(prints, indent=1, sort_keys=True, default=str).encode())
        return self

    @staticmethod
    def _read_run(folder: Path) -> dict[str, Any] | None:
        try:
            return json.loads((folder / "run.json").read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- tiles -----------------------------------------------------------------------------
    def _tile_path(self, key: str) -> Path:
        return self.folder / "tiles" / f"{key}.pkl"

    def finished(self) -> set[str]:
        return {p.stem for p in (self.folder / "tiles").glob("*.pkl")}

    def save(self, key: str, result: Any) -> None:
        write_bytes_atomic(self._tile_path(key), pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))

    def load(self, key: str) -> Any:
        path = self._tile_path(key)
        try:
            return pickle.loads(path.read_bytes())
        except Exception:
            raise ResumeError(f"{path}: damaged tile result in the work folder; delete it and --resume") from None

    def scratch(self, name: str) -> Path:
        """A path inside the work folder for intermediate files of pass 2."""
        return self.folder / name


def _difference(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> str:
    if not stored:
        return "by another program or is damaged (no readable run.json)"
    if stored.get("scenes") != wanted.get("scenes"):
        return "for other scene files (or they changed since)"
    old, new = stored.get("settings", {}), wanted.get("settings", {})
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"with other settings ({', '.join(changed)})"


def settings_digest(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings, for dask task keys."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
