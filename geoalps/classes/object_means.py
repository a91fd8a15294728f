"""Every object's mean band values, read back from its scene: what naming splits a class with.

A labelling output holds polygons and classes, not pixels. Naming from examples needs to tell
apart the objects of one pseudo-class that the examples call by different names, and the
objects' own spectra are what does it (:func:`geoalps.classes.naming.split_conflicts`).

One pass over each scene in blocks of :data:`BLOCK_PX`: the objects meeting a block are read
from the layer (a bounding-box filter), moved into the scene's CRS, and burnt into the block by
``instance_id``; per-object sums of every band over the block's valid pixels accumulate.
Memory: one block of the scene and (objects x bands) float64 sums. Cost: one full read of each
scene that holds objects.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: Side of the square blocks a scene is read in, in pixels.
BLOCK_PX = 2048


@dataclass(frozen=True)
class ObjectMeans:
    """Mean band values of a layer's objects, indexed by ``instance_id`` (row ``i`` is object
    ``i``; row 0 is unused). ``pixels[i]`` counts object ``i``'s valid pixels: 0 where it has
    none (its ``means`` row is then NaN)."""

    means: np.ndarray  #: (max instance_id + 1, bands), in the scene's units
    pixels: np.ndarray  #: (max instance_id + 1,) valid pixels under each object

    def standardised(self) -> np.ndarray:
        """``means`` with each band centred and scaled by the pixel-weighted mean and standard
        deviation of the objects' means, so every band weighs alike whatever its units."""
        weights = self.pixels.astype(np.float64)
        seen = weights > 0
        if not seen.any():
            return np.full_like(self.means, np.nan)
        w = weights[seen] / weights[seen].sum()
        centre = (self.means[seen] * w[:, None]).sum(axis=0)
        spread = np.sqrt((((self.means[seen] - centre) ** 2) * w[:, None]).sum(axis=0))
        return (self.means - centre) / np.where(spread > 0, spread, 1.0)


def object_band_means(output: str | os.PathLike, scenes: list[str | os.PathLike] | None = None) -> ObjectMeans:
    """:class:`ObjectMeans` of every object of ``output`` (a labelling output), read from the
    scenes it was labelled on (found as ``geoalps classes gallery`` finds them: ``scenes``, the
    output's recorded paths, beside it).

    Raises:
        InputError: a scene cannot be found or read, or the scenes differ in band count (their
            means would not be comparable).
    """
    from geoalps.classes.gallery import find_scene
    from geoalps.errors import InputError
    from geoalps.inputs.scene import open_scene
    from geoalps.outputs.vector import layer_info, read_layer

    table = read_layer(output, columns=["instance_id", "scene"], read_geometry=False)
    size = int(table["instance_id"].max()) + 1 if len(table) else 1
    opened = [open_scene(find_scene(str(output), name, scenes), name=name)
              for name in sorted(set(table["scene"].astype(str)))]
    counts = {s.count for s in opened}
    if len(counts) > 1:
        raise InputError(f"{output}: its scenes have {sorted(counts)} bands; objects of different band counts "
                         "cannot be compared (name with --no-split)")
    bands = counts.pop() if counts else 1
    sums = np.zeros((size, bands))
    pixels = np.zeros(size, dtype=np.int64)
    layer_crs = layer_info(output)["crs"]
    for scene in opened:
        _accumulate(output, scene, layer_crs, sums, pixels)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / pixels[:, None]
    means[pixels == 0] = np.nan
    return ObjectMeans(means, pixels)


def _accumulate(output, scene, layer_crs, sums: np.ndarray, pixels: np.ndarray) -> None:
    """Add ``scene``'s valid pixels under each of its objects to ``sums`` and ``pixels``."""
    from rasterio.features import rasterize
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, bounds as window_bounds, transform as window_transform

    from geoalps.classes.gallery import to_scene_crs
    from geoalps.inputs.scene import read_window, valid_in_window
    from geoalps.outputs.vector import read_layer

    for row in range(0, scene.height, BLOCK_PX):
        for col in range(0, scene.width, BLOCK_PX):
            window = Window(col, row, min(BLOCK_PX, scene.width - col), min(BLOCK_PX, scene.height - row))
            box = window_bounds(window, scene.transform)
            if layer_crs is not None and scene.crs_wkt is not None:
                box = transform_bounds(scene.crs_wkt, layer_crs, *box, densify_pts=21)
            objects = read_layer(output, columns=["instance_id", "scene"], bbox=tuple(box))
            objects = objects[objects["scene"].astype(str) == scene.name]
            if not len(objects):
                continue
            geometries = to_scene_crs(objects.geometry, layer_crs, scene)
            burnt = rasterize(zip(geometries.values, objects["instance_id"].to_numpy(dtype=np.int64)),
                              out_shape=(int(window.height), int(window.width)),
                              transform=window_transform(window, scene.transform), fill=0, dtype="int32")
            data = read_window(scene, window)
            inside = valid_in_window(scene, window, data) & (burnt > 0)
            ids = burnt[inside]
            pixels += np.bincount(ids, minlength=pixels.size)[: pixels.size]
            for band in range(sums.shape[1]):
                sums[:, band] += np.bincount(ids, weights=data[band][inside].astype(np.float64),
                                             minlength=pixels.size)[: pixels.size]
