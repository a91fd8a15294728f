"""The scored grid, and every input of ``evaluate`` put on it block by block.

A prediction or truth is read through a *block reader*: window -> (class ids, valid mask or
None). Class rasters are opened through the one door to rasters
(:func:`geoalps.inputs.scene.open_dataset`: GDAL settings for remote reads, one-line errors
naming the file); polygons (truth, a geoalps output) are rasterized on the grid at pixel centres.
:mod:`geoalps.evaluation.truth` scores with them and :mod:`geoalps.evaluation.oracle` takes its
ceiling on the same pixels.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from geoalps.errors import InputError, OptionError
from geoalps.evaluation.mapping import gdal_category_names, parse_class_names
from geoalps.inputs.crs import as_crs, same_crs
from geoalps.inputs.remote import display_name, is_virtual
from geoalps.inputs.scene import open_dataset, read_pixels
from geoalps.outputs.formats import GEOPACKAGE, format_of, is_vector_path
from geoalps.outputs.raster import CLASS_NAMES_TAG, NAMES_SEPARATOR
from geoalps.outputs.vector import layer_info, read_layer

#: Field of a geoalps output holding each polygon's pseudo-class (what evaluate scores).
PREDICTION_FIELD = "pseudo_class"

#: A block reader: window -> (class ids, valid mask or None when every pixel has a value).
BlockReader = Callable[[Any], tuple]


@dataclass(frozen=True)
class Grid:
    """The pixel grid that is scored: CRS (or None), affine transform and size in pixels."""

    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of(cls, src) -> "Grid":
        return cls(src.crs, src.transform, src.width, src.height)

    def windows(self, block_px: int) -> Iterator[Any]:
        """Square windows of ``block_px`` (smaller at the right and bottom edges), row by row."""
        from rasterio.windows import Window

        for row in range(0, self.height, block_px):
            for col in range(0, self.width, block_px):
                yield Window(col, row, min(block_px, self.width - col), min(block_px, self.height - row))

    def bounds(self, window=None) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the grid or of a window, from all four corners."""
        from rasterio.windows import Window

        window = Window(0, 0, self.width, self.height) if window is None else window
        cols, rows = (window.col_off, window.col_off + window.width), (window.row_off, window.row_off + window.height)
        xs, ys = zip(*(self.transform * (c, r) for c in cols for r in rows))
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def pixel_area(self) -> float:
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)


# --------------------------------------------------------------------------------------------
# small helpers


def kind_of(path: str | os.PathLike) -> str:
    """'raster' or 'vector' by suffix (:data:`geoalps.outputs.formats.VECTOR_SUFFIXES`), after
    checking a local file is there (a URL is checked when it is opened)."""
    if not is_virtual(path) and not Path(path).exists():
        raise InputError(f"{display_name(path)}: file not found")
    return "vector" if is_vector_path(path) else "raster"


def open_class_raster(path: str | os.PathLike, stack: contextlib.ExitStack):
    """Open a class raster (band 1 is read) through the door, open until ``stack`` closes;
    integer pixels only."""
    src = stack.enter_context(open_dataset(path))
    if np.dtype(src.dtypes[0]).kind not in "ui":
        raise InputError(f"{display_name(path)}: {src.dtypes[0]} pixels; class rasters hold integer ids")
    return src


def class_names_of(src) -> list[str] | dict[int, str] | None:
    """Names in id order: geoalps's band-1 ``class_names`` tag (:mod:`geoalps.outputs.raster`),
    else a ``CLASS_NAMES`` dataset tag (comma separated, as the sample ground truths have); or
    by id: a ``CLASS_CODES`` tag (``1=water,2=developed``), else GDAL's category names or raster
    attribute table (read only where GDAL's Python bindings import:
    :func:`geoalps.evaluation.mapping.gdal_category_names`)."""
    band = src.tags(1).get(CLASS_NAMES_TAG)
    if band:
        return band.split(NAMES_SEPARATOR)
    names = [name.strip() for name in src.tags().get("CLASS_NAMES", "").split(",")]
    if any(names):
        return names
    codes = src.tags().get("CLASS_CODES") or src.tags(1).get("CLASS_CODES")
    if codes:
        try:
            return parse_class_names(codes, f"{display_name(src.name)}: tag CLASS_CODES")
        except OptionError:
            pass  # a tag we cannot read names nothing; the scores do not depend on it
    return gdal_category_names(src.name) or None


def check_crs(path, crs, grid: Grid) -> None:
    """A file without a CRS can only be placed on a grid without one, and the other way round."""
    if (crs is None) != (grid.crs is None):
        problem = "has no CRS but the scored grid has one" if crs is None else "has a CRS but the scored grid has none"
        raise InputError(f"{display_name(path)}: {problem}; cannot place one on the other")


