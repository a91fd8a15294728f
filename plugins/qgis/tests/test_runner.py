"""runner.py through the algorithms, against a fake geoalps: arguments, progress, logs, errors, cancel."""
from __future__ import annotations

import os
import threading
import time

import processing
import pytest
from qgis.core import QgsProcessingException
from qgis.PyQt.QtCore import QTimer

from helpers import RecordingFeedback, live_group_members, process_gone, read_calls, read_record

#: The most a cancel may take, from feedback.cancel() to the algorithm's return, the child's
#: whole process group gone (issue 23 item 4).
CANCEL_LIMIT_S = 2.0


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
    assert time.monotonic() - feedback.cancelled_at < CANCEL_LIMIT_S
    record = read_record(fake_cli)
    assert process_gone(record["pid"]), record
    assert process_gone(record["grandchild"]), record
    assert not os.path.exists(record["temp"]), os.listdir(out_dir)
    assert not os.path.exists(params["OUTPUT"])
    assert bystander.read_bytes() == b"keep me"
    # the finished tiles stay for "Resume an interrupted run"
    assert sorted(os.listdir(out_dir)) == ["labels.gpkg.geoalps-work", "other.gpkg"]


def _cancel_silent_run(fake_cli, raster, tmp_path, schedule) -> tuple[RecordingFeedback, float]:
    """Run Auto-label on a fake geoalps that prints nothing for 30 s, have ``schedule`` cancel
    it 1.5 s in; returns the feedback and the seconds from the cancel to the return."""
    params = autolabel_params(raster, tmp_path)
    feedback = RecordingFeedback()
    schedule(1.5, feedback.cancel_now)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("geoalps:autolabel", params, feedback=feedback)
    took = time.monotonic() - feedback.cancelled_at
    print(f"cancel took {took:.2f} s")
    assert read_calls(fake_cli)[-1][:1] == ["label"]  # it was the silent label run that stopped
    return feedback, took


def _on_qt_timer(seconds: float, call) -> None:
    QTimer.singleShot(int(seconds * 1000), call)


def _on_thread_timer(seconds: float, call) -> None:
    timer = threading.Timer(seconds, call)
    timer.daemon = True
    timer.start()


def test_cancel_through_the_event_loop_stops_a_silent_child_within_2_s(
        qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    # qgis_process turns Ctrl+C into feedback.cancel() through a Qt event of the main thread,
    # the thread the algorithm runs in there: the runner must let events run while it waits.
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "silent")
    _, took = _cancel_silent_run(fake_cli, tiny_raster, tmp_path, _on_qt_timer)
    assert took < CANCEL_LIMIT_S
    record = read_record(fake_cli)
    assert live_group_members(record["pid"]) == []
    assert process_gone(record["grandchild"])


def test_cancel_kills_a_group_that_ignores_sigterm_within_2_s(
        qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    # A child (and its grandchild) that does not stop on SIGTERM gets SIGKILL after a short grace.
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "silent")
    monkeypatch.setenv("FAKE_GEOALPS_IGNORE_TERM", "1")
    _, took = _cancel_silent_run(fake_cli, tiny_raster, tmp_path, _on_thread_timer)
    assert took < CANCEL_LIMIT_S
    record = read_record(fake_cli)
    assert live_group_members(record["pid"]) == []
    assert process_gone(record["grandchild"])


def test_failed_run_keeps_the_work_folder_but_no_output(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "fail")
    params = autolabel_params(tiny_raster, tmp_path)
    with pytest.raises(QgsProcessingException, match="not a raster GDAL can read"):
        processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    assert os.listdir(tmp_path / "out") == ["labels.gpkg.geoalps-work"]


def test_resume_is_asked_for_only_when_a_work_folder_exists(qgis_app, fake_cli, tiny_raster, tmp_path):
    params = autolabel_params(tiny_raster, tmp_path)  # RESUME not given: on by default
    work = params["OUTPUT"] + ".geoalps-work"

    fresh = RecordingFeedback()
    processing.run("geoalps:autolabel", params, feedback=fresh)
    assert "--resume" not in read_calls(fake_cli)[-1]
    assert not any(line.startswith("GeoALPS: resuming") or "tiles resumed" in line for line in fresh.infos)

    os.makedirs(work)  # an interrupted run's
    resumed = RecordingFeedback()
    processing.run("geoalps:autolabel", {**params, "RESUME": True}, feedback=resumed)
    argv = read_calls(fake_cli)[-1]
    assert argv[-3:] == ["--resume", "--overwrite", "--progress-lines"]
    assert any(line.startswith("GeoALPS: resuming the interrupted run") and work in line for line in resumed.infos)
    assert "GeoALPS: 1 of 2 tiles resumed from the interrupted run." in resumed.infos

    os.makedirs(work)
    over = RecordingFeedback()
    processing.run("geoalps:autolabel", {**params, "RESUME": False}, feedback=over)
    assert "--resume" not in read_calls(fake_cli)[-1]
    assert any(line.startswith("GeoALPS: starting over") and work in line for line in over.infos)
    assert not any("tiles resumed" in line for line in over.infos)


def test_a_refused_resume_starts_over_and_says_why(qgis_app, fake_cli, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "resume_refused")  # geoalps's answer to other settings
    params = autolabel_params(tiny_raster, tmp_path)
    os.makedirs(params["OUTPUT"] + ".geoalps-work")
    feedback = RecordingFeedback()

    results = processing.run("geoalps:autolabel", {**params, "RESUME": True}, feedback=feedback)

    calls = read_calls(fake_cli)
    assert [("--resume" in argv) for argv in calls if argv[:1] == ["label"]] == [True, False]
    assert calls[-1] == [a for a in calls[-2] if a != "--resume"]
    assert any("cannot be resumed" in line and "other settings (classes)" in line and "starting over" in line
               for line in feedback.infos), feedback.infos
    assert results["OUTPUT"] == params["OUTPUT"] and os.path.exists(params["OUTPUT"])
    assert not any("tiles resumed" in line for line in feedback.infos)


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
