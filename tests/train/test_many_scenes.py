"""Many scenes for training: --images and --labels take folders, glob patterns, lists and STAC
items as ``geoalps label`` does, and a label folder pairs with its scenes by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geoalps.cli import main
from geoalps.errors import InputError
from geoalps.train.data import open_training_data, pair_labels

from stac_items import GRID_10M, write_item
from train.train_scenes import TRAIN_TRANSFORM, class_pattern, write_labels, write_scene
from train.train_scenes import _train_test_environment  # noqa: F401 - fixtures used by name

TINY = ["--model", "tiny", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--seed", "3", "-q"]

#: Scene b lies 400 rows south of scene a and has another size, so a label raster paired with
#: the wrong scene is off its grid (check_same_grid refuses it).
B_TRANSFORM = TRAIN_TRANSFORM @ TRAIN_TRANSFORM.translation(0, 400)
SIZES = {"a": (128, 140), "b": (144, 132)}


@pytest.fixture
def scenes(tmp_path):
    """scenes/a.tif and scenes/b.tif (different grids and sizes, 3 classes each), and their classes."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    classes = {name: class_pattern(*SIZES[name], seed=seed) for seed, name in enumerate(SIZES, start=5)}
    write_scene(folder / "a.tif", classes["a"], seed=1)
    write_scene(folder / "b.tif", classes["b"], transform=B_TRANSFORM, seed=2)
    return folder, classes


def _one_line_error(result, *parts: str) -> str:
    assert result.exit_code == InputError.exit_code, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("geoalps: error: ")
    for part in parts:
        assert part in result.stderr, result.stderr
    return result.stderr


