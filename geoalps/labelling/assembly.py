"""Pass 2 of a run: classify every object from its stored features, merge seam fragments, and
stream the result into per-scene GeoPackage layers.

Tiles are read back from the work store one at a time. Which objects merge across seams is known
before (:class:`geoalps.objects.seams.SeamIndex`, filled in pass 1): every other object is classified and
written straight away, and only the fragments of merged objects are held until the scene is done.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.inputs.scene import Scene
from geoalps.objects.tile_result import TileResult
from geoalps.outputs.vector import LayerWriter, with_class_names
from geoalps.inputs.tiles import Tile
from geoalps.objects.seams import merge_group

def _frame(scene: Scene, geometries, features, scores, fragments, clusterer: OnlineKMeans | None):
    import geopandas as gpd
    import shapely

    classes = clusterer.predict(features) if clusterer is not None else np.zeros(len(geometries), np.int32)
    distance = clusterer.distances(features) if clusterer is not None else np.zeros(len(geometries))
    pixel_area = abs(scene.transform.determinant) or 1.0
    frame = gpd.GeoDataFrame(
        {
            "pseudo_class": classes.astype(np.int32),
            "score": np.round(np.asarray(scores, dtype=np.float64), 6),
            "area_px": np.rint(shapely.area(geometries) / pixel_area).astype(np.int64),
            "n_fragments": np.asarray(fragments, dtype=np.int32),
            "class_distance": np.round(np.asarray(distance, dtype=np.float64), 6),
            "scene": np.full(len(geometries), scene.name, dtype=object),
        },
        geometry=gpd.GeoSeries(list(geometries), crs=scene.crs_wkt),
        crs=scene.crs_wkt,
    )
    names = clusterer.class_names if clusterer is not None else None
    if names is not None:  # a named model: class_id and class_name as `geoalps classes name` writes them
        frame = with_class_names(frame, names.class_ids(), names.merged_names)
    return frame


def assemble_scene(
    scene: Scene,
    tiles: Sequence[Tile],
    load: "callable[[Tile], TileResult]",
    blocks: Sequence[str],
    clusterer: OnlineKMeans | None,
    writer: LayerWriter,
    merged: Sequence[Sequence[tuple[int, int]]] = (),
    on_tile=None,
) -> int:
    """Classify, merge and write one scene's objects; returns the number written.

    ``merged`` lists the objects that are one object across a seam, as groups of (tile number,
    object index) (:meth:`geoalps.objects.seams.SeamIndex.merged`); every other object is written as its
    tile is read. A merged object's features, score and class come from its fragments weighted
    by pixel area.
    """
    group_of: dict[int, dict[int, int]] = {}
    for group_number, group in enumerate(merged):
        for tile_number, index in group:
            group_of.setdefault(tile_number, {})[index] = group_number
    fragments: dict[tuple[int, int], tuple] = {}  # only fragments of merged objects are held
    written = 0
    for tile_number, tile in enumerate(tiles):
        result = load(tile)
        if on_tile is not None:
            on_tile()
        if not len(result):
            continue
        feats = result.feature_matrix(blocks)
        alone = np.ones(len(result), dtype=bool)
        for index in group_of.get(tile_number, {}):
            alone[index] = False
            fragments[(tile_number, index)] = (result.geometries[index], feats[index], float(result.scores[index]),
                                               float(result.area_px[index]))
        if alone.any():
            frame = _frame(scene, result.geometries[alone], feats[alone], result.scores[alone],
                           np.ones(int(alone.sum())), clusterer)
            writer.add(frame)
            written += len(frame)
    if merged:
        merged_geoms, merged_feats, merged_scores, counts = [], [], [], []
        for group in merged:
            parts = [fragments.pop(member) for member in group]
            area_px = np.array([p[3] for p in parts])
            weights = area_px / max(area_px.sum(), 1)
            merged_geoms.append(merge_group(np.array([p[0] for p in parts], dtype=object)))
            merged_feats.append(weights @ np.stack([p[1] for p in parts]))
            merged_scores.append(float(weights @ np.array([p[2] for p in parts])))
            counts.append(len(parts))
        frame = _frame(scene, np.array(merged_geoms, dtype=object), np.asarray(merged_feats),
                       merged_scores, counts, clusterer)
        writer.add(frame)
        written += len(frame)
    return written
