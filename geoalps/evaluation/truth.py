"""The pseudo-label evaluation: the scored grid chosen, the truth read onto it block by block
(the readers: :mod:`geoalps.evaluation.grid`) in one pass that also takes the segment oracle.

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
from typing import Any, Iterable

import numpy as np

from geoalps.errors import InputError, OptionError
from geoalps.evaluation.grid import (PREDICTION_FIELD, BlockReader, Grid, LayerBlocks, check_crs, check_overlap,
                                     kind_of, layer_names, open_class_raster, prediction_frame, raster_reader,
                                     read_frame, vector_reader)
from geoalps.evaluation.mapping import check_mapping, identity_scores, parse_class_names
from geoalps.evaluation.oracle import REGION_FIELD, oracle_scores
from geoalps.evaluation.pseudo_labels import (ContingencyAccumulator, object_recall, pseudo_label_scores,
                                              raster_objects)
from geoalps.inputs.crs import same_crs
from geoalps.inputs.remote import display_name
from geoalps.inputs.scene import read_pixels
from geoalps.outputs.vector import layer_info

__all__ = ["Grid", "evaluate_pseudo_labels"]  # Grid: the scored grid, kept importable from here


def _readers(prediction, truth, truth_field, truth_nodata, stack) -> tuple[Grid, BlockReader, BlockReader, dict]:
    """The scored grid, the prediction and truth readers on it, and what is known (names, grid,
    and ``regions``: a reader of the prediction's ``instance_id`` for the segment oracle, where
    the prediction is a geoalps output with that field and the truth a raster; else None)."""
    regions = None
    if kind_of(prediction) == "raster":
        src = open_class_raster(prediction, stack)
        grid = Grid.of(src)
        pred, pred_names, pred_bounds = raster_reader(prediction, grid, stack, src=src)
        if kind_of(truth) == "raster":
            truth_reader, names, truth_bounds = raster_reader(truth, grid, stack)
        else:
            truth_reader, names, truth_bounds = vector_reader(truth, grid, truth_field, truth_nodata)
    else:
        if kind_of(truth) != "raster":
            raise InputError(f"{truth}: a GeoPackage prediction needs a truth raster (its grid is scored)")
        src = open_class_raster(truth, stack)
        grid = Grid.of(src)
        truth_reader, names, truth_bounds = raster_reader(truth, grid, stack, src=src)
        layer = LayerBlocks(prediction, grid, [PREDICTION_FIELD], optional=[REGION_FIELD])
        pred, pred_bounds, pred_names = layer.reader(PREDICTION_FIELD), layer.bounds, None
        regions = layer.reader(REGION_FIELD) if REGION_FIELD in layer.fields else None
    check_overlap(truth, truth_bounds, grid, prediction)
    check_overlap(prediction, pred_bounds, grid, truth)
    info = {"class_names": names, "prediction_names": pred_names,
            "grid": "prediction" if kind_of(prediction) == "raster" else "truth", "regions": regions}
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

    if kind_of(path) == "vector":
        layer_names(path)
        return read_frame(path, grid, [], layer).geometry.to_numpy(), None
    with contextlib.ExitStack() as stack:
        src = open_class_raster(path, stack)
        check_crs(path, src.crs, grid)
        values = read_pixels(src, indexes=1, shown=display_name(path))
        geoms, _, sizes = raster_objects(values, src.transform, nodata=src.nodata, by=by, classes=classes)
        crs = src.crs
    if crs is not None and not same_crs(crs, grid.crs) and geoms.size:
        geoms = gpd.GeoSeries(geoms, crs=crs).to_crs(grid.crs).to_numpy()
    return geoms, sizes


def _object_scores(prediction, objects, grid: Grid, *, iou_threshold: float, by: str, classes,
                   min_size_px: int, box: bool) -> dict[str, Any]:
    """Object recall of the prediction's polygons (GeoPackage) or components (label raster)."""
    if kind_of(prediction) == "vector":
        layer_info(prediction)
        pred_geoms = prediction_frame(prediction, grid, []).geometry.to_numpy()
    else:
        pred_geoms, _ = _polygons(prediction, grid)
    true_geoms, sizes = _polygons(objects, grid, by=by, classes=classes)
    return object_recall(pred_geoms, true_geoms, iou_threshold, min_size_px=min_size_px,
                         pixel_area=grid.pixel_area, sizes_px=sizes, box=box)


