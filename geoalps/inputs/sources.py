"""Where scenes come from: paths, URLs, STAC items, folders of image chips, rioxarray DataArrays.

Everything becomes a path GDAL opens before tile work starts, so tasks carry a path and a
window, never pixels: a folder stands for the image files in it, a URL stays a URL (read by
ranges, by whichever process reads the tile), a STAC item becomes an in-memory VRT of its
assets, a DataArray is written to a temporary tiled GeoTIFF (chunk by chunk when dask-backed).
A local path that does not exist and holds glob characters (``scenes/*.tif``) stands for the
files it matches, sorted. A scene named twice (two spellings of one file or URL) is refused.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable

from geoalps.errors import InputError
from geoalps.inputs.remote import display_name, is_remote, same_location_key

#: File types taken from a folder given as a scene (chips such as iSAID / Potsdam patches).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img")


#: Characters that make a local path that does not exist a glob pattern.
_GLOB_CHARACTERS = re.compile(r"[*?[]")


def is_glob_pattern(path: str | os.PathLike) -> bool:
    """A local path that does not exist and holds glob characters (``*``, ``?``, ``[``)."""
    return not is_remote(path) and bool(_GLOB_CHARACTERS.search(str(path))) and not os.path.exists(path)


def expand_glob(path: str | os.PathLike) -> list[str]:
    """What a local glob pattern matches (``**`` spans folders; hidden files only when the
    pattern names them), sorted; any other path as given.

    Raises:
        InputError: a pattern that matches nothing, naming it.
    """
    if not is_glob_pattern(path):
        return [str(path)]
    found = sorted(glob.glob(str(path), recursive=True))
    if not found:
        raise InputError(f"{path}: no file matches this pattern")
    return found


def expand_scene_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Scene files in the order given; a glob pattern stands for what it matches, sorted, and a
    folder (given or matched) for the image files in it, sorted."""
    out: list[str] = []
    for given in paths:
        if is_remote(given):  # a URL or GDAL virtual path: Path() would turn // into /
            out.append(str(given))
            continue
        for path in map(Path, expand_glob(given)):
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
                if not found:
                    raise InputError(f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
                out.extend(str(p) for p in found)
            else:
                out.append(str(path))
    if not out:
        raise InputError("no scenes given")
    return out


@dataclass(frozen=True)
class SceneSource:
    """One scene to open: what GDAL opens (``path``: a file, URL, virtual path or VRT XML), its
    name (None: the file name) and how messages name it (None: the path, redacted)."""

    path: str
    name: str | None = None
    shown: str | None = None


def scene_sources(paths: Iterable[str | os.PathLike], assets: str | None = None) -> list[SceneSource]:
    """The scenes to label, in the order given: folders and glob patterns expanded, STAC items
    (``.json``) one scene per item with the bands ``assets`` names.

    Raises:
        InputError: no scenes, an empty folder, a pattern matching nothing, a bad STAC file, or
            one scene named twice.
        OptionError: ``assets`` without a STAC input, or naming bands an item lacks.
    """
    from geoalps.errors import OptionError
    from geoalps.inputs.stac import is_stac, stac_scenes

    out: list[SceneSource] = []
    seen: dict[str, str] = {}
    stac_given = False
    for location in expand_scene_paths(paths):
        if is_stac(location):
            stac_given = True
            for item in stac_scenes(location, assets):
                key = f"stac:{same_location_key(location)}#{item.name}"
                _refuse_twice(seen, key, item.shown)
                out.append(SceneSource(item.vrt_xml, item.name, item.shown))
            continue
        _refuse_twice(seen, same_location_key(location), display_name(location))
        out.append(SceneSource(location))
    if assets and not stac_given:
        raise OptionError("--assets chooses bands of STAC items; no STAC item (.json) was given")
    return out


def _refuse_twice(seen: dict[str, str], key: str, shown: str) -> None:
    if key in seen:
        again = "" if seen[key] == shown else f" (also given as {seen[key]})"
        raise InputError(f"{shown}: scene given twice{again}; it would be labelled twice into duplicate polygons")
    seen[key] = shown


def materialise_arrays(scenes, cleanup: contextlib.ExitStack, allow_pixel_coords: bool) -> list:
    """rioxarray DataArrays become temporary tiled GeoTIFFs (written chunk by chunk when
    dask-backed), so tasks still carry only a path and a window."""
    items = [scenes] if isinstance(scenes, (str, os.PathLike)) or _is_dataarray(scenes) else list(scenes)
    out = []
    folder = None
    for number, item in enumerate(items):
        if not _is_dataarray(item):
            out.append(item)
            continue
        if folder is None:
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="geoalps-arrays-")))
        name = str(item.name) if item.name is not None else f"array_{number}"
        path = folder / f"{name}.tif"
        array = item if "band" in item.dims else item.expand_dims("band")
        if array.rio.crs is None and not allow_pixel_coords:
            raise InputError(f"{name}: DataArray has no CRS or transform (set them with rioxarray's "
                               ".rio.write_crs / .rio.write_transform, or pass allow_pixel_coords)")
        array.rio.to_raster(path, tiled=True, blockxsize=256, blockysize=256, compress="deflate", windowed=True)
        out.append(str(path))
    return out


def _is_dataarray(item) -> bool:
    return type(item).__name__ == "DataArray" and hasattr(item, "rio")
