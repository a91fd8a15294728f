"""geoalps.files: outputs appear whole or not at all, and leftovers never look like outputs."""
from __future__ import annotations

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
