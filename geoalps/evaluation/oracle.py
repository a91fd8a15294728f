"""Segment-oracle ceiling of an output's regions (DESIGN.md, "Pseudo-label metrics").

Every region (an output polygon, by its ``instance_id``) takes the majority true class of its valid
pixels; the many-to-one mIoU of that labelling is the ceiling. It is the many-to-one mIoU of the
region ids used as pseudo-classes, so it comes from the same contingency table code as the other
scores. Next to the final score it splits a scene's loss into segmentation (regions that cross
class edges, or pixels under no region) and clustering (regions given the wrong pseudo-class).

Its pixel accuracy bounds that of any clustering of the regions (each region counts in one class,
at most its majority). Its mIoU does not, strictly: a mixed region clustered with a small class it
is not mostly made of can raise that class's IoU more than its majority class loses (a worked case
is in tests/evaluation/test_oracle.py); on real outputs the gap is small, but a final score a hair
above the ceiling is possible.

``geoalps evaluate`` (:func:`geoalps.evaluation.evaluate_pseudo_labels`) takes it for a geoalps
output in the same pass over the truth as the other figures; :func:`output_segment_oracle` takes
it alone:

    >>> from geoalps.evaluation.oracle import output_segment_oracle
    >>> output_segment_oracle("labels.gpkg", "truth.gt.tif")["segment_oracle_miou"]
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from geoalps.errors import InputError
from geoalps.evaluation.pseudo_labels import ContingencyAccumulator, contingency, pseudo_label_scores
# The scored grid, its truth reader and the polygon burner are evaluate's own (grid.py), so the
# ceiling is scored on exactly the pixels the other figures are.
from geoalps.evaluation.grid import (Grid, burn, check_overlap, kind_of, open_class_raster, prediction_frame,
                                     raster_reader)

#: Field of a geoalps output that tells its regions apart.
REGION_FIELD = "instance_id"


def oracle_scores(table: np.ndarray, region_ids=None, true_ids=None) -> dict[str, Any]:
    """The ceiling from a (regions + 1) x C contingency table (last row: pixels under no region).

    Returns ``segment_oracle_miou``, ``segment_oracle_pixel_accuracy`` and ``regions`` (regions
    with valid pixels). Pixels under no region are misses, as they are for the final score.
    """
    scores = pseudo_label_scores(table, region_ids, true_ids)
    return {"segment_oracle_miou": scores["many_to_one_miou"],
            "segment_oracle_pixel_accuracy": scores["pixel_accuracy"],
            "regions": scores["n_pseudo_classes"]}


def segment_oracle(regions: np.ndarray, truth: np.ndarray, *, region_nodata: int | None = 0,
                   truth_nodata: int | None = None) -> dict[str, Any]:
    """The ceiling of a region-id array against a truth array of the same shape.

    ``region_nodata``: the id of pixels under no region (default 0, as rasterize leaves them).
    Cost: O(pixels) and a regions x classes table.
    """
    return oracle_scores(*contingency(regions, truth, pred_nodata=region_nodata, truth_nodata=truth_nodata))


def burn_regions(output: str | os.PathLike, grid: Grid, window=None) -> np.ndarray:
    """``instance_id`` of a geoalps output's polygons on ``grid`` (or a window of it), 0 under none.

    Pixel centres; where polygons overlap the smaller one is on top (as evaluate burns the
    classes). Cost: the polygons meeting the window (read through the layer's spatial index) and
    one int32 block.
    """
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    from geoalps.inputs.crs import as_crs, same_crs
    from geoalps.outputs.vector import layer_info

    window = Window(0, 0, grid.width, grid.height) if window is None else window
    info = layer_info(output)
    if REGION_FIELD not in list(info["fields"]):
        raise InputError(f"{output}: no field '{REGION_FIELD}'; the segment oracle needs a geoalps output")
    bbox = grid.bounds(window)
    layer_crs = as_crs(info["crs"])
    if layer_crs is not None and grid.crs is not None and not same_crs(layer_crs, grid.crs):
        bbox = transform_bounds(grid.crs, layer_crs, *bbox)
    frame = prediction_frame(output, grid, [REGION_FIELD], bbox=tuple(bbox))
    ids, _ = burn(frame.geometry.to_numpy(), frame[REGION_FIELD].to_numpy(np.int64), grid, window)
    return ids


def output_segment_oracle(output: str | os.PathLike, truth: str | os.PathLike, *,
                          truth_nodata: float | None = None, block_px: int = 1024) -> dict[str, Any]:
    """The ceiling of a geoalps output (GeoPackage or another output format) against a truth
    raster, on the truth's grid, block by block (as ``evaluate`` scores a GeoPackage).

    Cost: one ``block_px`` block of each input at a time plus the regions x classes table.
    """
    if kind_of(output) != "vector" or kind_of(truth) != "raster":
        raise InputError(f"{output}: the segment oracle needs a geoalps output and a truth raster")
    with contextlib.ExitStack() as stack:
        src = open_class_raster(truth, stack)
        grid = Grid.of(src)
        read_truth, _, truth_bounds = raster_reader(truth, grid, stack, src=src)
        check_overlap(truth, truth_bounds, grid, output)
        acc = ContingencyAccumulator(pred_nodata=0, truth_nodata=truth_nodata)
        for window in grid.windows(block_px):
            values, valid = read_truth(window)
            acc.add(burn_regions(output, grid, window), values, truth_valid=valid)
    table, region_ids, true_ids = acc.result()
    if table.sum() == 0:
        raise InputError(f"{truth}: no valid truth pixel where it meets {output}")
    return oracle_scores(table, region_ids, true_ids)
