"""geoalps.train.predict: pixel-for-pixel alignment, the scene grid, round-trip determinism, polygons."""
from __future__ import annotations

import sqlite3

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoalps.cli import main
from geoalps.errors import InputError, ModelError, OutputError
from geoalps.outputs.raster import read_class_names
from geoalps.outputs.vector import LAYER
from geoalps.train.data import read_label_info
from geoalps.train.checkpoint import load_checkpoint, save_checkpoint
from geoalps.train.predict import predict, predict_classes, tile_weights

from train.train_scenes import class_pattern, write_scene
from train.train_scenes import _train_test_environment, trained  # noqa: F401 - fixtures used by name


@pytest.mark.parametrize(
    "height, width, overlap",
    [(150, 173, 13), (40, 90, 16), (64, 64, 0), (129, 200, 31)],  # ragged, smaller than a tile, exactly one tile
)
def test_known_pattern_lands_on_the_same_pixels(tmp_path, height, width, overlap):
    # A "network" whose logits are the first 3 bands: the predicted class of every pixel must be
    # the class painted there, which only holds if tiles, reads and accumulation are aligned.
    classes = np.random.default_rng(height).integers(0, 3, size=(height, width))
    image = np.ones((4, height, width), dtype=np.float32)
    for k in range(3):
        image[k][classes == k] = 5.0
    image[:, :3, :5] = -9  # nodata corner
    transform = Affine(0.37, 0.0, 412345.67, 0.0, -0.53, 5123456.78)
    path = tmp_path / "s.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="float32",
                       crs="EPSG:32633", transform=transform, nodata=-9) as dst:
        dst.write(image)
    found, valid = predict_classes(lambda x: x[:, :3], path, 64, 3, [0.0] * 4, [1.0] * 4, overlap, batch_size=3, nodata=-9)
    assert found.shape == (height, width)
    assert not valid[:3, :5].any() and valid.sum() == height * width - 15
    assert np.array_equal(found[valid], classes[valid])


def test_prediction_tiles_are_the_label_tile_plan(tmp_path):
    from geoalps.errors import OptionError
    from geoalps.inputs.tiles import plan_tiles
    from geoalps.train.predict import prediction_windows

    assert prediction_windows(173, 150, 64, 16) == [(t.col_off, t.row_off) for t in plan_tiles(173, 150, 64, 16)]
    path = write_scene(tmp_path / "s.tif", class_pattern(80, 80))
    with pytest.raises(OptionError, match="half the tile size"):  # the one tile rule, as geoalps label has it
        predict_classes(lambda x: x[:, :3], path, 64, 3, [0.0] * 4, [1.0] * 4, overlap_px=33)


