"""SAM 2.1 downloads against a local HTTP server on 127.0.0.1 serving a real (tiny) SAM 2 file:
verified by its tensors (Meta publishes no SAM 2 checksums), resumed, renamed only when whole."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from geoalps.engines.sam2.checkpoints import (OFFICIAL_CHECKPOINTS, download_sam2_checkpoint,
                                              find_cached_checkpoint, verify_release)
from geoalps.engines.sam2.models import SAM2_CONFIGS, build_sam2, meta_device
from geoalps.errors import DownloadError, GeoAlpsError
from http_server import RangeServer

NAME = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def release_like(tmp_path_factory):
    """A stand-in for the release: sam2.1_hiera_tiny's exact tensor names and shapes, all zeros
    (about 156 MB, written once per module)."""
    import torch

    with meta_device():
        shapes = {k: v.shape for k, v in build_sam2(SAM2_CONFIGS[f"{NAME}"]).state_dict().items()}
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("release") / f"{NAME}.pt"
    torch.save({"model": state}, path)
    return path


@pytest.fixture
def served(release_like, tmp_path_factory):
    """The served file, ``<NAME>.pt``: a link to the release stand-in (a test may replace it)."""
    path = tmp_path_factory.mktemp("served") / f"{NAME}.pt"
    path.symlink_to(release_like)
    return path


@pytest.fixture
def server(served):
    """Serves ``served``; ``cut_after`` drops the connection once; GETs' Ranges in ``log.ranges``."""
    with RangeServer(served.parent) as s:
        yield s


@pytest.fixture
def url(server, served):
    return f"{server.url}/{served.name}"


def serve(served, payload: bytes) -> None:
    """Serve ``payload`` instead (unlinked first: writing through the link would change the release)."""
    served.unlink()
    served.write_bytes(payload)


def test_download_is_verified_by_its_tensors_and_renamed(server, url, release_like, tmp_path):
    path = download_sam2_checkpoint(NAME, tmp_path, url=url, progress=False, timeout_s=5)
    assert path == tmp_path / f"{NAME}.pt" and path.read_bytes() == release_like.read_bytes()
    assert not list(tmp_path.glob("*.part"))
    assert find_cached_checkpoint("hiera_tiny", tmp_path) == path == find_cached_checkpoint("auto", tmp_path)
    assert find_cached_checkpoint("hiera_large", tmp_path) is None
    server.log.ranges.clear()
    assert download_sam2_checkpoint(NAME, tmp_path, url=url, progress=False) == path
    assert server.log.ranges == []  # a verified file in place is not fetched again


def test_interrupted_download_resumes_with_range(server, url, release_like, tmp_path):
    payload = release_like.read_bytes()
    server.cut_after = len(payload) // 3
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_sam2_checkpoint(NAME, tmp_path, url=url, progress=False, timeout_s=5)
    part = tmp_path / f"{NAME}.pt.part"
    assert part.stat().st_size == len(payload) // 3 and not (tmp_path / f"{NAME}.pt").exists()
    path = download_sam2_checkpoint(NAME, tmp_path, url=url, progress=False, timeout_s=5)
    assert server.log.ranges[-1] == f"bytes={len(payload) // 3}-"
    assert server.log.sent(f"{NAME}.pt") == len(payload)  # the second GET sent only the rest
    assert path.read_bytes() == payload and not part.exists()


def test_a_file_that_is_not_the_release_is_discarded(served, url, tmp_path, tiny_sam2_checkpoint):
    serve(served, tiny_sam2_checkpoint.read_bytes())  # SAM 2, but not hiera_tiny
    with pytest.raises(DownloadError, match=r"holds custom\(sam2.1.*not sam2.1_hiera_tiny; the download was discarded"):
        download_sam2_checkpoint(NAME, tmp_path, url=url, progress=False, timeout_s=5)
    serve(served, b"<html>not found</html>")
    with pytest.raises(DownloadError, match="not a SAM 2 checkpoint"):
        download_sam2_checkpoint(NAME, tmp_path, url=url, progress=False, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_release_names_and_cli(url, tmp_path, monkeypatch):
    assert list(OFFICIAL_CHECKPOINTS) == [f"sam2.1_{s}" for s in ("hiera_tiny", "hiera_small", "hiera_base_plus", "hiera_large")]
    assert all(c.url.startswith("https://dl.fbaipublicfiles.com/segment_anything_2/092824/") for c in OFFICIAL_CHECKPOINTS.values())
    with pytest.raises(GeoAlpsError, match="not an official SAM 2.1 checkpoint"):
        download_sam2_checkpoint("sam2.1_hiera_huge", tmp_path)
    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path))
    from geoalps.cli import main

    runner = CliRunner()
    done = runner.invoke(main, ["models", "download", NAME, "--url", url, "--quiet"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == str(tmp_path / "sam2" / f"{NAME}.pt")
    listed = runner.invoke(main, ["models", "list"]).output
    assert f"{NAME}  " in listed and str(tmp_path / "sam2" / f"{NAME}.pt") in listed
    verify_release(tmp_path / "sam2" / f"{NAME}.pt", NAME, url)