def to_grid_bounds(bounds, crs, grid: Grid) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    return tuple(bounds) if same_crs(crs, grid.crs) else transform_bounds(as_crs(crs), grid.crs, *bounds)


def check_overlap(path, bounds, grid: Grid, other) -> None:
    """Raise when ``bounds`` (in the grid's CRS) and the grid share no area."""
    left, bottom, right, top = grid.bounds()
    if not (bounds[0] < right and bounds[2] > left and bounds[1] < top and bounds[3] > bottom):
        raise InputError(f"{display_name(path)}: does not overlap {display_name(other)}")


def _valid_of(values: np.ndarray, nodata) -> np.ndarray | None:
    return None if nodata is None else values != nodata


def burn(geoms: np.ndarray, codes: np.ndarray, grid: Grid, window) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize polygons with integer ``codes`` onto a window (pixel centres, small on top).

    Returns (codes, burnt) with codes 0 where nothing was burnt. Cost: one int32 block.
    """
    import shapely
    from rasterio import features
    from rasterio.windows import transform as window_transform

    block = np.full((int(window.height), int(window.width)), -1, np.int32)
    if len(geoms):
        order = np.argsort(-shapely.area(geoms), kind="stable")
        features.rasterize(zip(geoms[order], np.asarray(codes)[order].tolist()), out=block,
                           transform=window_transform(window, grid.transform))
    burnt = block >= 0
    return np.where(burnt, block, 0), burnt


def layer_names(path) -> list[str]:
    import pyogrio

    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio's DataSourceError is a plain Exception subclass
        raise InputError(f"{path}: cannot be read as vector data ({str(exc).splitlines()[0]})") from None


def read_frame(path, grid: Grid, columns: list[str], layer: str | None = None, bbox=None):
    """A vector layer (default: the first) as a GeoDataFrame in the grid's CRS, empty shapes dropped."""
    import pyogrio

    frame = pyogrio.read_dataframe(path, layer=layer, columns=columns, bbox=bbox)
    check_crs(path, frame.crs, grid)
    if frame.crs is not None and not same_crs(frame.crs, grid.crs):
        frame = frame.to_crs(grid.crs)
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty]


# --------------------------------------------------------------------------------------------
# readers: window -> (class ids, valid mask)


