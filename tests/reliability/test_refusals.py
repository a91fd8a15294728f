"""What geoalps refuses before any work, so that no input and no one else's data is ever
overwritten, and the ordinary failures that must say their cause (never "internal error")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from conftest import REPO, random_boxes, scene_with_objects, write_corrupt_jpeg_cog, write_raster
from geoalps import label
from geoalps.errors import InputError, OptionError, OutputError, TileError

LABEL = dict(engine="classical", classes=4, quiet=True)


def geoalps(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "geoalps", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def one_line_error(result, code: int, *needles: str) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoalps: error: "), result.stderr
    assert "internal error" not in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    return write_raster(folder / "victim.tif", scene_with_objects(256, 256, random_boxes(6, 256, seed=1), seed=1))


@pytest.fixture(scope="module")
def labelled(scene) -> Path:
    out = scene.parent / "out.gpkg"
    label(scene, out, raster_out=scene.parent / "out.tif", **LABEL)
    return out


# -- outputs that are inputs, or each other --------------------------------------------------

def test_a_label_raster_never_replaces_its_scene(scene, tmp_path):
    before = scene.read_bytes()
    link = tmp_path / "link.tif"
    link.symlink_to(scene)
    for raster_out in (scene, link, Path(os.path.relpath(scene))):
        with pytest.raises(OutputError, match="is one of the inputs"):
            label(scene, tmp_path / "out.gpkg", raster_out=raster_out, overwrite=True, **LABEL)
    assert scene.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tif"]  # no output, no work folder


def test_two_outputs_of_one_run_may_not_share_a_file(scene, tmp_path):
    with pytest.raises(OutputError, match="unknown raster output format"):  # X.gpkg holding GeoTIFF bytes
        label(scene, tmp_path / "X.gpkg", raster_out=tmp_path / "X.gpkg", **LABEL)
    with pytest.raises(OutputError, match="out.qml"):  # a Shapefile's style and the raster's
        label(scene, tmp_path / "out.shp", raster_out=tmp_path / "out.tif", **LABEL)
    with pytest.raises(OutputError, match="would overwrite another output"):
        label(scene, tmp_path / "out.gpkg", raster_out=tmp_path / "r.tif", kmeans_model=tmp_path / "r.qml", **LABEL)
    assert list(tmp_path.iterdir()) == []


def test_label_rasters_must_be_named_tif(scene, tmp_path):
    for name in ("r.png", "r.jpg", "r"):
        with pytest.raises(OutputError, match=r"unknown raster output format .*use \.tif or \.tiff"):
            label(scene, tmp_path / "out.gpkg", raster_out=tmp_path / name, **LABEL)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_gallery_and_name_refuse_to_write_over_their_inputs(labelled, tmp_path):
    folder = labelled.parent
    truth = write_raster(tmp_path / "truth.tif", np.ones((256, 256), np.uint8))
    kept = {p: p.read_bytes() for p in (truth, folder / "out.tif", labelled)}
    one_line_error(geoalps("evaluate", folder / "out.tif", truth, "--json", truth, "--overwrite"), 4,
                   "truth.tif: is one of the inputs")
    one_line_error(geoalps("evaluate", folder / "out.tif", truth, "--figure", folder / "out.tif", "--overwrite"), 4,
                   "out.tif: is one of the inputs")
    one_line_error(geoalps("classes", "gallery", labelled, "-o", labelled, "--overwrite"), 4,
                   "out.gpkg: is one of the inputs")
    one_line_error(geoalps("classes", "name", labelled, "--names", "0=a", "-o", labelled, "--overwrite"), 4,
                   "out.gpkg: is one of the inputs")
    assert all(p.read_bytes() == data for p, data in kept.items())


# -- --overwrite of a GeoPackage that holds more than geoalps's layer -------------------------

def test_overwrite_keeps_a_users_other_layers(scene, tmp_path):
    import geopandas as gpd

    target = tmp_path / "mine.gpkg"
    roads = gpd.GeoDataFrame({"name": ["A1"]}, geometry=[shapely.LineString([(0, 0), (1, 1)])], crs="EPSG:32633")
    pyogrio.write_dataframe(roads, target, layer="roads")
    before = target.read_bytes()
    with pytest.raises(OutputError, match=r"holds other layers besides geoalps's \(roads\)"):
        label(scene, target, overwrite=True, **LABEL)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.gpkg"]


# -- scene keys ------------------------------------------------------------------------------

def test_scenes_sharing_a_file_name_get_distinct_keys_and_the_gallery_reads_each(tmp_path):
    from geoalps.classes.gallery import find_scene
    from geoalps.outputs.vector import SCENES_METADATA, layer_metadata, read_layer
    import json

    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        write_raster(tmp_path / folder / "scene.tif", scene_with_objects(256, 256, random_boxes(6, 256, seed=seed),
                                                                         seed=seed))
    out = tmp_path / "out.gpkg"
    (tmp_path / "rasters").mkdir()
    label([tmp_path / "a" / "scene.tif", tmp_path / "b" / "scene.tif"], out, raster_out=tmp_path / "rasters", **LABEL)
    assert sorted(p.name for p in (tmp_path / "rasters").glob("*.tif")) == ["a_scene.labels.tif", "b_scene.labels.tif"]
    objects = read_layer(out)
    assert set(objects["scene"]) == {"a/scene.tif", "b/scene.tif"}
    recorded = json.loads(layer_metadata(out)[SCENES_METADATA])
    assert recorded == {"a/scene.tif": str(tmp_path / "a" / "scene.tif"),
                        "b/scene.tif": str(tmp_path / "b" / "scene.tif")}
    assert find_scene(str(out), "b/scene.tif") == str(tmp_path / "b" / "scene.tif")
    assert find_scene(str(out), "a/scene.tif", [tmp_path / "b" / "scene.tif", tmp_path / "a" / "scene.tif"]) \
        == str(tmp_path / "a" / "scene.tif")
    # each object lies on its own scene: its polygons come from that file's pixels
    for key in ("a/scene.tif", "b/scene.tif"):
        with rasterio.open(recorded[key]) as src:
            box = shapely.box(*src.bounds)
        assert objects[objects["scene"] == key].geometry.within(box.buffer(1e-6)).all()


# -- a block GDAL cannot decode ---------------------------------------------------------------

def test_an_undecodable_block_fails_its_tile_never_labelled(tmp_path):
    """A JPEG COG with 3,000 bytes overwritten inside one tile's data: GDAL says "JPEGLib:
    Unsupported marker" and hands back pixels anyway; that tile must fail, named."""
    size = 1024
    data = scene_with_objects(size, size, random_boxes(30, size, sides=(30, 80), margin=100))
    data = np.clip(data + np.random.default_rng(5).normal(0, 25, data.shape), 0, 255).astype(np.uint8)
    path = write_corrupt_jpeg_cog(tmp_path / "cog.tif", data)
    with pytest.raises(TileError) as failed:
        label(path, tmp_path / "out.gpkg", tile_size_px=512, **LABEL)
    message = str(failed.value)
    assert message.startswith(f"{path}: tile s0_r0_c") and "cannot read pixels" in message
    assert "JPEGLib" in message, message
    assert not (tmp_path / "out.gpkg").exists()


