"""Class rasters on a scene's grid: the one writer behind ``label --raster-out`` and ``predict``.

Tag contract (what the QGIS plugin and ``geoalps evaluate`` read back), on band 1:
``n_classes`` (the K of classes 0..K-1) and ``class_names`` (the K names joined with ``;``), and
the band description says what the ids are (``pseudo_class`` or ``class``). Nodata is 255 (uint8,
up to 255 classes) or 65535 (uint16) and is never a class. The colour table and the ``.qml``
sidecar use the same colours as the polygons' QGIS style.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from geoalps.outputs.style import output_class_colours, write_qgis_raster_style

#: Band-1 tags of the contract above.
N_CLASSES_TAG = "n_classes"
CLASS_NAMES_TAG = "class_names"
NAMES_SEPARATOR = ";"


def label_raster_stem(scene_name: str) -> str:
    """The stem of a scene's label raster in a folder: its name (``/`` as ``_``) without suffix,
    so ``geoalps label --raster-out DIR/`` writes ``DIR/<stem>.labels.tif`` and ``geoalps
    pretrain --labels DIR`` finds it there."""
    return Path(scene_name.replace("/", "_")).stem


#: What follows the stem in a label raster written into a folder.
LABEL_RASTER_SUFFIX = ".labels.tif"


def label_raster_dtype(n_classes: int) -> tuple[str, int]:
    """(dtype, nodata) for a class raster: uint8 with 255 as nodata up to 255 classes, else uint16."""
    return ("uint8", 255) if n_classes <= 255 else ("uint16", 65535)


def default_class_names(n_classes: int) -> list[str]:
    return [f"class {k}" for k in range(n_classes)]


def join_class_names(names: Sequence[str]) -> str:
    """The ``class_names`` tag value (a ``;`` inside a name becomes ``,``)."""
    return NAMES_SEPARATOR.join(str(n).replace(NAMES_SEPARATOR, ",") for n in names)


def read_class_names(path: str | os.PathLike) -> tuple[int, list[str]]:
    """(n_classes, names) recorded in a class raster's band-1 tags; (0, []) when absent."""
    from geoalps.inputs.scene import open_raster

    with open_raster(path) as src:  # class rasters may be in pixel coordinates
        tags = src.tags(1)
    try:
        n_classes = int(tags.get(N_CLASSES_TAG, 0))
    except ValueError:
        n_classes = 0
    names = tags.get(CLASS_NAMES_TAG)
    return n_classes, (names.split(NAMES_SEPARATOR) if names else [])


@contextlib.contextmanager
def open_label_raster(path: str | os.PathLike, grid, n_classes: int, *, what: str = "pseudo_class",
                      class_names: Sequence[str] | None = None,
                      colours: Sequence[tuple[int, int, int]] | None = None) -> Iterator:
    """Open a class raster on exactly ``grid``'s CRS, transform and size (a :class:`Scene`) for
    writing, block by block or whole; on leaving, the colour table and tags are written.

    Tiled 256 px, DEFLATE (horizontal predictor for uint16). ``path`` is usually a temporary
    path from :func:`geoalps.files.atomic_path`; call :func:`write_raster_style` once the raster
    is at its final place.
    """
    from geoalps.inputs.scene import open_raster

    dtype, nodata = label_raster_dtype(n_classes)
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
        "dtype": dtype, "nodata": nodata, "transform": grid.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "deflate", "predictor": 2 if dtype == "uint16" else 1,
    }
    if grid.crs_wkt is not None:
        profile["crs"] = grid.crs_wkt
    names = list(class_names) if class_names is not None else default_class_names(n_classes)
    # A scene in pixel coordinates (--allow-pixel-coords) gets a raster in them, as asked.
    with open_raster(path, "w", **profile) as dst:
        yield dst
        if dtype == "uint8":
            palette = list(colours) if colours else output_class_colours(n_classes)
            dst.write_colormap(1, {k: (*palette[k][:3], 255) for k in range(min(n_classes, len(palette)))})
        dst.set_band_description(1, what)
        dst.update_tags(1, **{N_CLASSES_TAG: str(n_classes), CLASS_NAMES_TAG: join_class_names(names),
                              "nodata_meaning": "no object"})


def write_raster_style(path: str | os.PathLike, n_classes: int, class_names: Sequence[str] | None = None,
                       colours: Sequence[tuple[int, int, int]] | None = None) -> str:
    """The ``.qml`` sidecar QGIS loads as the raster's default style (only the K classes, named)."""
    return write_qgis_raster_style(path, n_classes, list(class_names) if class_names is not None else None,
                                   colours=colours)


def objects_in_memory(geometries: np.ndarray, classes: np.ndarray) -> Callable:
    """A block query for :func:`burn_objects` over objects held in memory (an STRtree): the
    geometries meeting a block's bounds and their class ids, in the order given, as a layer's
    spatial index returns them. Memory: the objects and their tree."""
    import shapely

    geometries = np.asarray(geometries, dtype=object)
    classes = np.asarray(classes)
    tree = shapely.STRtree(geometries)

    def query(bounds):
        hits = np.sort(tree.query(shapely.box(*bounds), predicate="intersects"))
        return geometries[hits], classes[hits]

    return query


def burn_objects(dst, grid, objects: Callable, n_classes: int, block_px: int = 1024) -> None:
    """Burn class ids of objects (in ``grid``'s CRS) into ``dst``, one ``block_px`` block at a time.

    ``objects(bounds)`` returns the geometries and class ids meeting a block's bounds (a spatial
    index query). Smaller objects are burnt over larger ones; nodata wherever no object lies.
    Memory: one block and its objects.
    """
    import shapely
    from rasterio import features as rio_features
    from rasterio.windows import Window, transform as window_transform

    _, nodata = label_raster_dtype(n_classes)
    for row in range(0, grid.height, block_px):
        for col in range(0, grid.width, block_px):
            window = Window(col, row, min(block_px, grid.width - col), min(block_px, grid.height - row))
            # all four corners: with a rotated transform the bounds are not two corners
            xs, ys = zip(*(grid.transform @ (c, r) for c in (col, col + window.width)
                           for r in (row, row + window.height)))
            geoms, classes = objects((min(xs), min(ys), max(xs), max(ys)))
            block = np.full((int(window.height), int(window.width)), nodata, dtype=dst.dtypes[0])
            if len(geoms):
                order = np.argsort(-shapely.area(geoms), kind="stable")  # small ones on top
                rio_features.rasterize(
                    zip(geoms[order], np.asarray(classes)[order].tolist()),
                    out=block, transform=window_transform(window, grid.transform),
                )
            dst.write(block, 1, window=window)
