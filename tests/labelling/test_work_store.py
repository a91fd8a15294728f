"""The work folder's guard: what an unreadable, older or other-settings work folder says on
``--resume`` (one line, never a traceback), and how recorded remote versions are compared."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from geoalps.errors import ResumeError
from geoalps.labelling.work_store import _FORMAT, WorkStore

URL = "https://host/scene.tif?***"
VERSION = {"etag": '"a1"', "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT", "size_bytes": 100}


def prints(version: dict | None = None, **settings) -> dict:
    scene = {"path": "https://host/scene.tif?***", "grid": [256, 256, 4, "uint16", [1, 0, 0, 0, -1, 0], 0, 0],
             "source_sha1": "ab12"}
    if version is not None:
        scene["versions"] = {URL: version}
    return {"format": _FORMAT, "scenes": [scene], "settings": {"tile_size": 128, "bands": (1, 2, 3), **settings}}


def resume(folder, wanted):
    return WorkStore.open(folder, wanted, resume=True, overwrite=False)


@pytest.mark.parametrize("run_json, words", [
    ("[1, 2]", "by another program or is damaged (no readable run.json)"),
    ("{not json", "by another program or is damaged (no readable run.json)"),
])
def test_an_unreadable_run_json_is_one_line(tmp_path, run_json, words):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "run.json").write_text(run_json)
    with pytest.raises(ResumeError) as error:
        resume(tmp_path / "w", prints())
    assert str(error.value) == (f"{tmp_path / 'w'}: work folder was made {words}; "
                                "run without --resume and with --overwrite to start over")


def test_a_work_folder_of_another_format_says_so(tmp_path):
    WorkStore.open(tmp_path / "w", {**prints(), "format": "geoalps-work/1"}, resume=False, overwrite=False)
    with pytest.raises(ResumeError, match=r"made by another version of geoalps \(work folder format "
                                          rf"'geoalps-work/1', this version writes '{_FORMAT}'\); run without"):
        resume(tmp_path / "w", prints())


def test_other_settings_are_named_and_tuples_equal_their_json_lists(tmp_path):
    WorkStore.open(tmp_path / "w", prints(), resume=False, overwrite=False)
    assert resume(tmp_path / "w", prints()).folder == tmp_path / "w"  # ("bands": (1, 2, 3)) == [1, 2, 3]
    with pytest.raises(ResumeError, match=r"with other settings \(tile_size\)"):
        resume(tmp_path / "w", prints(tile_size=256))


def test_a_changed_version_refuses_and_a_missing_one_warns(tmp_path, capsys):
    WorkStore.open(tmp_path / "w", prints(VERSION), resume=False, overwrite=False)
    resume(tmp_path / "w", prints(VERSION))
    with pytest.raises(ResumeError, match=re.escape(f"made from another version of {URL} (ETag and size changed)")):
        resume(tmp_path / "w", prints({**VERSION, "etag": '"b2"', "size_bytes": 101}))
    assert capsys.readouterr().err == ""
    resume(tmp_path / "w", prints())  # the server gives nothing now
    warning = capsys.readouterr().err
    assert warning.startswith(f"geoalps: warning: {URL}: the server does not state the file's version now")
    stored = json.loads((tmp_path / "w" / "run.json").read_text())
    assert stored["scenes"][0]["versions"] == {URL: VERSION}  # a resume keeps what the run first read


def test_a_work_folder_without_versions_resumes_when_versions_can_be_had_now(tmp_path, capsys):
    """Work folders of a geoalps that recorded no versions (or of a server that sent none)."""
    WorkStore.open(tmp_path / "w", prints(), resume=False, overwrite=False)
    resume(tmp_path / "w", prints(VERSION))
    assert capsys.readouterr().err == ""


# -- tile files are data, never code ------------------------------------------------------------
FAST = dict(engine="classical", classes=4, tile_size_px=128, overlap_px=16, min_area_px=30, quiet=True)


class _Planted:
    """A pickle that, when read, creates a marker file (what a tile planted in a shared work
    folder could do to whoever resumes it)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A whole run that kept its work folder: the reference output and the tile files."""
    from conftest import random_boxes, scene_with_objects, write_raster
    from geoalps import label

    folder = tmp_path_factory.mktemp("run")
    scene = write_raster(folder / "scene.tif", scene_with_objects(256, 256, random_boxes(12, 256, seed=3), seed=3,
                                                                   bands=4, dtype="uint16"), nodata=0)
    out = folder / "whole.gpkg"
    label(scene, out, keep_work=True, **FAST)
    return scene, out, Path(f"{out}.geoalps-work")


def _interrupted(finished_run, tmp_path, drop=3) -> tuple[Path, Path, list[Path]]:
    """A copy of the finished run's work folder with ``drop`` tiles removed, as if killed."""
    scene, out, work = finished_run
    copy_out = tmp_path / "whole.gpkg"
    shutil.copytree(work, f"{copy_out}.geoalps-work")
    tiles = sorted(Path(f"{copy_out}.geoalps-work/tiles").glob("*.npz"))
    assert len(tiles) == 9
    for tile in tiles[:drop]:
        tile.unlink()
    return scene, copy_out, tiles[drop:]


