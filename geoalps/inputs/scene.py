"""Open and validate a scene, and compute its scene-level band statistics.

This is the one place that turns GDAL/rasterio failures into one-line ``InputError`` messages
naming the file, so nothing deeper in the pipeline has to know how GDAL fails.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoalps.errors import InputError

# Above this many pixels a scene is suspicious unless the file is big enough to hold it: the
# "huge claimed size" TIFF trick makes GDAL promise 2 billion pixels from a few hundred bytes.
_MAX_PIXELS_PER_FILE_BYTE = 50_000
#: Longest side of the decimated read used for scene statistics.
STATS_READ_PX = 1024


@dataclass(frozen=True)
class BandStats:
    """Per-band stretch limits of a scene, computed once so every tile is stretched alike."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    valid_fraction: float


@dataclass(frozen=True)
class Scene:
    """What the pipeline needs to know about one raster file; small and picklable for workers.

    ``crs_wkt`` is None only for scenes labelled in pixel coordinates (``allow_pixel_coords``).
    """

    path: str
    name: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    transform: Affine
    nodata: float | None
    stats: BandStats

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None

    @property
    def crs(self):
        from pyproj import CRS

        return CRS.from_wkt(self.crs_wkt) if self.crs_wkt else None

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the pixel grid in the scene CRS (north-up transforms)."""
        left, top = self.transform.c, self.transform.f
        right = left + self.width * self.transform.a
        bottom = top + self.height * self.transform.e
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def _fail(path: str | os.PathLike, problem: str) -> InputError:
    return InputError(f"{path}: {problem}")


def _gdal_reason(exc: Exception) -> str:
    """The useful part of a rasterio/GDAL error, on one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def valid_pixels(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Valid-data mask (H, W) of a (bands, H, W) array.

    A pixel is invalid when any band is NaN, or when every band equals the nodata value (a single
    band at nodata is a legitimate dark value in many products; a pixel outside the footprint has
    all bands at nodata). Alpha bands are deliberately not used: 4-band RGBN files are often
    mis-tagged with band 4 as alpha.
    """
    valid = np.ones(data.shape[1:], dtype=bool)
    if np.issubdtype(data.dtype, np.floating):
        valid &= ~np.isnan(data).any(axis=0)
    if nodata is not None and not math.isnan(nodata):
        if np.issubdtype(data.dtype, np.floating):
            at_nodata = np.isclose(data, nodata, rtol=1e-6, atol=0)
        else:
            at_nodata = data == nodata
        valid &= ~at_nodata.all(axis=0)
    return valid


def open_scene(
    path: str | os.PathLike,
    *,
    nodata: float | None = None,
    allow_pixel_coords: bool = False,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Scene:
    """Open ``path``, check it is usable and compute its band statistics.

    Costs one decimated read of at most ``STATS_READ_PX`` pixels on the long side (GDAL uses
    overviews when the file has them), whatever the scene size.

    Raises:
        InputError: not a raster, unreadable, implausible size, no georeferencing (unless
            ``allow_pixel_coords``), or every pixel nodata.
    """
    path = str(path)
    if not Path(path).exists():
        raise _fail(path, "file not found")
    if Path(path).is_dir():
        raise _fail(path, "is a folder, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioIOError as exc:
        reason = _gdal_reason(exc)
        if "not recognized as" in reason or "not a supported file format" in reason:
            raise _fail(path, "not a raster file GDAL can read") from None
        raise _fail(path, f"cannot open as a raster ({reason})") from None
    with src:
        if src.count < 1 or src.width < 1 or src.height < 1:
            raise _fail(path, "raster has no pixels")
        n_pixels = src.width * src.height
        file_bytes = max(os.path.getsize(path), 1)
        if n_pixels > 1_000_000 and n_pixels / file_bytes > _MAX_PIXELS_PER_FILE_BYTE and not src.overviews(1):
            raise _fail(
                path,
                f"header claims {src.width} x {src.height} pixels but the file has only "
                f"{file_bytes} bytes (truncated or corrupt)",
            )
        dtype = src.dtypes[0]
        if np.dtype(dtype).kind not in "uif":
            raise _fail(path, f"unsupported data type {dtype} (use integer or float bands)")
        crs = src.crs
        transform = src.transform
        has_transform = transform != Affine.identity() or bool(src.gcps[0])
        if crs is None or not has_transform:
            if not allow_pixel_coords:
                what = "no CRS" if has_transform else "no georeferencing (no CRS, no geotransform)"
                raise _fail(
                    path, f"{what}; pass --allow-pixel-coords to label it in pixel coordinates"
                )
            crs_wkt = None
        else:
            crs_wkt = crs.to_wkt()
        if src.gcps[0] and transform == Affine.identity():
            raise _fail(path, "georeferenced by GCPs only; warp it to a grid first (gdalwarp)")
        scene_nodata = src.nodata if nodata is None else float(nodata)
        stats = _band_stats(src, path, scene_nodata, percentiles)
        return Scene(
            path=path,
            name=Path(path).name,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=dtype,
            crs_wkt=crs_wkt,
            transform=transform,
            nodata=scene_nodata,
            stats=stats,
        )


def _band_stats(src, path: str, nodata: float | None, percentiles: tuple[float, float]) -> BandStats:
    scale = min(1.0, STATS_READ_PX / max(src.width, src.height))
    out_h = max(1, round(src.height * scale))
    out_w = max(1, round(src.width * scale))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = src.read(out_shape=(src.count, out_h, out_w))
    except RasterioIOError as exc:
        raise _fail(path, f"pixels cannot be read, file truncated or corrupt ({_gdal_reason(exc)})") from None
    valid = valid_pixels(sample, nodata)
    if not valid.any():
        raise _fail(path, "every pixel is nodata; nothing to label")
    low, high = [], []
    for band in sample:
        values = band[valid].astype(np.float64)
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
        if hi <= lo:  # a flat band: stretch around its value instead of dividing by zero
            lo, hi = float(values.min()) - 0.5, float(values.max()) + 0.5
        low.append(float(lo))
        high.append(float(hi))
    return BandStats(low=tuple(low), high=tuple(high), valid_fraction=float(valid.mean()))


def read_window(scene: Scene, window: Window) -> np.ndarray:
    """Read all bands of ``window`` as (bands, rows, cols); a read failure names file and window."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(scene.path) as src:
                return src.read(window=window)
    except RasterioIOError as exc:
        raise _fail(
            scene.path,
            f"cannot read pixels at col {int(window.col_off)}, row {int(window.row_off)} "
            f"({int(window.width)} x {int(window.height)} px): corrupt or truncated data "
            f"({_gdal_reason(exc)})",
        ) from None
