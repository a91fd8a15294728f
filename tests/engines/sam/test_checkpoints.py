"""geoalps.engines.sam.checkpoints against a local HTTP server on 127.0.0.1 (no test touches the internet)."""
from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from geoalps.errors import DownloadError, GeoAlpsError
from geoalps.engines.sam import checkpoints as dl
from geoalps.engines.sam.checkpoints import download_checkpoint, find_cached_checkpoint
from http_server import RangeServer

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # about 1 MB, several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = "sam_vit_b_01ec64.pth"


@pytest.fixture
def server(tmp_path_factory):
    """Serves PAYLOAD as NAME; knobs ``cut_after``, ``honour_range``; GETs' Ranges in ``log.ranges``."""
    root = tmp_path_factory.mktemp("served")
    (root / NAME).write_bytes(PAYLOAD)
    with RangeServer(root) as s:
        yield s


@pytest.fixture
def url(server):
    return f"{server.url}/{NAME}"


def fetch(url, folder, **kw):
    return download_checkpoint(
        "vit_b", folder, url=url, sha256=PAYLOAD_SHA, progress=False, timeout_s=5, **kw
    )


def test_downloads_verifies_and_renames(server, url, tmp_path):
    path = fetch(url, tmp_path)
    assert path == tmp_path / NAME
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / (NAME + ".part")).exists()
    # Already there and verified: no second request.
    assert fetch(url, tmp_path) == path
    assert len(server.log.ranges) == 1


def test_interrupted_download_resumes_with_range(server, url, tmp_path):
    server.cut_after = 300_000
    with pytest.raises(GeoAlpsError, match="interrupted at 300000 .*run the command again"):
        fetch(url, tmp_path)
    part = tmp_path / (NAME + ".part")
    assert part.stat().st_size == 300_000
    assert not (tmp_path / NAME).exists()

    path = fetch(url, tmp_path)

    assert server.log.ranges == [None, "bytes=300000-"]
    assert server.log.sent(NAME) == len(PAYLOAD)  # the second GET sent only the rest
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, url, tmp_path):
    (tmp_path / (NAME + ".part")).write_bytes(b"junk" * 1000)
    server.honour_range = False
    path = fetch(url, tmp_path)
    assert path.read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_without_refetching_it(server, url, tmp_path):
    (tmp_path / (NAME + ".part")).write_bytes(PAYLOAD)
    path = fetch(url, tmp_path)  # the server answers 416: nothing left to send
    assert path.read_bytes() == PAYLOAD
    assert server.log.ranges == [f"bytes={len(PAYLOAD)}-"] and server.log.sent(NAME) == 0


def test_checksum_mismatch_fails_and_leaves_nothing(url, tmp_path):
    with pytest.raises(GeoAlpsError, match="checksum mismatch"):
        download_checkpoint("vit_b", tmp_path, url=url, sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_damaged_cached_file_is_replaced(url, tmp_path):
    (tmp_path / NAME).write_bytes(b"damaged")
    assert fetch(url, tmp_path).read_bytes() == PAYLOAD


def test_unreachable_server_is_a_one_line_error(tmp_path):
    with pytest.raises(GeoAlpsError, match="cannot connect"):
        download_checkpoint(
            "vit_b", tmp_path, url="http://127.0.0.1:9/none.pth", progress=False, timeout_s=2
        )


def test_find_cached_checkpoint_uses_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path))
    folder = tmp_path / "sam"
    assert dl.cache_dir() == folder
    assert find_cached_checkpoint() is None
    folder.mkdir()
    (folder / "sam_vit_l_0b3195.pth.part").write_bytes(b"partial")
    assert find_cached_checkpoint() is None  # downloads in progress do not count
    (folder / NAME).write_bytes(b"x")
    (folder / "sam_vit_l_0b3195.pth").write_bytes(b"x")
    assert find_cached_checkpoint() == folder / "sam_vit_l_0b3195.pth"  # best first
    assert find_cached_checkpoint("vit_b") == folder / NAME
    assert find_cached_checkpoint("vit_h") is None


def test_cli_download_and_list(url, tmp_path, monkeypatch):
    from geoalps.cli import main

    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path))
    monkeypatch.setitem(
        dl.OFFICIAL_CHECKPOINTS, "vit_b", dl.OfficialCheckpoint(NAME, url, PAYLOAD_SHA)
    )
    runner = CliRunner()
    result = runner.invoke(main, ["models", "download", "vit_b", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "sam" / NAME)

    result = runner.invoke(main, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert f"vit_b  1 MB  {tmp_path / 'sam' / NAME}" in result.output
    assert "vit_h  -  not downloaded" in result.output

    monkeypatch.setitem(
        dl.OFFICIAL_CHECKPOINTS, "vit_l", dl.OfficialCheckpoint("l.pth", url, "0" * 64)
    )
    result = runner.invoke(main, ["models", "download", "vit_l", "--quiet"])
    assert result.exit_code == DownloadError.exit_code
    assert "checksum mismatch" in result.output
    assert not (tmp_path / "sam" / "l.pth").exists()