def test_tile_results_round_trip_as_data(finished_run, tmp_path):
    """Every kept tile reads back (allow_pickle=False) into the record it was: geometry, scores,
    flags, features and tile equal."""
    from geoalps.labelling.work_store import WorkStore

    _, _, work = finished_run
    store = WorkStore(work)
    assert len(store.finished()) == 9
    objects = 0
    for key in sorted(store.finished()):
        result = store.load(key)
        again_path = tmp_path / "tiles" / f"{key}.npz"
        again_path.parent.mkdir(exist_ok=True)
        WorkStore(tmp_path).save(key, result)
        again = WorkStore(tmp_path).load(key)
        assert again.tile == result.tile and again.tile.key == key
        assert all(a.equals_exact(b, 0) for a, b in zip(again.geometries, result.geometries))
        for name in ("scores", "area_px", "truncated", "seam_candidate"):
            np.testing.assert_array_equal(getattr(again, name), getattr(result, name))
            assert getattr(again, name).dtype == getattr(result, name).dtype
        assert again.features.keys() == result.features.keys()
        for block in result.features:
            np.testing.assert_array_equal(again.features[block], result.features[block])
        assert (again.skipped, again.disjoint, again.seconds) == (result.skipped, result.disjoint, result.seconds)
        objects += len(result)
    assert objects > 5
    with zipfile.ZipFile(work / "tiles" / f"{key}.npz") as z:  # arrays only, no pickled object array
        for name in z.namelist():
            with z.open(name) as f:
                assert np.lib.format.read_array(f, allow_pickle=False) is not None


def test_resume_of_data_tiles_equals_the_uninterrupted_run(finished_run, tmp_path):
    import pyogrio

    from geoalps import label

    scene, out, kept = _interrupted(finished_run, tmp_path)
    result = label(scene, out, resume=True, **FAST)
    assert result.stats["tiles_resumed"] == len(kept) == 6
    reference = pyogrio.read_dataframe(finished_run[1], layer="masks")
    resumed = pyogrio.read_dataframe(out, layer="masks")
    assert len(resumed) == len(reference) > 5
    assert list(resumed.columns) == list(reference.columns)
    for column in reference.columns:
        if column == "geometry":
            assert all(a.equals_exact(b, 0) for a, b in zip(resumed.geometry, reference.geometry))
        else:
            assert resumed[column].tolist() == reference[column].tolist(), column


