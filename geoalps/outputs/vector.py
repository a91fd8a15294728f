"""Writing results: GeoPackage layers and label rasters, always through a temp path + rename.

A run that fails or is interrupted leaves no output file, old or half-written: outputs are built
next to their destination under a hidden temporary name and renamed into place at the very end.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from geoalps.errors import GeoAlpsError

#: Default name of the polygon layer in geoalps GeoPackages.
LAYER = "masks"


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber an existing output (unless ``overwrite``) before any work starts."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise GeoAlpsError(f"{path}: output exists (pass --overwrite to replace it)")
    if path.exists() and path.is_dir():
        raise GeoAlpsError(f"{path}: output is a folder")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GeoAlpsError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise GeoAlpsError(f"{path}: output folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file keeps the destination's suffix so GDAL drivers are picked by extension.
    """
    path = check_writable(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.remove(tmp)  # GDAL wants to create the file itself
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        for leftover in (tmp_path, Path(f"{tmp_path}-journal"), Path(f"{tmp_path}-wal"), Path(f"{tmp_path}-shm")):
            if leftover.exists():
                leftover.unlink()


def write_geopackage(
    gdf,
    path: str | os.PathLike,
    layer: str = LAYER,
    overwrite: bool = False,
    n_classes: int | None = None,
    class_field: str = "pseudo_class",
    class_names: list[str] | None = None,
) -> Path:
    """Write ``gdf`` as a GeoPackage 1.2 layer (QGIS 3.22 opens it without the 'partially
    supported' warning), with a default categorized QGIS style on ``class_field`` when
    ``n_classes`` is given. Atomic: the file appears complete or not at all."""
    import pyogrio

    with atomic_path(path, overwrite) as tmp:
        pyogrio.write_dataframe(
            gdf, tmp, layer=layer, driver="GPKG", dataset_options={"VERSION": "1.2"},
            layer_options={"SPATIAL_INDEX": "YES"},
        )
        if n_classes:
            from geoalps.outputs.style import write_qgis_style

            write_qgis_style(str(tmp), layer, n_classes, field=class_field, class_names=class_names)
    return Path(path)


def label_raster_dtype(n_classes: int) -> tuple[str, int]:
    """(dtype, nodata) for a class raster: uint8 with 255 as nodata up to 255 classes, else uint16."""
    return ("uint8", 255) if n_classes <= 255 else ("uint16", 65535)


def objects_in_layer(path: str | os.PathLike, layer: str = LAYER, field: str = "pseudo_class"):
    """A block query over a GeoPackage layer, through its spatial index: memory follows the block."""
    import pyogrio

    def query(bounds):
        frame = pyogrio.read_dataframe(path, layer=layer, bbox=tuple(bounds), columns=[field])
        return frame.geometry.values, frame[field].to_numpy()

    return query


def write_label_raster_to(path: Path, scene, objects, n_classes: int, block_px: int = 1024) -> None:
    """Burn class ids of the objects (in the scene's CRS) onto exactly the scene's grid.

    ``objects(bounds)`` returns the geometries and classes meeting a block's bounds. Same CRS,
    transform and size as ``scene``; classes 0..K-1; nodata (255, or 65535 beyond 255 classes)
    wherever no object lies. Smaller objects are burnt over larger ones. Tiled, DEFLATE, with a
    colour table. Memory: one ``block_px`` square block and its objects at a time.
    """
    import rasterio
    import shapely
    from rasterio import features as rio_features
    from rasterio.windows import Window, transform as window_transform

    from geoalps.outputs.style import class_colors

    dtype, nodata = label_raster_dtype(n_classes)
    profile = {
        "driver": "GTiff", "width": scene.width, "height": scene.height, "count": 1,
        "dtype": dtype, "nodata": nodata, "transform": scene.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "deflate", "predictor": 2 if dtype == "uint16" else 1,
    }
    if scene.crs_wkt is not None:
        profile["crs"] = scene.crs_wkt
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, scene.height, block_px):
            for col in range(0, scene.width, block_px):
                window = Window(col, row, min(block_px, scene.width - col), min(block_px, scene.height - row))
                # all four corners: with a rotated transform the bounds are not two corners
                xs, ys = zip(*(scene.transform @ (c, r) for c in (col, col + window.width)
                               for r in (row, row + window.height)))
                geoms, classes = objects((min(xs), min(ys), max(xs), max(ys)))
                block = np.full((int(window.height), int(window.width)), nodata, dtype=dtype)
                if len(geoms):
                    order = np.argsort(-shapely.area(geoms), kind="stable")  # small ones on top
                    rio_features.rasterize(
                        zip(geoms[order], np.asarray(classes)[order].tolist()),
                        out=block, transform=window_transform(window, scene.transform),
                    )
                dst.write(block, 1, window=window)
        if dtype == "uint8":
            colours = class_colors(n_classes)
            dst.write_colormap(1, {i: (*colours[i], 255) for i in range(n_classes)})
        dst.set_band_description(1, "pseudo_class")
        dst.update_tags(1, n_classes=str(n_classes), nodata_meaning="no object")
