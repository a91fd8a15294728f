"""Burning label rasters from objects in memory gives the raster a layer's spatial index gives."""
from __future__ import annotations

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.io import MemoryFile

from geoalps.outputs.raster import burn_objects, objects_in_memory
from geoalps.outputs.vector import objects_in_layer, write_layer


class _Grid:
    """The grid fields burn_objects reads from a Scene."""

    width, height = 96, 80
    transform = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)
    crs_wkt = rasterio.crs.CRS.from_epsg(32633).to_wkt()


def _objects():
    """Overlapping squares: a small one on a large one, and two of equal area overlapping (the
    later one is burnt on top), one crossing the 32 px block edge."""
    t = _Grid.transform
    boxes = [(0, 0, 60, 50), (10, 10, 20, 20), (30, 20, 50, 40), (40, 30, 60, 50), (70, 60, 96, 80)]
    polygons = [shapely.Polygon([t * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])
                for c0, r0, c1, r1 in boxes]
    return np.array(polygons, dtype=object), np.array([0, 1, 2, 3, 4], dtype=np.int32)


def _burn(query) -> np.ndarray:
    profile = dict(driver="GTiff", width=_Grid.width, height=_Grid.height, count=1, dtype="uint8", nodata=255,
                   transform=_Grid.transform)
    with MemoryFile() as memory, memory.open(**profile) as dst:
        burn_objects(dst, _Grid, query, 5, block_px=32)
        return dst.read(1)


def test_objects_in_memory_burn_as_the_layer_does(tmp_path):
    import geopandas as gpd

    geometries, classes = _objects()
    frame = gpd.GeoDataFrame({"pseudo_class": classes}, geometry=list(geometries), crs=_Grid.crs_wkt)
    layer = write_layer([frame], tmp_path / "objects.gpkg", _Grid.crs_wkt)
    from_memory = _burn(objects_in_memory(geometries, classes))
    assert (from_memory == _burn(objects_in_layer(layer))).all()
    # the rules themselves: smaller on top, equal areas in the order given, nodata elsewhere
    assert from_memory[15, 15] == 1 and from_memory[5, 5] == 0
    assert from_memory[35, 45] == 3  # squares 2 and 3 overlap there, both 20 x 20: the later wins
    assert from_memory[70, 80] == 4 and from_memory[70, 65] == 255
