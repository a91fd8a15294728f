"""Pre-train and Train segmentation model: parameters from the declared records of limits.py,
the arguments they give the CLI, and the Auto-label help and options against the record."""
from __future__ import annotations

import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingException

from helpers import RecordingFeedback, read_record


def _train_params(tiny_raster: str, tmp_path, **extra) -> dict:
    params = {"IMAGES": [tiny_raster], "LABELS": [tiny_raster], "OUTPUT": str(tmp_path / "out" / "model.pt")}
    params.update(extra)
    return params


def test_every_declared_option_is_a_parameter(qgis_app):
    from geoalps_processing import limits

    registry = QgsApplication.processingRegistry()
    for algorithm_id, own in (("geoalps:pretrain", limits.PRETRAIN_OPTIONS), ("geoalps:train", limits.FINETUNE_OPTIONS)):
        algorithm = registry.algorithmById(algorithm_id)
        assert algorithm is not None, algorithm_id
        names = {p.name() for p in algorithm.parameterDefinitions()}
        declared = {spec.name for spec in limits.TRAIN_MODEL_OPTIONS + own + limits.TRAIN_OPTIONS}
        assert names == declared | {"IMAGES", "LABELS", "OUTPUT"}
        epochs = algorithm.parameterDefinition("EPOCHS")
        assert epochs.defaultValue() == 10 and epochs.minimum() == 1
        precision = algorithm.parameterDefinition("PRECISION")
        assert precision.options() == list(limits.TRAIN_PRECISIONS) and precision.defaultValue() == 0


def test_pretrain_defaults_pass_the_declared_defaults(qgis_app, fake_cli, tiny_raster, tmp_path):
    params = _train_params(tiny_raster, tmp_path)
    results = processing.run("geoalps:pretrain", params, feedback=RecordingFeedback())
    argv = read_record(fake_cli)["argv"]
    assert argv == [
        "pretrain", "--images", tiny_raster, "--labels", tiny_raster, "-o", params["OUTPUT"],
        "--model", "swin_t", "--objective", "pseudo", "--mask-ratio", "0.6",
        "--epochs", "10", "--steps-per-epoch", "50", "--batch-size", "8", "--lr", "0.0003", "--weight-decay", "0.05",
        "--val-fraction", "0.2", "--seed", "0", "--device", "auto", "--precision", "auto",
        "--overwrite", "--progress-lines",
    ]
    assert results == {"OUTPUT": params["OUTPUT"]}


def test_train_passes_what_is_set(qgis_app, fake_cli, tiny_raster, tmp_path):
    init = tmp_path / "pre.pt"
    init.write_bytes(b"weights")
    params = _train_params(tiny_raster, tmp_path, MODEL_SIZE=3, TILE_SIZE=128, INIT=str(init), LABEL_FRACTION=0.25,
                           EPOCHS=2, PRECISION=1, AUGMENT=False, RESUME=True, THREADS=1, CLASS_NAMES="a,b,c")
    processing.run("geoalps:train", params, feedback=RecordingFeedback())
    argv = read_record(fake_cli)["argv"]
    assert argv[:7] == ["train", "--images", tiny_raster, "--labels", tiny_raster, "-o", params["OUTPUT"]]
    pairs = dict(zip(argv[7:], argv[8:]))
    assert (pairs["--model"], pairs["--tile-size"], pairs["--init"]) == ("tiny", "128", str(init))
    assert (pairs["--label-fraction"], pairs["--epochs"], pairs["--precision"]) == ("0.25", "2", "32")
    assert (pairs["--threads"], pairs["--class-names"]) == ("1", "a,b,c")
    assert "--no-augment" in argv and "--resume" in argv and "--label-column" not in argv


@pytest.mark.parametrize("tile, ok", [(0, True), (96, True), (32, False), (100, False)])
def test_training_tile_size_is_checked_before_the_run(qgis_app, fake_cli, tiny_raster, tmp_path, tile, ok):
    params = _train_params(tiny_raster, tmp_path, TILE_SIZE=tile)
    if ok:
        processing.run("geoalps:pretrain", params, feedback=RecordingFeedback())
    else:
        with pytest.raises(QgsProcessingException, match="multiple of 32"):
            processing.run("geoalps:pretrain", params, feedback=RecordingFeedback())


def test_label_count_must_match_the_images(qgis_app, fake_cli, tiny_raster, tmp_path):
    params = _train_params(tiny_raster, tmp_path, IMAGES=[tiny_raster, tiny_raster])
    with pytest.raises(QgsProcessingException, match="one label layer per image"):
        processing.run("geoalps:train", params, feedback=RecordingFeedback())


def test_autolabel_help_lists_every_engine_and_model_type(qgis_app):
    from geoalps_processing import limits

    text = QgsApplication.processingRegistry().algorithmById("geoalps:autolabel").shortHelpString()
    for choices in (limits.ENGINES, limits.MODEL_TYPES):  # the library's, by tests/cli/test_plugin_limits.py
        assert limits.enum_help(choices) in text
        assert f"{len(choices) - 1} {choices[-1]}" in text


def test_autolabel_split_and_trust_options(qgis_app, fake_cli, tiny_raster, tmp_path):
    from test_runner import autolabel_params

    model = tmp_path / "old.joblib"
    model.write_bytes(b"model")
    processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path), feedback=RecordingFeedback())
    argv = read_record(fake_cli)["argv"]
    # the split is geoalps's default: nothing passed; trusting a pickled model is off by default
    assert not {"--classical-split", "--no-classical-split", "--trust-kmeans-model"} & set(argv)
    params = autolabel_params(tiny_raster, tmp_path, CLASSICAL_SPLIT=False, KMEANS_MODEL=str(model),
                              TRUST_KMEANS_MODEL=True)
    processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    argv = read_record(fake_cli)["argv"]
    assert "--no-classical-split" in argv and "--classical-split" not in argv
    assert argv[argv.index("--kmeans-model") + 1] == str(model) and "--trust-kmeans-model" in argv
