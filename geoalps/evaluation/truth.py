"""Ground truth onto the prediction's grid, block by block, and the whole pseudo-label evaluation.

Which grid is scored:
    * prediction a label raster (``geoalps label --raster-out``): its own grid. A truth raster on
      another grid or CRS is resampled by nearest neighbour (a WarpedVRT read window by window);
      truth polygons are rasterized (pixel centres) with their class field.
    * prediction a geoalps GeoPackage (layer ``masks``, field ``pseudo_class``): the truth
      raster's grid, with the polygons rasterized onto it block by block.

Truth pixels outside the truth's footprint, on its nodata (or ``truth_nodata``), or under no truth
polygon are not scored; prediction nodata on a scored pixel is a miss (DESIGN.md).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from geoalps.errors import InputError, OptionError
from geoalps.inputs.crs import as_crs, same_crs
from geoalps.outputs.raster import CLASS_NAMES_TAG, NAMES_SEPARATOR
from geoalps.outputs.formats import GEOPACKAGE, format_of
from geoalps.outputs.vector import LAYER, layer_info, read_layer
from geoalps.evaluation.mapping import check_mapping, gdal_category_names, identity_scores, parse_class_names
from geoalps.evaluation.pseudo_labels import (ContingencyAccumulator, object_recall, pseudo_label_scores,
                                              raster_objects)

#: Suffixes read as vector files (pyogrio); everything else is opened as a raster.
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet", ".gml", ".kml",
                   ".sqlite")
PREDICTION_LAYER = LAYER
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


def _kind(path: str | os.PathLike) -> str:
    """'raster' or 'vector' by suffix, after checking the file is there."""
    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    return "vector" if Path(path).suffix.lower() in VECTOR_SUFFIXES else "raster"


def _open_raster(path: str | os.PathLike, stack: contextlib.ExitStack):
    """Open a class raster (band 1 is read); integer pixels only."""
    import rasterio

    try:
        src = stack.enter_context(rasterio.open(path))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot be read as a raster ({str(exc).splitlines()[0]})") from None
    if np.dtype(src.dtypes[0]).kind not in "ui":
        raise InputError(f"{path}: {src.dtypes[0]} pixels; class rasters hold integer ids")
    return src


def _class_names(src) -> list[str] | dict[int, str] | None:
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
            return parse_class_names(codes, f"{src.name}: tag CLASS_CODES")
        except OptionError:
            pass  # a tag we cannot read names nothing; the scores do not depend on it
    return gdal_category_names(src.name) or None


def _check_crs(path, crs, grid: Grid) -> None:
    """A file without a CRS can only be placed on a grid without one, and the other way round."""
    if (crs is None) != (grid.crs is None):
        problem = "has no CRS but the scored grid has one" if crs is None else "has a CRS but the scored grid has none"
        raise InputError(f"{path}: {problem}; cannot place one on the other")


def _to_grid_bounds(bounds, crs, grid: Grid) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    return tuple(bounds) if same_crs(crs, grid.crs) else transform_bounds(as_crs(crs), grid.crs, *bounds)


def _check_overlap(path, bounds, grid: Grid, other) -> None:
    """Raise when ``bounds`` (in the grid's CRS) and the grid share no area."""
    left, bottom, right, top = grid.bounds()
    if not (bounds[0] < right and bounds[2] > left and bounds[1] < top and bounds[3] > bottom):
        raise InputError(f"{path}: does not overlap {other}")


def _valid_of(values: np.ndarray, nodata) -> np.ndarray | None:
    return None if nodata is None else values != nodata


def _burn(geoms: np.ndarray, codes: np.ndarray, grid: Grid, window) -> tuple[np.ndarray, np.ndarray]:
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


def _layers(path) -> list[str]:
    import pyogrio

    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio's DataSourceError is a plain Exception subclass
        raise InputError(f"{path}: cannot be read as vector data ({str(exc).splitlines()[0]})") from None


def _read_frame(path, grid: Grid, columns: list[str], layer: str | None = None, bbox=None):
    """A vector layer (default: the first) as a GeoDataFrame in the grid's CRS, empty shapes dropped."""
    import pyogrio

    frame = pyogrio.read_dataframe(path, layer=layer, columns=columns, bbox=bbox)
    _check_crs(path, frame.crs, grid)
    if frame.crs is not None and not same_crs(frame.crs, grid.crs):
        frame = frame.to_crs(grid.crs)
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty]


# --------------------------------------------------------------------------------------------
# readers: window -> (class ids, valid mask)


