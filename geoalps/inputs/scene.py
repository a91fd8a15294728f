"""Open and validate a scene, and compute its scene-level band statistics.

This is the one place that turns GDAL/rasterio failures into one-line ``InputError`` messages
naming the file (or the URL, redacted), so nothing deeper in the pipeline has to know how GDAL
fails. Scenes may be local files, URLs, GDAL virtual file system paths or in-memory VRT XML
(STAC items); they are opened and read under :func:`geoalps.inputs.remote.gdal_env`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoalps.errors import InputError
from geoalps.inputs.aoi import AreaOfInterest, inside_mask
from geoalps.inputs.bands import BandRoles, scene_band_roles
from geoalps.inputs.remote import base_name, display_name, gdal_env, gdal_path, is_virtual, redact

# Above this many pixels a scene is suspicious unless the file is big enough to hold it: the
# "huge claimed size" TIFF trick makes GDAL promise 2 billion pixels from a few hundred bytes.
_MAX_PIXELS_PER_FILE_BYTE = 50_000
#: Longest side of the decimated read used for scene statistics.
STATS_READ_PX = 1024


@dataclass(frozen=True)
class BandStats:
    """Per-band stretch limits of a scene, computed once so every tile is stretched alike.

    ``mean``/``std`` (population std) and ``sample_px`` (pixels they average) are per band, over
    the valid pixels of the same decimated read, so training standardises bands without reading
    the scene again (combine scenes with :func:`pooled_mean_std`). Empty when not computed.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    valid_fraction: float
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    sample_px: tuple[int, ...] = ()


@dataclass(frozen=True)
class Scene:
    """What the pipeline needs to know about one raster file; small and picklable for workers.

    ``crs_wkt`` is None only for scenes labelled in pixel coordinates (``allow_pixel_coords``).
    ``path`` is what GDAL opens (it may hold a signed URL's credentials: never print it; print
    :attr:`shown`). With an area of interest the scene is the AOI's window of the file: width,
    height and transform are the window's, ``col_off``/``row_off`` where it starts in the file,
    and ``aoi_wkb`` the AOI in window pixels when pixels outside it count as nodata.
    ``band_roles``: what each band is (:mod:`geoalps.inputs.bands`), decided once at opening.
    """

    path: str = field(repr=False)  # may hold credentials (and a VRT's whole XML): not in reprs or logs
    name: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    transform: Affine
    nodata: float | None
    stats: BandStats
    source: str = ""
    col_off: int = 0
    row_off: int = 0
    aoi_wkb: bytes | None = None
    band_roles: BandRoles = field(default_factory=BandRoles)

    @property
    def shown(self) -> str:
        """The scene as messages and outputs name it (credentials removed)."""
        return self.source or display_name(self.path)

    def file_window(self, window: Window) -> Window:
        """A window of this scene's grid as a window of the file."""
        return Window(window.col_off + self.col_off, window.row_off + self.row_off, window.width, window.height)

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
    return InputError(f"{display_name(path)}: {redact(problem)}")


def _gdal_reason(exc: Exception) -> str:
    """The useful part of a rasterio/GDAL error, on one line (URLs in it redacted)."""
    text = " ".join(str(exc).split())
    return redact(text) or type(exc).__name__


def _remote_problem(reason: str) -> str | None:
    """A missing or forbidden remote scene, said plainly; None for other failures."""
    if "response code: 404" in reason or "No such file or directory" in reason or "does not exist" in reason:
        return "not found (HTTP 404 or no such object)"
    if "response code: 403" in reason or "response code: 401" in reason or "Access Denied" in reason:
        return "access forbidden (HTTP 403/401): check the URL's signature or the AWS_*/GS_*/AZURE_* credentials"
    return None


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


