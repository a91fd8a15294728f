"""``geoalps models list``: SAM and SAM 2.1 checkpoints, in the cache folders or in one --dir."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

pytest.importorskip("segment_anything", reason="pip install 'geoalps[sam]' (see README)")
pytest.importorskip("sam2", reason="pip install 'geoalps[sam2]' (see README)")

from geoalps.cli import main  # noqa: E402
from geoalps.engines.sam import checkpoints as sam_checkpoints  # noqa: E402
from tests.sam_models import build_tiny_sam, build_tiny_sam2, save_sam2_checkpoint, save_sam_checkpoint  # noqa: E402
from geoalps.engines.sam2 import checkpoints as sam2_checkpoints  # noqa: E402

SAM2_NAME = "sam2.1_hiera_tiny"
SAM_FILE = sam_checkpoints.OFFICIAL_CHECKPOINTS["vit_b"].filename


def list_lines(*args) -> list[str]:
    result = CliRunner().invoke(main, ["models", "list", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def listed(path) -> str:
    return f"{path.stat().st_size / 1e6:.0f} MB  {path}"


def test_dir_lists_sam2_checkpoints_too(tmp_path, monkeypatch):
    weights, cache = tmp_path / "weights", tmp_path / "cache"
    weights.mkdir()
    monkeypatch.setenv("GEOALPS_CACHE", str(cache))
    (cache / "sam2").mkdir(parents=True)  # a SAM 2.1 file in the cache: --dir looks only in its folder
    save_sam2_checkpoint(build_tiny_sam2(seed=1), cache / "sam2" / "sam2.1_hiera_large.pt")
    sam2_file = save_sam2_checkpoint(build_tiny_sam2(seed=0), weights / f"{SAM2_NAME}.pt")

    lines = list_lines("--dir", weights)
    assert f"{SAM2_NAME}  {listed(sam2_file)}" in lines
    assert lines[lines.index(f"sam2 folder: {weights}") + 1] == f"{SAM2_NAME}  {listed(sam2_file)}"
    assert f"sam2 auto: {sam2_file}  (the largest SAM 2.1 model here; give it to label as --checkpoint)" in lines
    assert (f"sam2.1_hiera_large  -  not downloaded (geoalps models download sam2.1_hiera_large --dir {weights})"
            in lines)
    assert not [line for line in lines if str(cache) in line]
    assert "sam auto: none  (the largest SAM model here; give it to label as --checkpoint)" in lines

    sam_file = save_sam_checkpoint(build_tiny_sam(seed=0), weights / SAM_FILE)
    lines = list_lines("--dir", weights)
    assert f"vit_b  {listed(sam_file)}" in lines and f"sam auto: {sam_file}  (" in "\n".join(lines)
    assert f"sam2 auto: {sam2_file}  (" in "\n".join(lines)  # still listed next to the SAM one


def test_empty_dir_shows_both_families_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path / "cache"))
    lines = list_lines("--dir", tmp_path)
    names = [*sam_checkpoints.OFFICIAL_CHECKPOINTS, *sam2_checkpoints.OFFICIAL_CHECKPOINTS]
    assert len(names) == 7
    for name in names:
        assert f"{name}  -  not downloaded (geoalps models download {name} --dir {tmp_path})" in lines
    autos = [line for line in lines if " auto: " in line]
    assert [a.split("  (")[0] for a in autos] == ["sam auto: none", "sam2 auto: none"]
    assert lines[0] == f"sam folder: {tmp_path}" and f"sam2 folder: {tmp_path}" in lines


def test_without_dir_both_cache_folders_and_what_each_engine_takes(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path))
    (tmp_path / "sam2").mkdir()
    sam2_file = save_sam2_checkpoint(build_tiny_sam2(seed=0), tmp_path / "sam2" / f"{SAM2_NAME}.pt")
    lines = list_lines()
    assert lines[0] == f"sam cache: {tmp_path / 'sam'}" and f"sam2 cache: {tmp_path / 'sam2'}" in lines
    assert f"{SAM2_NAME}  {listed(sam2_file)}" in lines
    assert "sam auto: none  (what --engine sam and --engine auto take without --checkpoint)" in lines
    assert (f"sam2 auto: {sam2_file}  (what --engine sam2 takes without --checkpoint, and --engine auto when no "
            "SAM file is cached)") in lines
