"""The work folder's guard: what an unreadable, older or other-settings work folder says on
``--resume`` (one line, never a traceback), and how recorded remote versions are compared."""
from __future__ import annotations

import json
import re

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