def test_a_planted_tile_runs_nothing_and_is_one_line(finished_run, tmp_path):
    """A tile file holding a pickle (an object array in the .npz, or an old-style .pkl) is never
    unpickled: the .npz is refused as damaged in one line, the .pkl is not a tile file at all."""
    scene, out, kept = _interrupted(finished_run, tmp_path)
    marker = tmp_path / "ran"
    planted = kept[0]
    payload = np.empty(1, dtype=object)
    payload[0] = _Planted(marker)
    with np.load(planted, allow_pickle=False) as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    np.savez(planted, **{**fields, "scores": payload})
    (planted.parent / "s0_r0_c0.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    (planted.parent / "s0_r0_c1.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    result = subprocess.run([sys.executable, "-m", "geoalps", "label", str(scene), "-o", str(out), "--resume",
                             "--engine", "classical", "--classes", "4", "--tile-size", "128", "--overlap", "16",
                             "--min-area-px", "30", "-q"], capture_output=True, text=True, timeout=600)
    assert not marker.exists()
    assert result.returncode == ResumeError.exit_code
    assert result.stderr.strip().splitlines() == [
        f"geoalps: error: {planted}: damaged tile result in the work folder; delete it and --resume"]
    assert not out.exists()
    pickle.loads((planted.parent / "s0_r0_c0.pkl").read_bytes())  # the planted files are real
    assert marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "other tile", "lengths"])
def test_a_damaged_tile_file_is_refused_in_one_line(finished_run, tmp_path, damage):
    from geoalps.labelling.work_store import WorkStore

    _, _, work = finished_run
    store = WorkStore(tmp_path)
    (tmp_path / "tiles").mkdir()
    key = max(sorted(WorkStore(work).finished()), key=lambda k: len(WorkStore(work).load(k)))
    good = WorkStore(work).load(key)
    assert len(good)
    path = tmp_path / "tiles" / f"{key}.npz"
    if damage == "truncated":
        path.write_bytes((work / "tiles" / f"{key}.npz").read_bytes()[:-100])
    elif damage == "not a zip":
        path.write_bytes(b"hello")
    elif damage == "other tile":
        store.save(key, good)
        path.rename(tmp_path / "tiles" / "s0_r9_c9.npz")
        key, path = "s0_r9_c9", tmp_path / "tiles" / "s0_r9_c9.npz"
    else:
        arrays = good.to_arrays()
        np.savez(path, **{**arrays, "wkb_lengths": arrays["wkb_lengths"] + 1})
    with pytest.raises(ResumeError) as refused:
        store.load(key)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_a_split_run_keeps_its_fit_regions_as_data(tmp_path):
    """With --classical-split the tiles hold the uncut regions k-means learns from: the same
    pixels as the objects, fewer rows, the same pixel-weighted mean colour (band means pool
    linearly), and they read back from the work store unchanged."""
    from affine import Affine

    from conftest import write_raster
    from geoalps import label
    from geoalps.labelling.work_store import WorkStore

    rng = np.random.default_rng(1)
    size, ramp = 192, 24  # two covers of the same brightness blended over a soft ramp (test_classical)
    t = np.clip((np.arange(size) - (size - ramp) / 2) / ramp, 0, 1)[None, :, None]
    image = (1 - t) * np.array([50, 95, 45.0]) + t * np.array([68, 60, 66.0]) + rng.normal(0, 3, (size, size, 3))
    scene = write_raster(tmp_path / "covers.tif", np.clip(image, 1, 255).astype(np.uint8).transpose(2, 0, 1),
                         transform=Affine(0.5, 0, 500000, 0, -0.5, 4100000), nodata=0)
    out = tmp_path / "o.gpkg"
    label(scene, out, keep_work=True, engine="classical", classes=2, tile_size_px=256, classical_split=True, quiet=True)
    store = WorkStore(Path(f"{out}.geoalps-work"))
    (key,) = store.finished()
    result = store.load(key)
    assert result.fit_features.keys() == result.features.keys()
    assert 0 < len(result.fit_area_px) < len(result), "the split cut a region: fewer fit regions than objects"
    assert result.fit_area_px.sum() == result.area_px.sum()
    for block in ("spectral",):
        pooled = (result.fit_features[block] * result.fit_area_px[:, None]).sum(0)
        objects = (result.features[block] * result.area_px[:, None]).sum(0)
        np.testing.assert_allclose(pooled, objects, rtol=1e-5)
    (tmp_path / "again" / "tiles").mkdir(parents=True)
    WorkStore(tmp_path / "again").save(key, result)
    again = WorkStore(tmp_path / "again").load(key)
    np.testing.assert_array_equal(again.fit_area_px, result.fit_area_px)
    for block, values in result.fit_features.items():
        np.testing.assert_array_equal(again.fit_features[block], values)
