"""The area of interest (``--aoi``): a box or a vector file, as a pixel window of each scene.

The AOI becomes, per scene, a window on the scene's own pixel grid (tiles are planned only over
it, the label raster covers it) and, when it is not a box of whole pixels, a validity mask:
pixels whose centre lies outside it count as nodata. So polygons are clipped at pixel edges and
stay on the grid, and nothing outside the window is ever read.

Syntax: ``--aoi minx,miny,maxx,maxy`` (in the scene's CRS, or in ``--aoi-crs``), or
``--aoi FILE`` (any OGR vector file; its own CRS, or ``--aoi-crs`` when it has none). An http(s)
file is fetched whole (at most :data:`MAX_AOI_BYTES`) with the user's GDAL HTTP settings and
retries (:mod:`geoalps.inputs.http`) and read from memory: pyogrio's own GDAL has none of them.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.windows import Window

from geoalps.errors import InputError, OptionError
from geoalps.inputs.http import fetch_bytes
from geoalps.inputs.remote import display_name, gdal_path, is_http, is_remote

#: The largest http(s) ``--aoi`` file fetched (it is held in memory).
MAX_AOI_BYTES = 256 * 2**20
#: Formats whose companion files GDAL fetches next to the URL (``.shx``, ``.dbf``, ...): read
#: through ``/vsicurl/`` as before, without the HTTP settings (a zipped shapefile is fetched).
_MULTI_FILE = (".shp", ".tab", ".mif")


@dataclass(frozen=True)
class AreaOfInterest:
    """The AOI as given, resolved once: a geometry (WKB) and its CRS (None: the scene's CRS)."""

    wkb: bytes
    crs_wkt: str | None
    shown: str  # how messages name it

    @property
    def geometry(self):
        import shapely

        return shapely.from_wkb(self.wkb)

    def fingerprint(self) -> dict:
        """What the resume fingerprint records: the geometry itself, not the file it came from."""
        import shapely

        return {"wkt": shapely.to_wkt(self.geometry, rounding_precision=9), "crs": self.crs_wkt}

    def on_grid(self, crs_wkt: str | None, transform: Affine, width: int, height: int,
                scene: str) -> tuple[Window, bytes | None]:
        """(window, mask geometry) of this AOI on a scene grid: the window of pixels whose centres
        may lie inside, and the AOI in that window's pixel coordinates (WKB) or None when every
        pixel of the window is inside (a box in the scene's CRS on a north-up grid).

        Raises:
            InputError: the AOI does not meet the scene.
        """
        import shapely

        geometry = self.geometry
        if self.crs_wkt is not None:
            if crs_wkt is None:
                raise InputError(f"{scene}: has no CRS, so the AOI in another CRS cannot be placed on it")
            geometry = _reproject(geometry, self.crs_wkt, crs_wkt)
        inverse = ~transform
        pixel = shapely.affinity.affine_transform(
            geometry, (inverse.a, inverse.b, inverse.d, inverse.e, inverse.c, inverse.f))
        minx, miny, maxx, maxy = pixel.bounds
        # whole pixels whose centres can be inside: round edges to the nearest pixel boundary
        col0, row0 = max(0, math.floor(minx + 0.5)), max(0, math.floor(miny + 0.5))
        col1, row1 = min(width, math.ceil(maxx - 0.5)), min(height, math.ceil(maxy - 0.5))
        if col1 <= col0 or row1 <= row0 or pixel.is_empty:
            raise InputError(f"{scene}: the area of interest {self.shown} does not meet the scene")
        window = Window(col0, row0, col1 - col0, row1 - row0)
        local = shapely.affinity.translate(pixel, -col0, -row0)
        envelope = shapely.box(*local.bounds)
        if local.equals(envelope) or abs(envelope.area - local.area) <= 1e-9 * max(envelope.area, 1):
            return window, None
        return window, shapely.to_wkb(local)


def inside_mask(geometry_wkb: bytes | None, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """Boolean (rows, cols) mask of the pixels of ``window`` (in the AOI window's pixel
    coordinates) whose centres lie inside the AOI; ``out_shape`` for a decimated read of it.
    None when there is no mask geometry (every pixel inside)."""
    if geometry_wkb is None:
        return None
    import shapely
    from rasterio.features import geometry_mask

    height, width = int(window.height), int(window.width)
    shape = out_shape or (height, width)
    transform = Affine.translation(window.col_off, window.row_off) * Affine.scale(width / shape[1], height / shape[0])
    return geometry_mask([shapely.from_wkb(geometry_wkb)], out_shape=shape, transform=transform, invert=True)


def load_aoi(spec: str | None, crs: str | None = None) -> AreaOfInterest | None:
    """``--aoi`` / ``--aoi-crs`` -> an :class:`AreaOfInterest` (None without ``--aoi``).

    Reading a vector file costs one pass over its features (they are unioned).

    Raises:
        OptionError: not four numbers and not a vector file; a bad CRS; an inverted box.
        InputError: the vector file cannot be read or holds no geometry.
    """
    if spec is None or not str(spec).strip():
        if crs:
            raise OptionError("--aoi-crs needs --aoi")
        return None
    import shapely

    crs_wkt = _crs_wkt(crs) if crs else None
    text = str(spec).strip()
    numbers = _four_numbers(text)
    if numbers is not None:
        minx, miny, maxx, maxy = numbers
        if not (minx < maxx and miny < maxy):
            raise OptionError(f"--aoi {text}: expected minx,miny,maxx,maxy with minx < maxx and miny < maxy")
        return AreaOfInterest(shapely.to_wkb(shapely.box(minx, miny, maxx, maxy)), crs_wkt, f"--aoi {text}")
    if not is_remote(text) and not os.path.exists(text):
        raise OptionError(f"--aoi {text}: neither minx,miny,maxx,maxy nor an existing vector file")
    return _from_vector(text, crs_wkt)


def _four_numbers(text: str) -> tuple[float, ...] | None:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        return None
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _crs_wkt(crs: str) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs).to_wkt()
    except CRSError:
        raise OptionError(f"--aoi-crs {crs!r}: not a CRS (use e.g. EPSG:4326)") from None


def _from_vector(location: str, crs_wkt: str | None) -> AreaOfInterest:
    import pyogrio
    import shapely
    from pyogrio.errors import DataLayerError, DataSourceError

    shown = display_name(location)
    source: str | bytes = gdal_path(location)
    if is_http(location) and not location.split("?", 1)[0].lower().endswith(_MULTI_FILE):
        source = fetch_bytes(location, shown, max_bytes=MAX_AOI_BYTES)
    try:
        with warnings.catch_warnings():  # a GeoPackage in memory has no .gpkg name
            warnings.filterwarnings("ignore", "File /vsimem/.*non conformant file extension", RuntimeWarning)
            frame = pyogrio.read_dataframe(source)
    except (DataSourceError, DataLayerError, OSError) as exc:
        reason = re.sub(r"'?/vsimem/pyogrio_\w+'?\s*", "", " ".join(str(exc).split()))
        raise InputError(f"{shown}: cannot read the area of interest ({display_name(reason)})") from None
    geometries = [g for g in frame.geometry if g is not None and not g.is_empty]
    polygons = [g for g in geometries if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        raise InputError(f"{shown}: the area of interest holds no polygon")
    geometry = shapely.union_all(shapely.make_valid(np.array(polygons, dtype=object)))
    if frame.crs is not None:
        crs_wkt = frame.crs.to_wkt()
    return AreaOfInterest(shapely.to_wkb(geometry), crs_wkt, shown)


def _reproject(geometry, src_wkt: str, dst_wkt: str):
    """``geometry`` from one CRS to another, edges densified first so a box stays the curved
    shape it really is in the target CRS."""
    import shapely
    from pyproj import CRS, Transformer

    src, dst = CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt)
    if src == dst:
        return geometry
    minx, miny, maxx, maxy = geometry.bounds
    dense = shapely.segmentize(geometry, max(maxx - minx, maxy - miny) / 100 or 1.0)
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
