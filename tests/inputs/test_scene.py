import math
from dataclasses import replace

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from conftest import write_corrupt_jpeg_cog, write_raster
from geoalps.errors import GeoAlpsError, InputError
from geoalps.inputs.scene import (fill_value_of, open_dataset, open_scene, read_pixels, read_window,
                                  valid_pixels)


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


def test_read_window_boundless_fills_outside_the_file(tmp_path):
    """A window reaching past the edges (a chip around an edge pixel) keeps its size; outside the
    file is the scene's nodata (so it counts as invalid), or 0 when there is none."""
    data = np.arange(2 * 6 * 8, dtype=np.int16).reshape(2, 6, 8) + 1
    scene = open_scene(write_raster(tmp_path / "n.tif", data, nodata=-5))
    block = read_window(scene, Window(-2, -1, 5, 4), boundless=True)
    assert block.shape == (2, 4, 5) and block.dtype == np.int16
    assert (block[:, 0, :] == -5).all() and (block[:, :, :2] == -5).all()
    np.testing.assert_array_equal(block[:, 1:, 2:], data[:, :3, :3])
    assert not valid_pixels(block, scene.nodata)[0].any()
    edge = read_window(scene, Window(6, 4, 4, 4), boundless=True, fill_value=99)
    np.testing.assert_array_equal(edge[:, :2, :2], data[:, 4:, 6:])
    assert (edge[:, 2:, :] == 99).all() and (edge[:, :, 2:] == 99).all()
    plain = open_scene(write_raster(tmp_path / "p.tif", data))
    assert fill_value_of(plain) == 0 and (read_window(plain, Window(7, 0, 3, 2), boundless=True)[:, :, 1:] == 0).all()
    # without boundless a window inside the file reads as before, one past its edges is clipped
    np.testing.assert_array_equal(read_window(scene, Window(1, 2, 3, 2)), data[:, 2:4, 1:4])
    assert read_window(scene, Window(6, 4, 4, 4)).shape == (2, 2, 2)


def test_read_window_of_an_aoi_scene_is_boundless_in_file_pixels(tmp_path):
    """With an area of interest the window is in the AOI window's grid; boundless reads past the
    AOI window still return the file's pixels where the file has them."""
    data = np.arange(1 * 10 * 10, dtype=np.uint8).reshape(1, 10, 10)
    scene = replace(open_scene(write_raster(tmp_path / "a.tif", data)), col_off=4, row_off=4, width=4, height=4)
    block = read_window(scene, Window(-1, 5, 3, 3), boundless=True)
    np.testing.assert_array_equal(block[0, :1], data[0, 9:, 3:6])
    assert (block[0, 1:] == 0).all()


def test_open_dataset_is_the_door_for_rasters_that_are_not_scenes(tmp_path):
    """Class rasters and truths: no statistics, no georeferencing needed, and the scene's
    one-line errors naming the file."""
    classes = write_raster(tmp_path / "classes.tif", np.zeros((1, 4, 4), np.uint8), crs=None,
                           transform=Affine.identity())  # all 0 and no CRS: not a scene, still a raster
    with open_dataset(classes) as src:
        assert read_pixels(src, Window(0, 0, 2, 2), indexes=1, shown="x").shape == (2, 2)
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    for path, fragment in ((text, "not a raster"), (tmp_path / "missing.tif", "file not found"),
                           (tmp_path, "is a folder")):
        with pytest.raises(InputError) as err:
            with open_dataset(path):
                pass
        assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)
        assert "\n" not in str(err.value)


