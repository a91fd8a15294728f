"""runner.py through the algorithms, against a fake geoalps: arguments, progress, logs, errors, cancel."""
from __future__ import annotations

import os
import time

import processing
import pytest
from qgis.core import QgsProcessingException

from helpers import RecordingFeedback, process_gone, read_record


def autolabel_params(raster: str, tmp_path, **extra) -> dict:
    # Every parameter explicitly: QGIS 3.22 did not apply some int defaults when omitted.
    params = {
        "INPUT": raster, "BANDS": "", "ENGINE": 2, "CHECKPOINT": None, "MODEL_TYPE": 0,
        "CLASSES": 3, "TILE_SIZE": 512, "OVERLAP": 64, "KMEANS_MODEL": None, "SEED": 7,
        "OUTPUT": str(tmp_path / "out" / "labels.gpkg"), "RASTER_OUTPUT": None,
        "KMEANS_MODEL_OUT": None,
    }
    params.update(extra)
    return params


def test_arguments_progress_and_logs(qgis_app, fake_cli, tiny_raster, tmp_path):
    feedback = RecordingFeedback()
    raster_out = str(tmp_path / "out" / "labels.tif")
    params = autolabel_params(tiny_raster, tmp_path, BANDS="3,2,1", RASTER_OUTPUT=raster_out)

    results = processing.run("geoalps:autolabel", params, feedback=feedback)

    argv = read_record(fake_cli)["argv"]
    assert argv == [
        "label", tiny_raster, "-o", params["OUTPUT"], "--engine", "classical",
        "--model-type", "auto", "--classes", "3", "--tile-size", "512", "--overlap", "64",
        "--seed", "7", "--bands", "3,2,1", "--raster-out", raster_out,
        "--overwrite", "--progress-lines",
    ]
    assert results["OUTPUT"] == params["OUTPUT"]
    assert results["RASTER_OUTPUT"] == raster_out
    assert os.path.exists(params["OUTPUT"]) and os.path.exists(raster_out)
    assert feedback.progress[:3] == [0.0, 50.0, 100.0]
    assert "tile 1/2 scene.tif s0_r0_c0: 12 objects" in feedback.texts
    assert "geoalps: engine classical" in feedback.console
    assert "a stdout line" in feedback.console
    assert not any(line.startswith("geoalps-progress") for line in feedback.console)
    assert str(fake_cli) in feedback.commands[0]


def test_band_names_are_passed_as_band_names(qgis_app, fake_cli, tiny_raster, tmp_path):
    params = autolabel_params(tiny_raster, tmp_path, BAND_NAMES=" blue,green,red ")
    processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    argv = read_record(fake_cli)["argv"]
    assert argv[argv.index("--band-names") + 1] == "blue,green,red"
    processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path), feedback=RecordingFeedback())
    assert "--band-names" not in read_record(fake_cli)["argv"]  # empty: geoalps reads the raster's


def test_progress_glued_to_a_progress_bar_is_still_read(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "glued")
    feedback = RecordingFeedback()
    processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path), feedback=feedback)
    assert 99.5 in feedback.progress
    assert "labelling: 100%|##########| 2/2" in feedback.console


def test_child_environment_drops_qgis_python_gdal_and_proj(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/usr/share/qgis/python")
    monkeypatch.setenv("PYTHONHOME", "/usr")
    monkeypatch.setenv("GDAL_DATA", "/usr/share/gdal")
    monkeypatch.setenv("PROJ_LIB", "/usr/share/proj")
    processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path))
    env = read_record(fake_cli)["env"]
    for name in ("PYTHONPATH", "PYTHONHOME", "GDAL_DATA", "PROJ_LIB"):
        assert name not in env
    assert env["PYTHONUNBUFFERED"] == "1"


def test_error_line_becomes_the_exception(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "fail")
    params = autolabel_params(tiny_raster, tmp_path)
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    assert "geoalps: error: /data/scene.tif: not a raster GDAL can read" in str(raised.value)
    assert not os.path.exists(params["OUTPUT"])


def test_exit_without_error_line_reports_code_and_last_lines(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "crash")
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path), feedback=RecordingFeedback())
    assert "exit code 3" in str(raised.value)
    assert "Segmentation fault (pretend)" in str(raised.value)


def test_killed_child_is_reported(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "signal")
    with pytest.raises(QgsProcessingException, match="killed by signal 9"):
        processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path), feedback=RecordingFeedback())


def test_cancel_kills_the_process_group_and_leaves_no_output(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "slow")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    bystander = out_dir / "other.gpkg"
    bystander.write_bytes(b"keep me")
    params = autolabel_params(tiny_raster, tmp_path)
    feedback = RecordingFeedback(cancel_on_progress=True)

    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("geoalps:autolabel", params, feedback=feedback)

    print(f"cancel took {time.monotonic() - feedback.cancelled_at:.2f} s")
    assert time.monotonic() - feedback.cancelled_at < 10  # SIGTERM grace is 5 s
    record = read_record(fake_cli)
    assert process_gone(record["pid"]), record
    assert process_gone(record["grandchild"]), record
    assert not os.path.exists(record["temp"]), os.listdir(out_dir)
    assert not os.path.exists(params["OUTPUT"])
    assert bystander.read_bytes() == b"keep me"