# -- ordinary failures with their own exit code -----------------------------------------------

def test_ordinary_failures_say_their_cause(scene, tmp_path):
    one_line_error(geoalps("label", scene, "-o", "/proc/out.gpkg", "--engine", "classical"), 4, "/proc/out.gpkg")
    with pytest.raises(OptionError, match="--seed"):
        label(scene, tmp_path / "out.gpkg", seed=-1, **LABEL)
    with pytest.raises(OutputError, match="does not exist"):
        label(scene, tmp_path / "out.gpkg", kmeans_model=tmp_path / "missing" / "km.joblib", **LABEL)
    assert list(tmp_path.iterdir()) == []  # and no work folder blocks the next run
    assert geoalps("label", scene, "-o", tmp_path / "out.gpkg", "--engine", "classical", "-q").returncode == 0


def test_a_failure_before_any_tile_leaves_no_work_folder(scene, tmp_path, monkeypatch):
    import geoalps.labelling.run as run

    def broken(*args, **kwargs):
        raise InputError("engine could not start")

    monkeypatch.setattr(run, "_start_engine", broken)
    with pytest.raises(InputError):
        label(scene, tmp_path / "out.gpkg", **LABEL)
    assert list(tmp_path.iterdir()) == []


def test_quiet_still_warns_about_the_result(tmp_path):
    flat = write_raster(tmp_path / "one.tif", np.full((3, 1, 1), 7, np.uint8))
    result = geoalps("label", flat, "-o", tmp_path / "out.gpkg", "--engine", "classical", "-q")
    assert result.returncode == 0, result.stderr
    assert "warning: no objects found in one.tif" in result.stderr


def test_a_kmeans_model_with_other_classes_is_said(scene, tmp_path):
    model = tmp_path / "km.joblib"
    label(scene, tmp_path / "a.gpkg", kmeans_model=model, **LABEL)
    result = geoalps("label", scene, "-o", tmp_path / "b.gpkg", "--engine", "classical", "--classes", "7",
                     "--kmeans-model", model, "-q")
    assert result.returncode == 0, result.stderr
    assert f"{model} has 4 classes; they are used, not --classes 7" in result.stderr


def test_a_stac_feature_without_stac_version_is_an_input_error(tmp_path):
    import json

    from stac_items import write_item

    item, _ = write_item(tmp_path, np.full((4, 32, 32), 100, np.uint16))
    data = json.loads(item.read_text())
    del data["stac_version"]
    item.write_text(json.dumps(data))
    one_line_error(geoalps("label", item, "-o", tmp_path / "out.gpkg", "--engine", "classical"), 3,
                   f"{item.name}: not a valid STAC item", "no stac_version")
    assert not (tmp_path / "out.gpkg").exists() and not (tmp_path / "out.gpkg.geoalps-work").exists()


def test_predict_and_training_refuse_outputs_over_inputs(scene, tmp_path):
    before = scene.read_bytes()
    one_line_error(geoalps("predict", tmp_path / "model.pt", scene, "-o", tmp_path / "r.png"), 4,
                   "r.png: unknown raster output format (.png)")
    one_line_error(geoalps("predict", tmp_path / "model.pt", scene, "-o", scene, "--overwrite"), 4,
                   "is one of the inputs")
    labels = write_raster(tmp_path / "labels.tif", np.zeros((256, 256), np.uint8))
    one_line_error(geoalps("pretrain", "--images", scene, "--labels", labels, "-o", labels), 4,
                   "labels.tif: is one of the inputs")
    assert scene.read_bytes() == before