def test_read_pixels_names_the_file_and_window_of_an_undecodable_block(tmp_path):
    """A JPEG tile with bytes overwritten: GDAL signals "JPEGLib" and returns pixels anyway; the
    door turns it into one line naming the file and the window."""
    size = 512
    data = np.random.default_rng(5).integers(0, 256, (3, size, size)).astype(np.uint8)
    path = write_corrupt_jpeg_cog(tmp_path / "cog.tif", data)
    with open_dataset(path) as src, pytest.raises(InputError) as err:
        read_pixels(src, Window(0, 0, size, size), shown=str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read pixels at col 0, row 0 (512 x 512 px)") and "\n" not in message
    with pytest.raises(InputError, match="cannot read pixels at col 0, row 0"):
        read_window(open_scene(path), Window(0, 0, size, size), boundless=True)


def test_stats_hold_band_mean_and_std_of_the_valid_pixels(tmp_path):
    """open_scene's one read also gives each band's mean and std (training standardises with them)."""
    from geoalps.inputs.scene import pooled_mean_std

    rng = np.random.default_rng(3)
    data = rng.normal(2000, 300, size=(3, 40, 70)).clip(1, 60000).astype(np.uint16)
    data[:, :8, :] = 0  # nodata rows: every band at nodata
    data[1, 20, :] = 0  # one band at 0, the others not: a valid pixel (valid_pixels' rule)
    scene = open_scene(write_raster(tmp_path / "s.tif", data, nodata=0))
    valid = valid_pixels(data, 0)
    values = data[:, valid].astype(np.float64)
    np.testing.assert_allclose(scene.stats.mean, values.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(scene.stats.std, values.std(axis=1), rtol=1e-12)
    assert scene.stats.sample_px == (valid.sum(),) * 3
    # two scenes pooled = one scene holding both samples
    other = open_scene(write_raster(tmp_path / "o.tif", (data[:, 8:] // 2 + 500).astype(np.uint16), nodata=0))
    both = np.concatenate([values, (data[:, 8:] // 2 + 500)[:, valid[8:]].astype(np.float64)], axis=1)
    mean, std = pooled_mean_std([scene.stats, other.stats])
    np.testing.assert_allclose(mean, both.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, both.std(axis=1), rtol=1e-12)


@pytest.mark.parametrize("layout", [
    dict(tiled=True, blockxsize=64, blockysize=32, compress="deflate"),  # pixel-interleaved tiles
    dict(compress="deflate"),  # strips
    dict(tiled=True, blockxsize=32, blockysize=32, interleave="band"),  # one band after another
])
def test_decimated_statistics_read_the_pixels_gdal_picks(tmp_path, monkeypatch, layout):
    """Without overviews the statistics sample is read block row by block row (GDAL's own
    decimated read decodes each block once a band, or holds the whole scene in its cache); it
    must be the sample GDAL's one read gives, pixel for pixel, windows and odd sizes included."""
    import rasterio

    from geoalps.inputs import scene as scene_module

    data = np.random.default_rng(3).integers(1, 60000, (3, 523, 701), dtype=np.uint16)
    path = write_raster(tmp_path / "d.tif", data, **layout)
    monkeypatch.setattr(scene_module, "DECIMATED_READ_BYTES", 3 * 2 * 32 * 64)  # spans of one or two blocks
    with rasterio.open(path) as src:
        assert not src.overviews(1)
        for window, out_h, out_w in [(Window(0, 0, 701, 523), 100, 134), (Window(0, 0, 701, 523), 7, 523),
                                     (Window(33, 101, 600, 401), 97, 145), (Window(5, 9, 96, 64), 64, 96)]:
            whole = (window.width, window.height) == (src.width, src.height)
            expected = src.read(window=None if whole else window, out_shape=(3, out_h, out_w))
            np.testing.assert_array_equal(scene_module._decimated_read(src, window, out_h, out_w), expected)
    monkeypatch.setattr(scene_module, "STATS_READ_PX", 128)
    scene = open_scene(path)
    sample = data[:, (2 * np.arange(95) + 1) * 523 // 190][:, :, (2 * np.arange(128) + 1) * 701 // 256]
    assert scene.stats.sample_px == (95 * 128,) * 3  # 523 x 701 px read at 95 x 128
    assert scene.stats.low[1] == pytest.approx(np.percentile(sample[1], 2.0), rel=1e-9)
    assert scene.stats.mean[2] == pytest.approx(sample[2].astype(np.float64).mean(), rel=1e-9)


def test_gdal_block_cache_is_bounded_unless_the_user_sets_it(monkeypatch):
    """GDAL's default block cache is 5 % of the machine's memory a process; a whole-scene read
    kept up to that much in the driver, and in the workers forked from it, for the rest of a run
    (485 MB of a 10240 x 10240 px scene)."""
    import rasterio.env

    from geoalps.inputs.remote import REMOTE_DEFAULTS, gdal_env

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    with gdal_env():
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == REMOTE_DEFAULTS["GDAL_CACHEMAX"] == 64 * 2**20
    monkeypatch.setenv("GDAL_CACHEMAX", "1024")
    with gdal_env():
        assert "GDAL_CACHEMAX" not in rasterio.env.getenv()
