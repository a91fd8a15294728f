"""Where scenes come from: paths, folders of image chips, rioxarray DataArrays.

Everything becomes a path before tile work starts, so tasks carry a path and a window, never
pixels: a folder stands for the image files in it, a DataArray is written to a temporary tiled
GeoTIFF (chunk by chunk when dask-backed).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

from geoalps.errors import InputError

#: File types taken from a folder given as a scene (chips such as iSAID / Potsdam patches).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img")


def expand_scene_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Scene files in the order given; a folder stands for the image files in it, sorted."""
    out: list[str] = []
    for path in paths:
        path = Path(path)
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
