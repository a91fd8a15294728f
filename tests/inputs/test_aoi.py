"""The area of interest: a box or vector file becomes a pixel window on each scene's grid, and a
mask of the pixels whose centres lie inside it when it is not a box of whole pixels."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

from conftest import write_raster
from geoalps.errors import InputError, OptionError
from geoalps.inputs.aoi import inside_mask, load_aoi
from geoalps.inputs.scene import open_scene, read_window, valid_in_window

GRID = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5200000.0)  # 10 m pixels, UTM 32N


@pytest.fixture
def scene_file(tmp_path):
    data = np.arange(3 * 200 * 300, dtype=np.uint16).reshape(3, 200, 300) % 997 + 1
    return write_raster(tmp_path / "s.tif", data, transform=GRID, crs="EPSG:32632", nodata=0), data


def test_a_box_in_the_scene_crs_is_a_window_without_mask(scene_file):
    path, data = scene_file
    # x 600500..601000 (cols 50..100), y 5199000..5199700 (rows 30..100); edges within a pixel round
    scene = open_scene(path, aoi=load_aoi("600503,5199004,600998,5199700"))
    assert (scene.col_off, scene.row_off, scene.width, scene.height) == (50, 30, 50, 70)
    assert scene.transform == GRID * Affine.translation(50, 30) and scene.aoi_wkb is None
    assert np.array_equal(read_window(scene, Window(0, 0, 50, 70)), data[:, 30:100, 50:100])


def test_a_box_in_another_crs_is_reprojected_and_masks_what_is_outside(scene_file):
    path, _ = scene_file
    to_wgs84 = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_wgs84.transform(600500, 5199000)
    lon1, lat1 = to_wgs84.transform(601500, 5199800)
    scene = open_scene(path, aoi=load_aoi(f"{lon0},{lat0},{lon1},{lat1}", "EPSG:4326"))
    # the lon/lat box is a slightly rotated quadrilateral in UTM: its window holds it, a mask cuts it
    assert abs(scene.col_off - 50) <= 2 and abs(scene.row_off - 20) <= 2
    assert abs(scene.width - 100) <= 4 and abs(scene.height - 80) <= 4
    inside = inside_mask(scene.aoi_wkb, Window(0, 0, scene.width, scene.height))
    assert inside is not None and 0.95 < inside.mean() < 1.0


def test_a_polygon_file_masks_pixels_by_their_centres(scene_file, tmp_path):
    path, data = scene_file
    triangle = shapely.Polygon([(600000, 5200000), (601000, 5200000), (600000, 5199000)])  # 100 px legs
    gpd.GeoDataFrame(geometry=[triangle], crs="EPSG:32632").to_file(tmp_path / "aoi.gpkg")
    scene = open_scene(path, aoi=load_aoi(str(tmp_path / "aoi.gpkg")))
    assert (scene.col_off, scene.row_off, scene.width, scene.height) == (0, 0, 100, 100)
    window = Window(0, 0, 100, 100)
    valid = valid_in_window(scene, window, read_window(scene, window))
    rows, cols = np.mgrid[0:100, 0:100]
    # centre (c+.5, r+.5) inside the triangle: c + r < 99; on the hypotenuse (c + r = 99) either way
    assert valid[cols + rows < 99].all() and not valid[cols + rows > 99].any()
    assert scene.stats.valid_fraction == pytest.approx(valid.mean(), abs=0.01)
    # a tile inside the AOI window sees the same mask, offset
    tile = Window(20, 10, 30, 40)
    assert np.array_equal(inside_mask(scene.aoi_wkb, tile), valid[10:50, 20:50])


def test_a_vector_file_in_another_crs_is_reprojected(scene_file, tmp_path):
    path, _ = scene_file
    box = shapely.box(600500, 5199000, 601000, 5199500)
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:32632").to_crs("EPSG:3857").to_file(tmp_path / "aoi.geojson")
    scene = open_scene(path, aoi=load_aoi(str(tmp_path / "aoi.geojson")))
    assert abs(scene.col_off - 50) <= 1 and abs(scene.row_off - 50) <= 1
    assert abs(scene.width - 50) <= 2 and abs(scene.height - 50) <= 2


def test_bad_aois_are_one_line_errors(scene_file, tmp_path):
    path, _ = scene_file
    with pytest.raises(OptionError, match="minx < maxx"):
        load_aoi("10,10,5,20")
    with pytest.raises(OptionError, match="neither minx,miny,maxx,maxy nor an existing vector file"):
        load_aoi("1,2,3")
    with pytest.raises(OptionError, match="not a CRS"):
        load_aoi("1,2,3,4", "EPSG:99999999")
    with pytest.raises(OptionError, match="--aoi-crs needs --aoi"):
        load_aoi(None, "EPSG:4326")
    (tmp_path / "points.geojson").write_text(
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[1,2]}}]}')
    with pytest.raises(InputError, match="holds no polygon"):
        load_aoi(str(tmp_path / "points.geojson"))
    with pytest.raises(InputError, match="does not meet the scene"):
        open_scene(path, aoi=load_aoi("0,0,10,10"))
