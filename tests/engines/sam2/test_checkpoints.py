"""SAM 2.1 downloads against a local HTTP server on 127.0.0.1 serving a real (tiny) SAM 2 file:
verified by its tensors (Meta publishes no SAM 2 checksums), resumed, renamed only when whole."""
from __future__ import annotations

import http.server
import re
import threading

import pytest
from click.testing import CliRunner

from geoalps.engines.sam2.checkpoints import (OFFICIAL_CHECKPOINTS, download_sam2_checkpoint,
                                              find_cached_checkpoint, verify_release)
from geoalps.engines.sam2.models import SAM2_CONFIGS, build_sam2, meta_device
from geoalps.errors import DownloadError, GeoAlpsError

NAME = "sam2.1_hiera_tiny"


class Server:
    """Serves ``payload`` with Range support; ``cut_after`` drops the connection once after N bytes."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.ranges.append(self.headers.get("Range"))
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                start = int(match.group(1)) if match else 0
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{NAME}.pt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


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
    return path.read_bytes()


@pytest.fixture
def server(release_like):
    s = Server(release_like)
    yield s
    s.close()


def test_download_is_verified_by_its_tensors_and_renamed(server, tmp_path):
    path = download_sam2_checkpoint(NAME, tmp_path, url=server.url, progress=False, timeout_s=5)
    assert path == tmp_path / f"{NAME}.pt" and path.read_bytes() == server.payload
    assert not list(tmp_path.glob("*.part"))
    assert find_cached_checkpoint("hiera_tiny", tmp_path) == path == find_cached_checkpoint("auto", tmp_path)
    assert find_cached_checkpoint("hiera_large", tmp_path) is None
    server.ranges.clear()
    assert download_sam2_checkpoint(NAME, tmp_path, url=server.url, progress=False) == path
    assert server.ranges == []  # a verified file in place is not fetched again


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.cut_after = len(server.payload) // 3
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_sam2_checkpoint(NAME, tmp_path, url=server.url, progress=False, timeout_s=5)
    part = tmp_path / f"{NAME}.pt.part"
    assert part.stat().st_size == len(server.payload) // 3 and not (tmp_path / f"{NAME}.pt").exists()
    path = download_sam2_checkpoint(NAME, tmp_path, url=server.url, progress=False, timeout_s=5)
    assert server.ranges[-1] == f"bytes={len(server.payload) // 3}-"
    assert path.read_bytes() == server.payload and not part.exists()


def test_a_file_that_is_not_the_release_is_discarded(server, tmp_path, tiny_sam2_checkpoint):
    server.payload = tiny_sam2_checkpoint.read_bytes()  # SAM 2, but not hiera_tiny
    with pytest.raises(DownloadError, match=r"holds custom\(sam2.1.*not sam2.1_hiera_tiny; the download was discarded"):
        download_sam2_checkpoint(NAME, tmp_path, url=server.url, progress=False, timeout_s=5)
    server.payload = b"<html>not found</html>"
    with pytest.raises(DownloadError, match="not a SAM 2 checkpoint"):
        download_sam2_checkpoint(NAME, tmp_path, url=server.url, progress=False, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_release_names_and_cli(server, tmp_path, monkeypatch):
    assert list(OFFICIAL_CHECKPOINTS) == [f"sam2.1_{s}" for s in ("hiera_tiny", "hiera_small", "hiera_base_plus", "hiera_large")]
    assert all(c.url.startswith("https://dl.fbaipublicfiles.com/segment_anything_2/092824/") for c in OFFICIAL_CHECKPOINTS.values())
    with pytest.raises(GeoAlpsError, match="not an official SAM 2.1 checkpoint"):
        download_sam2_checkpoint("sam2.1_hiera_huge", tmp_path)
    monkeypatch.setenv("GEOALPS_CACHE", str(tmp_path))
    from geoalps.cli import main

    runner = CliRunner()
    done = runner.invoke(main, ["models", "download", NAME, "--url", server.url, "--quiet"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == str(tmp_path / "sam2" / f"{NAME}.pt")
    listed = runner.invoke(main, ["models", "list"]).output
    assert f"{NAME}  " in listed and str(tmp_path / "sam2" / f"{NAME}.pt") in listed
    verify_release(tmp_path / "sam2" / f"{NAME}.pt", NAME, server.url)