def _raster_reader(path, grid: Grid, stack: contextlib.ExitStack) -> tuple[BlockReader, list[str] | None, Any]:
    """A class raster read on ``grid``: as is when the grids agree, else through a nearest WarpedVRT.

    Same grid = same size and transform, and the same CRS or no CRS on one side (truth exported
    without its CRS). Valid = not the raster's nodata and inside its footprint. Returns (reader,
    CLASS_NAMES, footprint bounds in the grid's CRS). Cost: one block at a time; warping adds
    GDAL's per-block coordinate transform (approximate to 1/8 px, GDAL's default).
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    src = _open_raster(path, stack)
    names, nodata = _class_names(src), src.nodata
    same = ((same_crs(src.crs, grid.crs) or src.crs is None or grid.crs is None)
            and (src.width, src.height) == (grid.width, grid.height)
            and src.transform.almost_equals(grid.transform, 1e-6 * grid.pixel_area ** 0.5))
    if same:
        def read(window):
            values = src.read(1, window=window)
            return values, _valid_of(values, nodata)

        return read, names, grid.bounds()
    _check_crs(path, src.crs, grid)
    vrt = stack.enter_context(WarpedVRT(src, crs=grid.crs or src.crs, transform=grid.transform, width=grid.width,
                                        height=grid.height, resampling=Resampling.nearest, add_alpha=True))

    def read_warped(window):
        values, inside = vrt.read(1, window=window), vrt.read(vrt.count, window=window) > 0
        return values, inside if nodata is None else inside & (values != nodata)

    bounds = src.bounds if src.crs is None else _to_grid_bounds(src.bounds, src.crs, grid)
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


def _vector_reader(path, grid: Grid, field: str | None, nodata) -> tuple[BlockReader, list[str] | None, Any]:
    """Truth polygons with a class field, rasterized on ``grid`` block by block (pixel centres).

    ``nodata``: a field value (number or text) that is not scored. Returns (reader, names for a
    text field, bounds in the grid's CRS). Cost: all polygons in memory (reprojected once) and
    an STRtree over them; one int32 block at a time.
    """
    import pyogrio
    import shapely

    _layers(path)
    fields = list(pyogrio.read_info(path)["fields"])
    if field is None or field not in fields:
        problem = "polygon truth needs a class field (truth_field)" if field is None else f"no field '{field}'"
        raise InputError(f"{path}: {problem}; fields: {', '.join(fields) or 'none'}")
    frame = _read_frame(path, grid, [field])
    keep, ids, names = _class_codes(frame[field], path, field, nodata)
    geoms = frame.geometry.to_numpy()[keep]
    if geoms.size == 0:
        raise InputError(f"{path}: no polygon has a class in field '{field}'")
    tree = shapely.STRtree(geoms)

    def read(window):
        hits = tree.query(shapely.box(*grid.bounds(window)))
        index, burnt = _burn(geoms[hits], hits, grid, window)
        return ids[index], burnt

    return read, names, tuple(shapely.total_bounds(geoms))


def _layer_reader(path, grid: Grid) -> tuple[BlockReader, Any]:
    """The layer of a geoalps output (any of its formats), rasterized on ``grid`` block by block.

    Each block reads only the polygons meeting it (GeoPackage/FlatGeobuf through the layer's
    spatial index; other formats scan the layer per block), so memory follows the block.
    Returns (reader, layer bounds in the grid's CRS).
    """
    from rasterio.warp import transform_bounds

    fmt = format_of(path) or GEOPACKAGE
    if fmt.layer is not None:
        layers = _layers(path)
        if fmt.layer not in layers:
            raise InputError(f"{path}: no layer '{fmt.layer}' (layers: {', '.join(layers) or 'none'})")
    info = layer_info(path, force_total_bounds=True)
    if PREDICTION_FIELD not in list(info["fields"]):
        raise InputError(f"{path}: layer '{fmt.layer or Path(path).stem}' has no field '{PREDICTION_FIELD}'")
    layer_crs = as_crs(info["crs"])
    _check_crs(path, layer_crs, grid)
    reproject = layer_crs is not None and not same_crs(layer_crs, grid.crs)

    def read(window):
        bbox = grid.bounds(window)
        bbox = transform_bounds(grid.crs, layer_crs, *bbox) if reproject else bbox
        frame = _prediction_frame(path, grid, [PREDICTION_FIELD], bbox=tuple(bbox))
        return _burn(frame.geometry.to_numpy(), frame[PREDICTION_FIELD].to_numpy(np.int64), grid, window)

    return read, _to_grid_bounds(info["total_bounds"], layer_crs, grid)


def _prediction_frame(path, grid: Grid, columns: list[str], bbox=None):
    """The rows of a geoalps output (any format) in the grid's CRS, empty shapes dropped."""
    frame = read_layer(path, columns=columns, bbox=bbox)
    _check_crs(path, frame.crs, grid)
    if frame.crs is not None and not same_crs(frame.crs, grid.crs):
        frame = frame.to_crs(grid.crs)
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty]


def _readers(prediction, truth, truth_field, truth_nodata, stack) -> tuple[Grid, BlockReader, BlockReader, dict]:
    """The scored grid, the prediction and truth readers on it, and what is known (names, grid)."""
    if _kind(prediction) == "raster":
        src = _open_raster(prediction, stack)
        grid = Grid.of(src)
        pred, pred_names, pred_bounds = _raster_reader(prediction, grid, stack)
        if _kind(truth) == "raster":
            truth_reader, names, truth_bounds = _raster_reader(truth, grid, stack)
        else:
            truth_reader, names, truth_bounds = _vector_reader(truth, grid, truth_field, truth_nodata)
    else:
        if _kind(truth) != "raster":
            raise InputError(f"{truth}: a GeoPackage prediction needs a truth raster (its grid is scored)")
        grid = Grid.of(_open_raster(truth, stack))
        truth_reader, names, truth_bounds = _raster_reader(truth, grid, stack)
        pred, pred_bounds = _layer_reader(prediction, grid)
        pred_names = None
    _check_overlap(truth, truth_bounds, grid, prediction)
    _check_overlap(prediction, pred_bounds, grid, truth)
    info = {"class_names": names, "prediction_names": pred_names,
            "grid": "prediction" if _kind(prediction) == "raster" else "truth"}
    return grid, pred, truth_reader, info


# --------------------------------------------------------------------------------------------
# objects


def _polygons(path, grid: Grid, layer: str | None = None, by: str = "component",
              classes=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(geometries in the grid's CRS, exact sizes in px or None) of a raster or a vector file.

    Rasters become connected components (or ids) with :func:`raster_objects`, read whole;
    vector files are read whole (``layer``, default the first).
    """
    import geopandas as gpd

    if _kind(path) == "vector":
        _layers(path)
        return _read_frame(path, grid, [], layer).geometry.to_numpy(), None
    with contextlib.ExitStack() as stack:
        src = _open_raster(path, stack)
        _check_crs(path, src.crs, grid)
        geoms, _, sizes = raster_objects(src.read(1), src.transform, nodata=src.nodata, by=by, classes=classes)
        crs = src.crs
    if crs is not None and not same_crs(crs, grid.crs) and geoms.size:
        geoms = gpd.GeoSeries(geoms, crs=crs).to_crs(grid.crs).to_numpy()
    return geoms, sizes


def _object_scores(prediction, objects, grid: Grid, *, iou_threshold: float, by: str, classes,
                   min_size_px: int, box: bool) -> dict[str, Any]:
    """Object recall of the prediction's polygons (GeoPackage) or components (label raster)."""
    if _kind(prediction) == "vector":
        layer_info(prediction)
        pred_geoms = _prediction_frame(prediction, grid, []).geometry.to_numpy()
    else:
        pred_geoms, _ = _polygons(prediction, grid)
    true_geoms, sizes = _polygons(objects, grid, by=by, classes=classes)
    return object_recall(pred_geoms, true_geoms, iou_threshold, min_size_px=min_size_px,
                         pixel_area=grid.pixel_area, sizes_px=sizes, box=box)


# --------------------------------------------------------------------------------------------
# the evaluation


def _accumulate(pred: BlockReader, truth: BlockReader, grid: Grid, truth_nodata,
                block_px: int) -> ContingencyAccumulator:
    """One pass over the grid's blocks. Cost: one block of each input in memory at a time."""
    if block_px < 1:
        raise OptionError(f"block_px: {block_px}; blocks need at least 1 px")
    acc = ContingencyAccumulator(pred_nodata=None, truth_nodata=truth_nodata)
    for window in grid.windows(block_px):
        p, p_valid = pred(window)
        t, t_valid = truth(window)
        acc.add(p, t, pred_valid=p_valid, truth_valid=t_valid)
    return acc


def evaluate_pseudo_labels(prediction: str | os.PathLike, truth: str | os.PathLike, *,
                           truth_field: str | None = None, truth_nodata: float | str | None = None,
                           objects: str | os.PathLike | None = None, iou_threshold: float = 0.5,
                           block_px: int = 1024, objects_by: str = "component",
                           object_classes: Iterable[int] | None = None, min_object_px: int = 64,
                           box: bool = False, mapping: str | None = None,
                           truth_names: dict[int, str] | str | None = None) -> dict[str, Any]:
    """Score pseudo-labels against a ground truth (DESIGN.md, "Pseudo-label metrics").

    Parameters
    ----------
    prediction : label raster (``geoalps label --raster-out``) or geoalps GeoPackage.
    truth : class raster (any grid and CRS; CLASS_NAMES tag read) or polygons with ``truth_field``.
    truth_nodata : a truth value not scored, beside the raster's own nodata (e.g. an "unknown" class).
    objects : instance/class raster or polygons of true objects, for object recall; rasters give
        4-connected components (``objects_by="value"``: one object per id, 0 = background),
        ``object_classes`` keeps only those values, objects under ``min_object_px`` are not counted.
    box : compare bounding boxes (tree crowns against box annotations).
    mapping : how predicted ids meet true ids (:mod:`geoalps.evaluation.mapping`): "many-to-one"
        and "hungarian" match pseudo-classes (both sets of scores are computed; ``scored_as`` says
        which one leads), "identity" scores the ids as they are (``identity``). None: identity
        for a ``geoalps predict`` raster, many-to-one otherwise.
    truth_names : names of true classes by id ({1: "water"} or "1=water,2=developed"), over the
        names the truth carries (tags, GDAL categories).

    Returns
    -------
    JSON-serialisable dict: the keys of :func:`pseudo_label_scores`, ``contingency`` (pseudo ids,
    true ids, the table with "no prediction" as its last row), ``class_names``, ``grid``
    ("prediction" or "truth"), the inputs, ``scored_as`` (the mapping), ``prediction_names`` (the
    prediction raster's ``class_names`` tag, or None), ``identity`` (with the identity mapping:
    :func:`geoalps.evaluation.mapping.identity_scores`), and ``object_recall`` when ``objects`` is
    given.

    Notes
    -----
    Memory is one ``block_px`` square block of each input plus the contingency table; polygon
    truth is held whole, and object recall reads its rasters and layers whole.
    """
    if isinstance(truth_nodata, str) and _kind(truth) == "raster":
        raise OptionError(f"{truth}: truth_nodata {truth_nodata!r} is text but the raster holds class numbers")
    if isinstance(truth_names, str):
        truth_names = parse_class_names(truth_names)
    mapping = check_mapping(mapping, prediction if _kind(prediction) == "raster" else None)
    with contextlib.ExitStack() as stack:
        grid, pred, truth_reader, info = _readers(prediction, truth, truth_field, truth_nodata, stack)
        vector_truth = _kind(truth) == "vector"
        acc = _accumulate(pred, truth_reader, grid, None if vector_truth else truth_nodata, block_px)
    if truth_names:
        info["class_names"] = _with_names(info["class_names"], truth_names)
    table, pred_ids, true_ids = acc.result()
    if table.sum() == 0:
        raise InputError(f"{truth}: no valid truth pixel where it meets {prediction}")
    result = pseudo_label_scores(table, pred_ids, true_ids, info["class_names"])
    result["contingency"] = {"pseudo_classes": pred_ids.tolist(), "true_classes": true_ids.tolist(),
                             "pixels": table.tolist(), "last_row": "no prediction"}
    result.update(prediction=str(prediction), truth=str(truth), truth_field=truth_field,
                  class_names=_json_names(info["class_names"]), grid=info["grid"], scored_as=mapping,
                  prediction_names=info["prediction_names"])
    if mapping == "identity":
        names = info["class_names"] or info["prediction_names"]
        result["identity"] = identity_scores(table, pred_ids, true_ids, names)
    if objects is not None:
        result["object_recall"] = _object_scores(prediction, objects, grid, iou_threshold=iou_threshold,
                                                 by=objects_by, classes=object_classes,
                                                 min_size_px=min_object_px, box=box)
    return result


def _with_names(known: list[str] | dict[int, str] | None, given: dict[int, str]) -> dict[int, str]:
    """The truth's own names by id with ``given`` (``--truth-names``) over them."""
    by_id = dict(enumerate(known)) if isinstance(known, list) else dict(known or {})
    return {**{k: v for k, v in by_id.items() if v}, **{int(k): str(v) for k, v in given.items()}}


def _json_names(names: list[str] | dict[int, str] | None):
    """Names as the JSON holds them: a list indexed by id, or {"id": name} when given by id."""
    return {str(k): v for k, v in sorted(names.items())} if isinstance(names, dict) else names