# --------------------------------------------------------------------------------------------
# the evaluation


def _accumulate(pred: BlockReader, truth: BlockReader, grid: Grid, truth_nodata, block_px: int,
                regions: BlockReader | None = None) -> tuple[ContingencyAccumulator, ContingencyAccumulator | None]:
    """One pass over the grid's blocks: the prediction's table and, with ``regions``, the segment
    oracle's (regions x classes, :mod:`geoalps.evaluation.oracle`) from the same truth blocks, so
    the truth is read once. Cost: one block of each input in memory at a time."""
    if block_px < 1:
        raise OptionError(f"block_px: {block_px}; blocks need at least 1 px")
    acc = ContingencyAccumulator(pred_nodata=None, truth_nodata=truth_nodata)
    oracle = None if regions is None else ContingencyAccumulator(pred_nodata=None, truth_nodata=truth_nodata)
    for window in grid.windows(block_px):
        p, p_valid = pred(window)
        t, t_valid = truth(window)
        acc.add(p, t, pred_valid=p_valid, truth_valid=t_valid)
        if oracle is not None:
            ids, burnt = regions(window)
            oracle.add(ids, t, pred_valid=burnt, truth_valid=t_valid)
    return acc, oracle


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
    :func:`geoalps.evaluation.mapping.identity_scores`), ``object_recall`` when ``objects`` is
    given, and for a geoalps output (with ``instance_id``) against a truth raster the segment
    oracle (:func:`geoalps.evaluation.oracle.oracle_scores`: ``segment_oracle_miou``,
    ``segment_oracle_pixel_accuracy``, ``regions``), from the same pass over the truth.

    Notes
    -----
    Memory is one ``block_px`` square block of each input plus the contingency table; polygon
    truth is held whole, and object recall reads its rasters and layers whole.
    """
    if isinstance(truth_nodata, str) and kind_of(truth) == "raster":
        raise OptionError(f"{truth}: truth_nodata {truth_nodata!r} is text but the raster holds class numbers")
    if isinstance(truth_names, str):
        truth_names = parse_class_names(truth_names)
    mapping = check_mapping(mapping, prediction if kind_of(prediction) == "raster" else None)
    with contextlib.ExitStack() as stack:
        grid, pred, truth_reader, info = _readers(prediction, truth, truth_field, truth_nodata, stack)
        vector_truth = kind_of(truth) == "vector"
        acc, oracle = _accumulate(pred, truth_reader, grid, None if vector_truth else truth_nodata, block_px,
                                  info["regions"])
    if truth_names:
        info["class_names"] = _with_names(info["class_names"], truth_names)
    table, pred_ids, true_ids = acc.result()
    if table.sum() == 0:
        raise InputError(f"{display_name(truth)}: no valid truth pixel where it meets {display_name(prediction)}")
    result = pseudo_label_scores(table, pred_ids, true_ids, info["class_names"])
    result["contingency"] = {"pseudo_classes": pred_ids.tolist(), "true_classes": true_ids.tolist(),
                             "pixels": table.tolist(), "last_row": "no prediction"}
    result.update(prediction=str(prediction), truth=str(truth), truth_field=truth_field,
                  class_names=_json_names(info["class_names"]), grid=info["grid"], scored_as=mapping,
                  prediction_names=info["prediction_names"])
    if oracle is not None:
        result.update(oracle_scores(*oracle.result()))
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