def test_kmeans_destination_is_passed_and_replaced(qgis_app, fake_cli, tiny_raster, tmp_path):
    model = tmp_path / "model.joblib"
    model.write_bytes(b"old model")
    params = autolabel_params(tiny_raster, tmp_path, KMEANS_MODEL_OUT=str(model))
    results = processing.run("geoalps:autolabel", params)
    argv = read_record(fake_cli)["argv"]
    assert argv[argv.index("--kmeans-model") + 1] == str(model)
    assert not model.exists()  # the fake does not write it; the stale one was not reused
    assert results["KMEANS_MODEL_OUT"] == str(model)


def test_kmeans_reuse_and_save_together_is_refused(qgis_app, fake_cli, tiny_raster, tmp_path):
    existing = tmp_path / "model.joblib"
    existing.write_bytes(b"model")
    params = autolabel_params(
        tiny_raster, tmp_path, KMEANS_MODEL=str(existing), KMEANS_MODEL_OUT=str(tmp_path / "new.joblib")
    )
    with pytest.raises(QgsProcessingException, match="either"):
        processing.run("geoalps:autolabel", params)


def test_predict_arguments(qgis_app, fake_cli, tiny_raster, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    params = {
        "MODEL": str(model), "INPUT": tiny_raster,
        "OUTPUT": str(tmp_path / "pred.tif"), "POLYGONS": str(tmp_path / "pred.gpkg"),
    }
    results = processing.run("geoalps:predict", params, feedback=RecordingFeedback())
    assert read_record(fake_cli)["argv"] == [
        "predict", str(model), tiny_raster, "-o", params["OUTPUT"],
        "--polygons", params["POLYGONS"], "--overwrite", "--progress-lines",
    ]
    assert results == {"OUTPUT": params["OUTPUT"], "POLYGONS": params["POLYGONS"]}


def test_non_gpkg_polygon_output_is_refused(qgis_app, fake_cli, tiny_raster, tmp_path):
    params = autolabel_params(tiny_raster, tmp_path, OUTPUT=str(tmp_path / "labels.shp"))
    with pytest.raises(QgsProcessingException, match="gpkg"):
        processing.run("geoalps:autolabel", params)


def test_output_guard_removes_only_what_the_run_made(tmp_path):
    from geoalps_processing.runner import OutputGuard

    old = tmp_path / "labels.gpkg"
    old.write_bytes(b"previous result")
    untouched = tmp_path / "labels.tif"
    untouched.write_bytes(b"previous raster")
    unrelated = tmp_path / "labels_notes.txt"
    guard = OutputGuard([str(old), str(untouched), ""])

    time.sleep(0.01)
    old.write_bytes(b"half-written replacement")
    temp = tmp_path / ".labels.abc123.tmp.gpkg"
    temp.write_bytes(b"half")
    journal = tmp_path / "labels.gpkg-journal"
    journal.write_bytes(b"j")
    unrelated.write_bytes(b"made meanwhile, not ours")

    removed = guard.cleanup()
    assert sorted(removed) == sorted(str(p) for p in (old, temp, journal))
    assert untouched.read_bytes() == b"previous raster"
    assert unrelated.exists()


def test_sam_checkpoint_model_type_and_workers_are_passed(qgis_app, fake_cli, tiny_raster, tmp_path):
    checkpoint = tmp_path / "sam vit_b.pth"
    checkpoint.write_bytes(b"weights")
    params = autolabel_params(
        tiny_raster, tmp_path, ENGINE=1, CHECKPOINT=str(checkpoint), MODEL_TYPE=1, WORKERS=2,
    )
    processing.run("geoalps:autolabel", params)
    argv = read_record(fake_cli)["argv"]
    assert argv[argv.index("--engine") + 1] == "sam"
    assert argv[argv.index("--checkpoint") + 1] == str(checkpoint)
    assert argv[argv.index("--model-type") + 1] == "vit_b"
    assert argv[argv.index("--workers") + 1] == "2"


@pytest.mark.parametrize("scale, passed", [(800.0, ["--classical-scale", "800.0"]), (12.5, ["--classical-scale", "12.5"]),
                                           (200.0, []), (None, [])])
def test_classical_scale_is_passed_unless_the_default(qgis_app, fake_cli, tiny_raster, tmp_path, scale, passed):
    processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path, CLASSICAL_SCALE=scale))
    argv = read_record(fake_cli)["argv"]
    given = argv[argv.index("--classical-scale"):argv.index("--classical-scale") + 2] if "--classical-scale" in argv else []
    assert given == passed