def raster_reader(path, grid: Grid, stack: contextlib.ExitStack,
                  src=None) -> tuple[BlockReader, list[str] | None, Any]:
    """A class raster read on ``grid``: as is when the grids agree, else through a nearest WarpedVRT.

    Same grid = same size and transform, and the same CRS or no CRS on one side (truth exported
    without its CRS). Valid = not the raster's nodata and inside its footprint. Returns (reader,
    CLASS_NAMES, footprint bounds in the grid's CRS). Cost: one block at a time; warping adds
    GDAL's per-block coordinate transform (approximate to 1/8 px, GDAL's default). ``src``: the
    raster already open (when it also gave the grid), so its header is read once.
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    src = open_class_raster(path, stack) if src is None else src
    names, nodata, shown = class_names_of(src), src.nodata, display_name(path)
    same = ((same_crs(src.crs, grid.crs) or src.crs is None or grid.crs is None)
            and (src.width, src.height) == (grid.width, grid.height)
            and src.transform.almost_equals(grid.transform, 1e-6 * grid.pixel_area ** 0.5))
    if same:
        def read(window):
            values = read_pixels(src, window, indexes=1, shown=shown)
            return values, _valid_of(values, nodata)

        return read, names, grid.bounds()
    check_crs(path, src.crs, grid)
    vrt = stack.enter_context(WarpedVRT(src, crs=grid.crs or src.crs, transform=grid.transform, width=grid.width,
                                        height=grid.height, resampling=Resampling.nearest, add_alpha=True))

    def read_warped(window):
        values = read_pixels(vrt, window, indexes=1, shown=shown)
        inside = read_pixels(vrt, window, indexes=vrt.count, shown=shown) > 0
        return values, inside if nodata is None else inside & (values != nodata)

    bounds = src.bounds if src.crs is None else to_grid_bounds(src.bounds, src.crs, grid)
    return read_warped, names, bounds


def _class_codes(values, path, field: str, nodata) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(kept rows, class ids, names) of a class field: text gets ids 0..n-1 in sorted order."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    keep = values.notna().to_numpy()
    if nodata is not None and numeric and not isinstance(nodata, str):
        keep = keep & (values != nodata).to_numpy()
    elif nodata is not None:
        keep = keep & (values.astype(str) != str(nodata)).to_numpy()
    kept = values[keep]
    if numeric:
        numbers = kept.to_numpy(np.float64)
        if not np.all(np.mod(numbers, 1) == 0):
            raise InputError(f"{path}: field '{field}' holds fractional numbers; class ids are whole numbers")
        return keep, numbers.astype(np.int64), None
    names, ids = np.unique(kept.astype(str).to_numpy(), return_inverse=True)
    return keep, ids.astype(np.int64).ravel(), names.tolist()


def vector_reader(path, grid: Grid, field: str | None, nodata) -> tuple[BlockReader, list[str] | None, Any]:
    """Truth polygons with a class field, rasterized on ``grid`` block by block (pixel centres).

    ``nodata``: a field value (number or text) that is not scored. Returns (reader, names for a
    text field, bounds in the grid's CRS). Cost: all polygons in memory (reprojected once) and
    an STRtree over them; one int32 block at a time.
    """
    import pyogrio
    import shapely

    layer_names(path)
    fields = list(pyogrio.read_info(path)["fields"])
    if field is None or field not in fields:
        problem = "polygon truth needs a class field (truth_field)" if field is None else f"no field '{field}'"
        raise InputError(f"{path}: {problem}; fields: {', '.join(fields) or 'none'}")
    frame = read_frame(path, grid, [field])
    keep, ids, names = _class_codes(frame[field], path, field, nodata)
    geoms = frame.geometry.to_numpy()[keep]
    if geoms.size == 0:
        raise InputError(f"{path}: no polygon has a class in field '{field}'")
    tree = shapely.STRtree(geoms)

    def read(window):
        hits = tree.query(shapely.box(*grid.bounds(window)))
        index, burnt = burn(geoms[hits], hits, grid, window)
        return ids[index], burnt

    return read, names, tuple(shapely.total_bounds(geoms))


class LayerBlocks:
    """The polygons of a geoalps output (any of its formats) meeting one block at a time, burnt
    on ``grid`` per field: :meth:`reader` gives a block reader for each field asked for, and a
    block's polygons are read once whichever fields are burnt from them.

    Each block reads only the polygons meeting it (GeoPackage/FlatGeobuf through the layer's
    spatial index; other formats scan the layer per block), so memory follows the block.
    ``optional`` fields are burnt where the layer has them; ``fields`` lists those it burns.
    ``bounds``: the layer's bounds in the grid's CRS.
    """

    def __init__(self, path, grid: Grid, fields: Sequence[str] = (PREDICTION_FIELD,),
                 optional: Sequence[str] = ()) -> None:
        fmt = format_of(path) or GEOPACKAGE
        if fmt.layer is not None:
            layers = layer_names(path)
            if fmt.layer not in layers:
                raise InputError(f"{path}: no layer '{fmt.layer}' (layers: {', '.join(layers) or 'none'})")
        info = layer_info(path, force_total_bounds=True)
        for name in fields:
            if name not in list(info["fields"]):
                raise InputError(f"{path}: layer '{fmt.layer or Path(path).stem}' has no field '{name}'")
        self.path, self.grid = path, grid
        self.fields = [*fields, *(name for name in optional if name in list(info["fields"]))]
        self.layer_crs = as_crs(info["crs"])
        check_crs(path, self.layer_crs, grid)
        self.bounds = to_grid_bounds(info["total_bounds"], self.layer_crs, grid)
        self._last: tuple[tuple, dict] | None = None

    def reader(self, field: str) -> BlockReader:
        """window -> (``field`` burnt on the window, 0 under no polygon; burnt mask)."""
        return lambda window: self._burnt(window)[field]

    def _burnt(self, window) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from rasterio.warp import transform_bounds

        key = (window.col_off, window.row_off, window.width, window.height)
        if self._last is None or self._last[0] != key:
            bbox = self.grid.bounds(window)
            reproject = self.layer_crs is not None and not same_crs(self.layer_crs, self.grid.crs)
            bbox = transform_bounds(self.grid.crs, self.layer_crs, *bbox) if reproject else bbox
            frame = prediction_frame(self.path, self.grid, self.fields, bbox=tuple(bbox))
            geoms = frame.geometry.to_numpy()
            self._last = key, {name: burn(geoms, frame[name].to_numpy(np.int64), self.grid, window)
                               for name in self.fields}
        return self._last[1]


def prediction_frame(path, grid: Grid, columns: list[str], bbox=None):
    """The rows of a geoalps output (any format) in the grid's CRS, empty shapes dropped."""
    frame = read_layer(path, columns=columns, bbox=bbox)
    check_crs(path, frame.crs, grid)
    if frame.crs is not None and not same_crs(frame.crs, grid.crs):
        frame = frame.to_crs(grid.crs)
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty]
