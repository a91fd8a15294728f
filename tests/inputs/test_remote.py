"""Remote scenes: URLs map to GDAL virtual paths, credentials never show, reads over HTTP (with
Range requests, dropped connections and 5xx answers) give the local file's pixels."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from conftest import ODD_TRANSFORM, random_boxes, scene_with_objects
from geoalps.errors import InputError
from geoalps.inputs.remote import base_name, display_name, gdal_path, redact, same_location_key
from geoalps.inputs.scene import open_scene, read_window
from geoalps.inputs.sources import expand_scene_paths, scene_sources
from http_server import RangeServer

SECRET = "X-Amz-Signature=deadbeef42&X-Amz-Credential=AKIASECRET"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")


@pytest.fixture(scope="module")
def cog(tmp_path_factory):
    """A 4-band uint16 COG, 512 px, 128 px blocks."""
    folder = tmp_path_factory.mktemp("served")
    data = scene_with_objects(512, 512, random_boxes(20, 512, seed=3), seed=3, bands=4, dtype="uint16")
    path = folder / "scene.tif"
    with rasterio.open(path, "w", driver="COG", width=512, height=512, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=ODD_TRANSFORM, nodata=0, blocksize=128) as dst:
        dst.write(data)
    return path, data


def test_urls_become_gdal_virtual_paths():
    assert gdal_path("https://host/a/scene.tif") == "/vsicurl/https://host/a/scene.tif"
    assert gdal_path("s3://bucket/key/scene.tif") == "/vsis3/bucket/key/scene.tif"
    assert gdal_path("gs://bucket/scene.tif") == "/vsigs/bucket/scene.tif"
    assert gdal_path("az://container/scene.tif") == "/vsiaz/container/scene.tif"
    assert gdal_path("/vsizip//data/a.zip/scene.tif") == "/vsizip//data/a.zip/scene.tif"
    assert gdal_path("/data/scene.tif") == "/data/scene.tif"
    # the bug of issue 15: Path() turned https:// into https:/
    assert expand_scene_paths(["https://host/scene.tif", "/vsicurl/https://host/b.tif"]) == [
        "https://host/scene.tif", "/vsicurl/https://host/b.tif"]


def test_redaction_removes_userinfo_and_query_strings():
    text = f"/vsicurl/https://alice:pw123@host.example/a/scene.tif?{SECRET}: HTTP 403 for s3://b/k?token=abc"
    clean = redact(text)
    for secret in ("alice", "pw123", "deadbeef42", "AKIASECRET", "token=abc"):
        assert secret not in clean
    assert "https://***@host.example/a/scene.tif?***" in clean and "s3://b/k?***" in clean
    assert display_name(f"/vsicurl/https://host/scene.tif?{SECRET}") == "https://host/scene.tif?***"
    assert base_name(f"https://host/a/scene.tif?{SECRET}") == "scene.tif"
    assert base_name("/data/x/scene.tif") == "scene.tif"


def test_two_spellings_of_one_scene_are_one_location(tmp_path):
    assert same_location_key("HTTPS://Host.Example:443/a/s.tif?sig=1") == same_location_key("/vsicurl/https://host.example/a/s.tif?sig=2")
    assert same_location_key("http://host:8080/s.tif") != same_location_key("http://host/s.tif")
    (tmp_path / "d").mkdir()
    assert same_location_key(tmp_path / "d" / ".." / "s.tif") == same_location_key(tmp_path / "s.tif")


def test_a_scene_named_twice_is_refused(cog):
    path, _ = cog
    with pytest.raises(InputError, match="given twice"):
        scene_sources([path, path.parent / "." / path.name])
    with pytest.raises(InputError, match=r"https://h/scene.tif: scene given twice \(also given as https://h/scene.tif\?\*\*\*\)"):
        scene_sources([f"https://h/scene.tif?{SECRET}", "/vsicurl/https://h/scene.tif"])


@pytest.mark.parametrize("fail_mode", [None, "close", "503"])
def test_reading_over_http_gives_the_local_pixels(cog, fail_mode):
    path, data = cog
    with RangeServer(path.parent, fail_every=3 if fail_mode else 0, fail_mode=fail_mode or "close") as server:
        scene = open_scene(f"{server.url}/scene.tif?{SECRET}")
        local = open_scene(path)
        assert (scene.width, scene.height, scene.count, scene.transform, scene.nodata) == (
            local.width, local.height, local.count, local.transform, local.nodata)
        assert scene.stats == local.stats
        assert scene.name == "scene.tif" and SECRET not in scene.shown
        window = Window(100, 200, 150, 120)
        assert np.array_equal(read_window(scene, window), data[:, 200:320, 100:250])
        if fail_mode:
            assert server.log.failures_injected > 0  # the errors happened and were retried


@pytest.mark.parametrize("status, words", [(404, "not found"), (403, "access forbidden")])
def test_missing_or_forbidden_urls_are_one_line_errors(cog, status, words):
    path, _ = cog
    with RangeServer(path.parent, status={"scene.tif": status}) as server:
        with pytest.raises(InputError) as err:
            open_scene(f"{server.url}/scene.tif?{SECRET}")
    message = str(err.value)
    assert message.startswith(f"{server.url}/scene.tif?***: ") and words in message
    assert "\n" not in message and "deadbeef42" not in message


def test_a_window_read_fetches_only_its_blocks(cog, monkeypatch):
    path, data = cog
    monkeypatch.setattr("geoalps.inputs.scene.STATS_READ_PX", 128)  # statistics from the COG's overview
    with RangeServer(path.parent) as server:
        scene = open_scene(f"{server.url}/scene.tif")
        block = read_window(scene, Window(256, 256, 128, 128))  # one block of 16
        sent = server.log.sent("scene.tif")
    assert np.array_equal(block, data[:, 256:384, 256:384])
    assert 0 < sent < path.stat().st_size / 4  # header, the 128 px overview and about one block


def test_redaction_covers_every_scheme_and_addresses_without_one():
    text = ("tcp://user:s3cret@sched:8786 and 'bob:hunter2@10.0.0.1:8786' and ftp://a:b@h/x "
            "but not mail@example.org nor 12:30 nor https://host/path:with@colon")
    assert redact(text) == ("tcp://***@sched:8786 and '***@10.0.0.1:8786' and ftp://***@h/x "
                            "but not mail@example.org nor 12:30 nor https://host/path:with@colon")


def test_redacting_twice_changes_nothing():
    """The CLI redacts every error line again: a message already redacted keeps its punctuation."""
    for text in (f"https://host/scene.tif?{SECRET}: not found (HTTP 404)", "see (https://a:b@h/x?q=1).",
                 "tcp://u:p@h:1: cannot connect, https://h/y?z=1; next"):
        once = redact(text)
        assert redact(once) == once
    assert redact(f"https://host/scene.tif?{SECRET}: not found") == "https://host/scene.tif?***: not found"