def test_a_multi_scene_label_run_pairs_by_name_and_pretrains_on_both_scenes(scenes, tmp_path):
    folder, _ = scenes
    labels = tmp_path / "labels"
    labels.mkdir()
    runner = CliRunner()
    result = runner.invoke(main, ["label", str(folder), "--engine", "classical", "--classes", "3", "--raster-out",
                                  str(labels), "-o", str(tmp_path / "all.gpkg"), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in labels.glob("*.tif")) == ["a.labels.tif", "b.labels.tif"]
    (labels / "notes.txt").write_text("not a label")  # other files in the folder are ignored
    write_labels(labels / "c.labels.tif", class_pattern(64, 64))  # a label of no scene given

    data = open_training_data([folder], [labels])
    assert [s.name for s in data.scenes] == ["a.tif", "b.tif"]
    assert [info.path for info in data.labels] == [str(labels / "a.labels.tif"), str(labels / "b.labels.tif")]
    for scene, label in zip(data.scenes, data.dataset.labels):  # each label on its own scene's grid
        assert (label.width, label.height, label.transform) == (scene.width, scene.height, scene.transform)

    model = tmp_path / "m.pt"
    result = runner.invoke(main, ["pretrain", "--images", str(folder), "--labels", str(labels), "-o", str(model), *TINY])
    assert result.exit_code == 0, result.output
    training = torch.load(model, map_location="cpu", weights_only=True)["training"]
    assert training["images"] == [str(folder / "a.tif"), str(folder / "b.tif")]
    assert training["labels"] == [str(labels / "a.labels.tif"), str(labels / "b.labels.tif")]
    assert {box[0] for box in training["regions"]["train"]} == {0, 1}  # both scenes train
    assert len(training["history"]) == 1 and np.isfinite(training["history"][0]["train_loss"])


def test_glob_patterns_for_images_and_labels_expand_sorted(scenes, tmp_path):
    folder, classes = scenes
    labels = tmp_path / "gt"
    labels.mkdir()
    write_labels(labels / "b.gt.tif", classes["b"], transform=B_TRANSFORM)
    write_labels(labels / "a.gt.tif", classes["a"])
    data = open_training_data([str(folder / "*.tif")], [str(labels / "?.gt.tif")])
    assert [s.name for s in data.scenes] == ["a.tif", "b.tif"]
    assert [info.path for info in data.labels] == [str(labels / "a.gt.tif"), str(labels / "b.gt.tif")]
    for label, name in zip(data.dataset.labels, "ab"):  # pixels read back: each scene's own classes
        with rasterio.open(label.path) as src:
            assert np.array_equal(src.read(1), classes[name])

    result = CliRunner().invoke(main, ["pretrain", "--images", str(folder / "*.jp2"), "--labels", str(labels),
                                       "-o", str(tmp_path / "m.pt"), *TINY])
    _one_line_error(result, f"{folder / '*.jp2'}: no file matches this pattern")
    assert not (tmp_path / "m.pt").exists()


def test_a_stac_item_trains_with_its_label_named_after_the_item(tmp_path):
    classes = class_pattern(128, 128, seed=9)
    data = 800 + np.random.default_rng(9).normal(0, 40, size=(4, 128, 128))
    for k in range(3):
        data[k][classes == k] += 900
    item, _ = write_item(tmp_path / "stac", np.clip(data, 1, 60000).astype("uint16"))
    labels = tmp_path / "labels"
    labels.mkdir()
    write_labels(labels / "S2X_TEST.labels.tif", classes, transform=GRID_10M)

    opened = open_training_data([item], [labels])
    (scene,) = opened.scenes
    assert (scene.name, scene.shown, scene.count, scene.transform) == ("S2X_TEST", str(item), 4, GRID_10M)
    assert opened.labels[0].path == str(labels / "S2X_TEST.labels.tif")

    model = tmp_path / "m.pt"
    result = CliRunner().invoke(main, ["pretrain", "--images", str(item), "--labels", str(labels), "-o", str(model),
                                       *TINY])
    assert result.exit_code == 0, result.output
    training = torch.load(model, map_location="cpu", weights_only=True)["training"]
    assert training["images"] == [str(item)]  # the item as shown, never its VRT's XML
    assert "VRTDataset" not in json.dumps(training, default=str)


def test_a_scene_without_its_label_in_the_folder_is_a_one_line_error(scenes, tmp_path):
    folder, classes = scenes
    labels = tmp_path / "labels"
    labels.mkdir()
    write_labels(labels / "a.labels.tif", classes["a"])
    write_labels(labels / "b_old.labels.tif", classes["b"], transform=B_TRANSFORM)  # not b's name
    result = CliRunner().invoke(main, ["pretrain", "--images", str(folder), "--labels", str(labels),
                                       "-o", str(tmp_path / "m.pt"), *TINY])
    _one_line_error(result, f"{folder / 'b.tif'}: no label in {labels}", "b.labels.tif")
    assert not (tmp_path / "m.pt").exists()


def test_label_counts_that_do_not_match_the_scenes_are_refused(scenes, tmp_path):
    folder, classes = scenes
    only_a = write_labels(tmp_path / "a.labels.tif", classes["a"])
    result = CliRunner().invoke(main, ["train", "--images", str(folder), "--labels", str(only_a),
                                       "-o", str(tmp_path / "m.pt"), *TINY])
    _one_line_error(result, "2 images but 1 label files; give one label file per image, in order")
    with pytest.raises(InputError, match="a label folder pairs with the scenes by name; give it as the only --labels"):
        open_training_data([folder], [only_a, tmp_path / "scenes"])


def test_a_folder_label_named_like_its_scene_but_never_the_scene_itself(tmp_path):
    """Ground truth named after the scene (a.gpkg, b.tif) pairs when there is no .labels.tif;
    in a folder holding the scene too, the scene's own file is not its label; two candidates
    are refused, naming both."""
    classes = class_pattern(128, 140, seed=4)
    folder = tmp_path / "data"
    folder.mkdir()
    a = write_scene(folder / "a.tif", classes)
    gt = tmp_path / "gt"
    gt.mkdir()
    b = write_scene(tmp_path / "b.tif", classes, transform=B_TRANSFORM)
    write_labels(gt / "b.tif", classes, transform=B_TRANSFORM)
    opened = open_training_data([a, b])  # the scenes, opened
    with pytest.raises(InputError, match=r"a\.tif: no label in .*data"):
        pair_labels(opened.scenes[:1], [folder])  # data/ holds a.tif only: not its own label
    (folder / "a.gpkg").write_bytes(b"")
    assert pair_labels(opened.scenes[:1], [folder]) == [str(folder / "a.gpkg")]
    assert pair_labels(opened.scenes[1:], [gt]) == [str(gt / "b.tif")]
    (folder / "a.geojson").write_text("{}")
    with pytest.raises(InputError, match=r"a\.tif: several labels in .*data \(a\.geojson, a\.gpkg\); keep one"):
        pair_labels(opened.scenes[:1], [folder])


def test_two_scenes_of_one_name_never_share_a_label_folder_file(scenes, tmp_path):
    folder, classes = scenes
    other = tmp_path / "other"
    other.mkdir()
    write_scene(other / "a.tif", classes["a"], seed=4)  # same grid as scenes/a.tif, another scene
    labels = tmp_path / "labels"
    labels.mkdir()
    write_labels(labels / "a.labels.tif", classes["a"])
    with pytest.raises(InputError, match=r"other/a\.tif: pairs with .*a\.labels\.tif as .*scenes/a\.tif does"):
        open_training_data([folder / "a.tif", other / "a.tif"], [labels])


def test_help_says_what_images_and_labels_accept():
    for command in ("pretrain", "train"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert "folders (their image files, sorted), glob patterns" in text and "STAC items" in text
        assert "ONE folder paired with the scenes by name" in text and "<scene stem>.labels.tif" in text
