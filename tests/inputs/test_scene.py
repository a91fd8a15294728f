import math

import numpy as np
import pytest
from affine import Affine

from conftest import write_raster
from geoalps.errors import GeoAlpsError
from geoalps.inputs.scene import open_scene, valid_pixels


def test_stats_exclude_nodata_and_read_metadata(tmp_path):
    data = np.full((2, 50, 60), 1000, dtype=np.uint16)
    data[:, :, 30:] = 3000
    data[:, :10, :] = 0  # nodata strip, must not drag the low percentile to 0
    path = write_raster(tmp_path / "s.tif", data, nodata=0)
    scene = open_scene(path)
    assert (scene.width, scene.height, scene.count, scene.dtype) == (60, 50, 2, "uint16")
    assert scene.crs.to_epsg() == 32633 and scene.nodata == 0
    assert scene.stats.low[0] == pytest.approx(1000) and scene.stats.high[0] == pytest.approx(3000)
    assert scene.stats.valid_fraction == pytest.approx(0.8)


def test_nan_nodata_in_float_scenes(tmp_path):
    data = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    data[:, :5] = np.nan
    scene = open_scene(write_raster(tmp_path / "f.tif", data, nodata=float("nan")))
    assert math.isnan(scene.nodata)
    assert scene.stats.valid_fraction == pytest.approx(0.75)
    assert valid_pixels(data, scene.nodata)[:5].sum() == 0


def test_one_band_at_nodata_is_still_valid():
    data = np.array([[[0, 0]], [[5, 0]]], dtype=np.uint8)  # pixel 0: band 1 is 0 but band 2 is 5
    assert valid_pixels(data, 0).tolist() == [[True, False]]


def _expect(path, fragment, **kwargs):
    with pytest.raises(GeoAlpsError) as err:
        open_scene(path, **kwargs)
    message = str(err.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message
    return message


def test_clear_errors_for_bad_inputs(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    _expect(text, "not a raster")
    _expect(tmp_path / "missing.tif", "file not found")
    good = write_raster(tmp_path / "good.tif", np.ones((3, 64, 64), np.uint8) * 7)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:600])
    _expect(truncated, "")
    nodata = write_raster(tmp_path / "empty.tif", np.zeros((2, 16, 16), np.uint16), nodata=0)
    _expect(nodata, "every pixel is nodata")
    plain = write_raster(tmp_path / "plain.tif", np.ones((1, 16, 16), np.uint8), transform=Affine.identity(), crs=None)
    _expect(plain, "--allow-pixel-coords")
    assert open_scene(plain, allow_pixel_coords=True).crs_wkt is None
    rotated_no_crs = write_raster(tmp_path / "nocrs.tif", np.ones((1, 16, 16), np.uint8), transform=Affine(2, 1, 5, 1, -2, 9), crs=None)
    _expect(rotated_no_crs, "no CRS")


def test_nodata_override(tmp_path):
    data = np.full((1, 10, 10), 5, dtype=np.int16)
    data[0, :2] = -9999
    path = write_raster(tmp_path / "i.tif", data)  # no nodata in the file
    assert open_scene(path).stats.valid_fraction == 1.0
    assert open_scene(path, nodata=-9999).stats.valid_fraction == pytest.approx(0.8)
