"""geoalps.files: outputs appear whole or not at all, and leftovers never look like outputs."""
from __future__ import annotations

import os

import pytest

from geoalps.errors import OutputError
from geoalps.files import atomic_path, check_writable, write_bytes_atomic


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.gpkg"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".gpkg" and tmp.parent == tmp_path and not tmp.exists()
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]


def test_existing_outputs_need_overwrite(tmp_path):
    target = tmp_path / "out.tif"
    target.write_text("old")
    with pytest.raises(OutputError, match="--overwrite"):
        check_writable(target, overwrite=False)
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(tmp_path / "missing" / "x.tif", overwrite=True)


def test_byte_writes_use_temporary_names_no_glob_mistakes_for_outputs(tmp_path, monkeypatch):
    seen = []
    real_open = open

    def spy(path, *args, **kwargs):
        seen.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    write_bytes_atomic(tmp_path / "s0_r0_c0.pkl", b"tile")
    assert (tmp_path / "s0_r0_c0.pkl").read_bytes() == b"tile"
    assert seen and seen[0].endswith(".tmp") and not seen[0].endswith(".pkl")


def test_stale_temporaries_of_one_output_only_are_removed(tmp_path):
    from geoalps.files import remove_stale_temporaries

    ours = [".out.k2j_8x0a.tmp.gpkg", ".out.k2j_8x0a.tmp.gpkg-journal", ".out.ab12cd34.tmp.qml",
            ".out.gpkg.zz99yy88.tmp", ".out.qml.zz99yy88.tmp"]
    others = ["out.gpkg", ".out.gpkg.geoalps-lock", ".outer.k2j_8x0a.tmp.gpkg", ".out.short.tmp.gpkg",
              "out.tmp.gpkg", ".other.k2j_8x0a.tmp.gpkg", "notes.tmp", ".out.k2j_8x0a.tmp.tif"]
    for name in ours + others:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path / "out.gpkg")
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_an_output_may_not_be_an_input_or_another_output(tmp_path):
    from geoalps.files import check_distinct

    scene = tmp_path / "scene.tif"
    scene.write_text("pixels")
    hard = tmp_path / "hard.tif"
    os.link(scene, hard)
    (tmp_path / "sub").mkdir()
    for spelling in (scene, hard, tmp_path / "sub" / ".." / "scene.tif"):
        with pytest.raises(OutputError, match="is one of the inputs"):
            check_distinct([scene], [(str(spelling), [spelling])])
    with pytest.raises(OutputError, match="would overwrite another output"):
        check_distinct([scene], [("a.shp", [tmp_path / "a.shp", tmp_path / "a.qml"]),
                                 ("a.tif", [tmp_path / "a.tif", tmp_path / "a.qml"])])
    check_distinct([scene, "https://example.com/scene.tif", None], [("b.tif", [tmp_path / "b.tif"])])