def open_raster(path: str | os.PathLike, mode: str = "r",
                **profile) -> rasterio.io.DatasetReader | rasterio.io.DatasetWriter:
    """``rasterio.open`` without rasterio's NotGeoreferencedWarning: geoalps reads and writes
    rasters in pixel coordinates on purpose (``--allow-pixel-coords`` scenes, their class
    rasters) and says so itself where it matters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, mode, **profile)


def open_scene(
    path: str | os.PathLike,
    *,
    nodata: float | None = None,
    allow_pixel_coords: bool = False,
    percentiles: tuple[float, float] = (2.0, 98.0),
    aoi: AreaOfInterest | None = None,
    name: str | None = None,
    shown: str | None = None,
    band_names: str | None = None,
) -> Scene:
    """Open ``path`` (a file, URL, GDAL virtual path or VRT XML), check it is usable and compute
    its band statistics; with ``aoi`` the scene is the AOI's window of the file.

    Costs one decimated read of at most ``STATS_READ_PX`` pixels on the long side of the scene
    (or of the AOI window; GDAL uses overviews when the file has them), whatever the scene
    size; for a remote scene that is the header and the blocks (or overview) of that read.
    ``name``/``shown``: the scene's name (``scene`` column) and how messages name it, when
    they are not the file's (a STAC item). ``band_names``: ``--band-names`` (the bands' roles,
    one a band); without it the roles come from the file's header.

    Raises:
        InputError: not a raster, unreadable, missing or forbidden URL, implausible size, no
            georeferencing (unless ``allow_pixel_coords``), AOI outside, or every pixel nodata.
        OptionError: ``band_names`` does not fit the file (number of names, unknown name).
    """
    path = str(path)
    virtual = is_virtual(path)
    shown = shown or display_name(path)
    src = _opened(path, shown)
    with src, gdal_env():
        scene = _checked_scene(src, path, shown, name, nodata, allow_pixel_coords, percentiles, aoi, virtual)
        roles = scene_band_roles(src.count, src.descriptions, src.colorinterp, band_names, shown)
    return replace(scene, band_roles=roles)


def _opened(path: str, shown: str):
    """``path`` opened for reading under :func:`gdal_env`, or a one-line ``InputError``."""
    virtual = is_virtual(path)
    if not virtual and not Path(path).exists():
        raise _fail(shown, "file not found")
    if not virtual and Path(path).is_dir():
        raise _fail(shown, "is a folder, not a raster file")
    try:
        with gdal_env():
            return open_raster(gdal_path(path))
    except RasterioIOError as exc:
        reason = _gdal_reason(exc)
        if virtual and _remote_problem(reason):
            raise _fail(shown, _remote_problem(reason)) from None
        if "not recognized as" in reason or "not a supported file format" in reason:
            raise _fail(shown, "not a raster file GDAL can read") from None
        raise _fail(shown, f"cannot open as a raster ({reason})") from None


@contextlib.contextmanager
def open_dataset(path: str | os.PathLike, *, shown: str | None = None) -> Iterator[rasterio.io.DatasetReader]:
    """A raster that is not a scene (a class raster, a ground truth), opened as scenes are: under
    :func:`gdal_env` (remote reads, retries) for the whole block, with the one-line errors of
    :func:`open_scene` (missing, a folder, not a raster, forbidden URL) naming ``shown`` (default:
    the file, URL redacted). Costs the header only: no statistics, no georeferencing required.
    Read its pixels with :func:`read_pixels` to get the same one-line read errors.

    Raises:
        InputError: the raster cannot be opened.
    """
    path = str(path)
    src = _opened(path, shown or display_name(path))
    with src, gdal_env():
        yield src


def _checked_scene(src, path: str, shown: str, name: str | None, nodata, allow_pixel_coords: bool,
                   percentiles, aoi: AreaOfInterest | None, virtual: bool) -> Scene:
    if src.count < 1 or src.width < 1 or src.height < 1:
        raise _fail(shown, "raster has no pixels")
    n_pixels = src.width * src.height
    # a remote file's size is not known without a request; the check guards local files
    if not virtual:
        file_bytes = max(os.path.getsize(path), 1)
        if n_pixels > 1_000_000 and n_pixels / file_bytes > _MAX_PIXELS_PER_FILE_BYTE and not src.overviews(1):
            raise _fail(
                shown,
                f"header claims {src.width} x {src.height} pixels but the file has only "
                f"{file_bytes} bytes (truncated or corrupt)",
            )
    dtype = src.dtypes[0]
    if np.dtype(dtype).kind not in "uif":
        raise _fail(shown, f"unsupported data type {dtype} (use integer or float bands)")
    crs = src.crs
    transform = src.transform
    has_transform = transform != Affine.identity() or bool(src.gcps[0])
    if crs is None or not has_transform:
        if not allow_pixel_coords:
            what = "no CRS" if has_transform else "no georeferencing (no CRS, no geotransform)"
            raise _fail(shown, f"{what}; pass --allow-pixel-coords to label it in pixel coordinates")
        crs_wkt = None
    else:
        crs_wkt = crs.to_wkt()
    if src.gcps[0] and transform == Affine.identity():
        raise _fail(shown, "georeferenced by GCPs only; warp it to a grid first (gdalwarp)")
    window, aoi_wkb = Window(0, 0, src.width, src.height), None
    if aoi is not None:
        window, aoi_wkb = aoi.on_grid(crs_wkt, transform, src.width, src.height, shown)
    scene_nodata = src.nodata if nodata is None else float(nodata)
    stats = _band_stats(src, shown, scene_nodata, percentiles, window, aoi_wkb)
    return Scene(
        path=path,
        name=name or base_name(path),
        width=int(window.width),
        height=int(window.height),
        count=src.count,
        dtype=dtype,
        crs_wkt=crs_wkt,
        transform=src.window_transform(window),
        nodata=scene_nodata,
        stats=stats,
        source=shown,
        col_off=int(window.col_off),
        row_off=int(window.row_off),
        aoi_wkb=aoi_wkb,
    )


def _band_stats(src, shown: str, nodata: float | None, percentiles: tuple[float, float], window: Window,
                aoi_wkb: bytes | None) -> BandStats:
    width, height = int(window.width), int(window.height)
    scale = min(1.0, STATS_READ_PX / max(width, height))
    out_h = max(1, round(height * scale))
    out_w = max(1, round(width * scale))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = _decimated_read(src, window, out_h, out_w)
    except RasterioIOError as exc:
        raise _fail(shown, f"pixels cannot be read, file truncated or corrupt ({_gdal_reason(exc)})") from None
    valid = valid_pixels(sample, nodata)
    inside = inside_mask(aoi_wkb, Window(0, 0, width, height), (out_h, out_w))
    if inside is not None:
        valid &= inside
    if not valid.any():
        raise _fail(shown, "every pixel is nodata; nothing to label" if inside is None
                    else "every pixel inside the area of interest is nodata; nothing to label")
    low, high, mean, std, counts = [], [], [], [], []
    for band in sample:
        values = band[valid].astype(np.float64)
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
        if hi <= lo:  # a flat band: stretch around its value instead of dividing by zero
            lo, hi = float(values.min()) - 0.5, float(values.max()) + 0.5
        low.append(float(lo))
        high.append(float(hi))
        mean.append(float(values.mean()) if values.size else 0.0)
        std.append(float(values.std()) if values.size else 0.0)
        counts.append(int(values.size))
    return BandStats(low=tuple(low), high=tuple(high), valid_fraction=float(valid.mean()), mean=tuple(mean),
                     std=tuple(std), sample_px=tuple(counts))


#: Most bytes one read of :func:`_decimated_read` decodes (picked rows of one block row, a span of
#: columns): half GDAL's block cache as geoalps sets it (:data:`geoalps.inputs.remote.REMOTE_DEFAULTS`),
#: so each block is decoded once for all bands.
DECIMATED_READ_BYTES = 32 * 2**20


def _decimated_read(src, window: Window, out_h: int, out_w: int) -> np.ndarray:
    """All bands of ``window`` at ``out_h`` x ``out_w``, the pixels GDAL's nearest-neighbour read
    picks (pixel i of n: source pixel floor((i + 0.5) * size / n) of the window).

    A file with overviews (or a read at full size) is one ``src.read``: GDAL takes the overview.
    Without them GDAL's one read decodes the window band by band, so its block cache must hold
    the whole window (485 MB of a 10240 x 10240 px RGBN scene) or decode every block once a band
    (3.5x the time there). Here the picked rows of one block row are read a span of columns at
    a time (at most :data:`DECIMATED_READ_BYTES`), each block decoded once, and picked: GDAL's
    pixels (tested), in a cache of a few blocks."""
    col0, row0, width, height = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
    whole = (col0, row0, width, height) == (0, 0, src.width, src.height)
    if (out_h, out_w) == (height, width) or src.overviews(1):
        return src.read(window=None if whole else window, out_shape=(src.count, out_h, out_w))
    rows = row0 + ((2 * np.arange(out_h, dtype=np.int64) + 1) * height) // (2 * out_h)
    cols = col0 + ((2 * np.arange(out_w, dtype=np.int64) + 1) * width) // (2 * out_w)
    block_h, block_w = src.block_shapes[0]
    pixel_bytes = src.count * np.dtype(src.dtypes[0]).itemsize
    span_w = max(block_w, DECIMATED_READ_BYTES // max(block_h * pixel_bytes, 1) // block_w * block_w)
    sample = np.empty((src.count, out_h, out_w), dtype=src.dtypes[0])
    row_runs = np.split(np.arange(out_h), np.flatnonzero(np.diff(rows // block_h)) + 1)
    for start in range(col0 - col0 % block_w, col0 + width, span_w):  # block-aligned column spans
        in_span = np.flatnonzero((cols >= start) & (cols < start + span_w))
        if not len(in_span):
            continue
        c0, c1 = int(cols[in_span[0]]), int(cols[in_span[-1]]) + 1
        for run in row_runs:  # picked rows in one block row
            r0, r1 = int(rows[run[0]]), int(rows[run[-1]]) + 1
            block = src.read(window=Window(c0, r0, c1 - c0, r1 - r0))
            sample[:, run[0]:run[-1] + 1, in_span[0]:in_span[-1] + 1] = block[:, rows[run] - r0][:, :, cols[in_span] - c0]
    return sample


def pooled_mean_std(stats: list[BandStats] | tuple[BandStats, ...]) -> tuple[list[float], list[float]]:
    """Per-band mean and std over the pooled samples of several scenes' :class:`BandStats`
    (each scene weighted by its valid sample pixels); no read. Scenes must have the same bands.

    Raises:
        ValueError: a ``BandStats`` without mean/std (not from :func:`open_scene`).
    """
    if any(len(s.mean) != len(s.low) or len(s.sample_px) != len(s.low) for s in stats):
        raise ValueError("band statistics without mean/std: open the scene with open_scene")
    n = np.array([s.sample_px for s in stats], dtype=np.float64)
    m = np.array([s.mean for s in stats], dtype=np.float64)
    sd = np.array([s.std for s in stats], dtype=np.float64)
    total = np.maximum(n.sum(axis=0), 1)
    mean = (n * m).sum(axis=0) / total
    # pooled second moment about the pooled mean: each scene's variance plus its mean's offset
    var = (n * (sd**2 + (m - mean) ** 2)).sum(axis=0) / total
    return [float(v) for v in mean], [float(v) for v in np.sqrt(np.maximum(var, 0))]


def read_window(scene: Scene, window: Window, *, boundless: bool = False,
                fill_value: float | None = None) -> np.ndarray:
    """Read all bands of ``window`` (of the scene's grid) as (bands, rows, cols); a remote scene
    fetches only the blocks the window meets, retrying transient network errors; a read failure
    names the scene and window.

    ``boundless``: the window may reach past the file's edges (a chip around an edge pixel);
    pixels outside the file are ``fill_value`` (default :func:`fill_value_of`). Without it,
    rasterio clips a window past the edges to what the file holds (a smaller array).
    """
    if boundless and fill_value is None:
        fill_value = fill_value_of(scene)
    try:
        with gdal_env(), open_raster(gdal_path(scene.path)) as src:
            return _read(src, scene.file_window(window), None, boundless, fill_value)
    except RasterioIOError as exc:
        raise _read_failure(scene.shown, is_virtual(scene.path), window, exc) from None


def fill_value_of(scene: Scene) -> float:
    """What a boundless read puts outside the file: the scene's nodata, so those pixels count as
    invalid; 0 when it has none (or NaN nodata in an integer file, which cannot hold it)."""
    nodata = scene.nodata
    if nodata is None or (math.isnan(nodata) and np.dtype(scene.dtype).kind != "f"):
        return 0
    return nodata


def read_pixels(src, window: Window | None = None, *, shown: str, indexes: int | list[int] | None = None,
                boundless: bool = False, fill_value: float | None = None, out_shape: tuple[int, ...] | None = None,
                resampling=None) -> np.ndarray:
    """``src.read`` of a dataset from :func:`open_dataset` (or a ``WarpedVRT`` over one) with the
    door's failures: a block GDAL cannot decode, a truncated file or a network error after
    retries is a one-line ``InputError`` naming ``shown`` and the window, never filled pixels.

    ``indexes``: one band (returns (rows, cols)) or a list (default: all bands, (bands, rows,
    cols)); ``boundless``/``fill_value``/``out_shape``/``resampling`` as ``rasterio``'s ``read``
    (``out_shape``: the window read at another size, e.g. a gallery chip; GDAL's overviews serve
    it when they can).
    """
    try:
        return _read(src, window, indexes, boundless, fill_value, out_shape, resampling)
    except RasterioIOError as exc:
        raise _read_failure(shown, is_virtual(src.name), window, exc) from None


def _read(src, window: Window | None, indexes, boundless: bool, fill_value, out_shape=None,
          resampling=None) -> np.ndarray:
    if boundless and window is not None and _inside(src, window):
        boundless = False  # rasterio reads boundless through a warped VRT: only past the edges
    sized = {} if out_shape is None else {"out_shape": out_shape}
    if resampling is not None:
        sized["resampling"] = resampling
    with _gdal_failures() as failures:
        data = src.read(indexes, window=window, boundless=boundless, fill_value=fill_value, **sized)
    if failures:  # a block GDAL could not decode (a corrupt JPEG tile) is filled, not raised
        raise RasterioIOError(failures[0])
    return data


def _inside(src, window: Window) -> bool:
    """Whether ``window`` lies within the file's pixels."""
    return (window.col_off >= 0 and window.row_off >= 0 and window.col_off + window.width <= src.width
            and window.row_off + window.height <= src.height)


def _read_failure(shown: str, virtual: bool, window: Window | None, exc: Exception) -> InputError:
    what = "network error after retries, or corrupt data" if virtual else "corrupt or truncated data"
    where = "" if window is None else (f" at col {int(window.col_off)}, row {int(window.row_off)} "
                                       f"({int(window.width)} x {int(window.height)} px)")
    return _fail(shown, f"cannot read pixels{where}: {what} ({_gdal_reason(exc)})")


class _FailureLog(logging.Handler):
    """Collects the GDAL failures rasterio reports through its ``rasterio._err`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno == logging.INFO and message.startswith("GDAL signalled an error"):
            self.failures.append(message.split("msg=", 1)[-1].strip("'\""))


@contextlib.contextmanager
def _gdal_failures():
    """The CE_Failure errors GDAL signals during the block: some drivers (GTiff's JPEG codec:
    "JPEGLib: Unsupported marker") report a block they cannot decode and still return pixels,
    which rasterio reads without raising; those must fail the read, never be labelled."""
    logger = logging.getLogger("rasterio._err")
    handler = _FailureLog()
    level = logger.level
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler.failures
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def valid_in_window(scene: Scene, window: Window, data: np.ndarray) -> np.ndarray:
    """:func:`valid_pixels` of ``data`` read at ``window``, minus the pixels outside the scene's
    area of interest (they count as nodata)."""
    valid = valid_pixels(data, scene.nodata)
    inside = inside_mask(scene.aoi_wkb, window)
    return valid if inside is None else valid & inside
