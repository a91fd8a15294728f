"""Pass 2 writes held seam objects in groups as their neighbourhood is read, not all at the scene's end.

Holding every seam candidate of a disjoint engine until the scene was done made the driver's memory
grow with the scene's area (9 GB at 20480 x 20480 px, benchmarks/scaling). Written in groups closed
under overlap, each as soon as every tile that could overlap it has been read, the output must be
the same objects, pixel for pixel, as when the whole scene is held.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import shapely

import geoalps.labelling.assembly as assembly
from geoalps import label
from tests.conftest import REPO

_SPLIT_READY = assembly._split_ready


def _run(tmp_path, name, monkeypatch, flush_ready_objects):
    monkeypatch.setattr(assembly, "FLUSH_READY_OBJECTS", flush_ready_objects)
    written = []

    def counting(*args, **kwargs):
        ready, held = _SPLIT_READY(*args, **kwargs)
        written.append((int(bool(ready)), len(held)))  # (a set written or not, objects left held)
        return ready, held

    monkeypatch.setattr(assembly, "_split_ready", counting)
    out = tmp_path / name
    out.mkdir()
    label([REPO / "sample_data" / "scene_rgb_u8.tif"], out / "o.gpkg", raster_out=out / "l.tif", quiet=True,
          tile_size_px=256, overlap_px=32)
    with rasterio.open(out / "l.tif") as raster:
        labels = raster.read(1)
    return gpd.read_file(out / "o.gpkg", layer="masks"), labels, written


def _objects(frame):
    centres = shapely.centroid(frame.geometry.values)
    return sorted(zip(frame["pseudo_class"], frame["area_px"], frame["n_fragments"], np.round(frame["score"], 6),
                      np.round(shapely.get_x(centres), 6), np.round(shapely.get_y(centres), 6)))


def test_held_objects_written_in_groups_are_the_objects_of_one_group(tmp_path, monkeypatch):
    whole, whole_labels, whole_written = _run(tmp_path, "whole", monkeypatch, 10**9)
    groups, group_labels, group_written = _run(tmp_path, "groups", monkeypatch, 1)
    assert sum(n for n, _ in whole_written) == 1  # the scene's end: everything in one group, as before
    assert sum(n for n, _ in group_written) >= 5  # written as the tiles were read
    assert any(held > 0 for _, held in group_written)  # some objects waited for a later tile
    assert len(whole) == len(groups) > 200
    assert _objects(whole) == _objects(groups)
    assert np.array_equal(whole_labels, group_labels)
    assert shapely.coverage_is_valid(groups.geometry.values)
    assert shapely.area(shapely.symmetric_difference(shapely.union_all(whole.geometry.values),
                                                     shapely.union_all(groups.geometry.values))) == 0