def test_large_score_buffers_are_memory_mapped_beside_the_output(tmp_path, monkeypatch):
    from geoalps.train import predict as gpredict

    classes = np.random.default_rng(0).integers(0, 3, size=(70, 90))
    image = np.stack([(classes == k) * 5.0 for k in range(3)]).astype(np.float32)
    path = tmp_path / "s.tif"
    with rasterio.open(path, "w", driver="GTiff", width=90, height=70, count=3, dtype="float32",
                       crs="EPSG:32633", transform=Affine(0.5, 0, 1000, 0, -0.5, 2000)) as dst:
        dst.write(image)
    monkeypatch.setattr(gpredict, "IN_MEMORY_LIMIT_BYTES", 0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    found, _ = predict_classes(lambda x: x, path, 64, 3, [0.0] * 3, [1.0] * 3, 16, scratch_dir=scratch)
    assert np.array_equal(found, classes)
    assert not list(scratch.iterdir())  # the memory-mapped scores are gone


def test_blending_weights_fall_towards_tile_edges():
    w = tile_weights(64, 16)
    assert w[32, 32] == 1.0 and w[0, 0] < w[0, 32] < w[32, 32]
    assert np.allclose(w, w[::-1, ::-1])
    assert (tile_weights(64, 0) == 1).all()


def test_prediction_is_on_the_scene_grid_and_matches_the_truth(tmp_path, trained):
    model, image, _, classes, _ = trained
    out = predict(model, image, tmp_path / "pred.tif", polygons=tmp_path / "pred.gpkg", quiet=True)
    with rasterio.open(image) as src, rasterio.open(out) as pred:
        assert (pred.crs, pred.transform, pred.width, pred.height) == (src.crs, src.transform, src.width, src.height)
        assert pred.dtypes[0] == "uint8" and pred.nodata == 255
        assert pred.colormap(1)[1][:3] == (30, 200, 30)
        assert pred.descriptions == ("class",)
        predicted = pred.read(1)
    assert read_class_names(out) == (3, ["red", "green", "blue"])  # the label-raster tag contract
    qml = (tmp_path / "pred.qml").read_text()  # QGIS legend: 3 named classes, not 256 entries
    assert qml.count("<paletteEntry") == 3 and 'label="green"' in qml
    assert (predicted == classes).mean() > 0.9

    polygons = gpd.read_file(tmp_path / "pred.gpkg", layer=LAYER)
    assert list(polygons["instance_id"]) == list(range(1, len(polygons) + 1))  # like label's layer
    assert set(polygons["class_id"]) <= {0, 1, 2} and set(polygons["class_name"]) <= {"red", "green", "blue"}
    assert set(polygons["scene"]) == {"scene.tif"}
    assert polygons.crs == rasterio.open(image).crs
    assert polygons.area.sum() == pytest.approx(150 * 173 * 0.73 * 0.61, rel=1e-6)
    assert polygons["area"].to_numpy() == pytest.approx(polygons.area.to_numpy(), abs=1e-6)
    with sqlite3.connect(tmp_path / "pred.gpkg") as con:  # the default QGIS style: categories on class_id, named
        (qml,), = con.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = ? AND useAsDefault = 1", (LAYER,))
    assert 'attr="class_id"' in qml and 'label="blue"' in qml


def test_predict_command_writes_the_class_names_readers_expect(tmp_path, trained):
    # What the QGIS plugin and a later 'geoalps train' read back: band-1 n_classes and
    # ';'-joined class_names (the contract of geoalps.outputs.raster), and the progress lines.
    model, image, *_ = trained
    out = tmp_path / "pred.tif"
    result = CliRunner().invoke(main, ["predict", str(model), str(image), "-o", str(out), "--progress-lines"])
    assert result.exit_code == 0, result.output
    assert read_class_names(out) == (3, ["red", "green", "blue"])
    with rasterio.open(out) as pred:
        assert pred.tags(1)["class_names"] == "red;green;blue" and pred.tags(1)["n_classes"] == "3"
    assert read_label_info(out).names == ("red", "green", "blue")  # a prediction used as labels keeps its names
    lines = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("geoalps-progress: ")]
    assert lines[-1] == "100.0" and all(0 <= float(p) <= 100 for p in lines)


def test_checkpoint_round_trip_predicts_identical_output(tmp_path, trained):
    model, image, *_ = trained
    copy = tmp_path / "copy.pt"
    payload = load_checkpoint(model)
    payload.pop("format"), payload.pop("version")
    save_checkpoint(payload, copy)
    first = predict(model, image, tmp_path / "a.tif", quiet=True)
    second = predict(copy, image, tmp_path / "b.tif", quiet=True)
    with rasterio.open(first) as a, rasterio.open(second) as b:
        assert np.array_equal(a.read(), b.read())


def test_refusals(tmp_path, trained):
    model, image, labels, _, _ = trained
    (tmp_path / "exists.tif").write_bytes(b"")
    with pytest.raises(OutputError, match="exists"):
        predict(model, image, tmp_path / "exists.tif", quiet=True)
    with pytest.raises(InputError, match="1 bands"):
        predict(model, labels, tmp_path / "x.tif", quiet=True)
    with pytest.raises(ModelError, match="not a readable torch checkpoint"):
        predict(image, image, tmp_path / "x.tif", quiet=True)
    six = write_scene(tmp_path / "six.tif", class_pattern(70, 70), bands=6)
    with pytest.raises(InputError, match="6 bands"):
        predict(model, six, tmp_path / "x.tif", quiet=True)
    assert not list(tmp_path.glob(".*tmp*"))


def test_real_scene_valid_pixels_are_exactly_the_scene_data(realdata):
    # Landsat-7 (non-square 300.04 x 300.04 m pixels, nodata 0 around a rotated footprint): the
    # prediction windows are pixel windows read with rasterio, so the output's valid pixels are
    # the scene's own, pixel for pixel. Map-unit tile queries (torchgeo GridGeoSampler over
    # bounds) misplaced some edge tiles by a pixel here (393 nodata pixels came out valid).
    scene = realdata / "satellite" / "landsat7_rgb_byte.tif"
    with rasterio.open(scene) as src:
        data = src.read()
    found, valid = predict_classes(lambda x: x[:, :2], scene, 64, 2, [0.0] * 3, [1.0] * 3, batch_size=16, nodata=0)
    assert valid.shape == data.shape[1:]
    assert np.array_equal(valid, (data != 0).any(axis=0))
    assert np.array_equal(found[valid], (data[1] > data[0]).astype(np.int64)[valid])
