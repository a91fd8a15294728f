"""Versions of remote files (ETag, Last-Modified, size) as the resume check records them: one HEAD
with the headers the user gave GDAL, a one-byte GET where HEAD is refused, nothing (and no error)
where nothing can be had."""
from __future__ import annotations

import base64
from email.utils import formatdate

import numpy as np
import pytest
import rasterio

from geoalps.inputs.http import _split_headers
from geoalps.inputs.remote_version import http_urls, remote_version, version_changes
from http_server import RangeServer

SECRET = "X-Amz-Signature=deadbeef42&X-Amz-Credential=AKIASECRET"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    for name in ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_USERPWD", "GDAL_HTTP_AUTH",
                 "GDAL_HTTP_BEARER", "GDAL_HTTP_COOKIE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def served(tmp_path):
    (tmp_path / "a.bin").write_bytes(np.random.default_rng(1).bytes(5000))
    return tmp_path


def expected(path) -> dict:
    """What the test server states for ``path``."""
    stat = path.stat()
    return {"etag": f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"',
            "last_modified": formatdate(stat.st_mtime, usegmt=True), "size_bytes": stat.st_size}


def test_one_head_request_gives_etag_last_modified_and_size(served):
    with RangeServer(served) as server:
        version = remote_version(f"{server.url}/a.bin")
    assert version == expected(served / "a.bin")
    assert (server.log.requests, server.log.heads, server.log.ranges) == (1, 1, [])


@pytest.mark.parametrize("refusal", [403, 405])
def test_a_refused_head_falls_back_to_a_one_byte_get(served, refusal):
    with RangeServer(served, head_status=refusal) as server:
        version = remote_version(f"{server.url}/a.bin")
    assert version == expected(served / "a.bin")  # the size is the Content-Range total, not 1
    assert server.log.ranges == ["bytes=0-0"] and server.log.sent("a.bin") == 1


def test_a_server_ignoring_range_gives_the_size_from_content_length(served):
    with RangeServer(served, head_status=405, honour_range=False) as server:
        assert remote_version(f"{server.url}/a.bin") == expected(served / "a.bin")


def test_a_signed_url_is_asked_with_its_signature(served):
    with RangeServer(served, tokens={"a.bin": SECRET}) as server:
        assert remote_version(f"{server.url}/a.bin?{SECRET}") == expected(served / "a.bin")
        assert remote_version(f"{server.url}/a.bin") is None  # 403 without it


def test_nothing_to_be_had_is_none_or_the_size_only_never_an_error(served, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    with RangeServer(served, validators=False) as server:
        assert remote_version(f"{server.url}/a.bin") == {"size_bytes": 5000}
        assert remote_version(f"{server.url}/missing.bin") is None
    with RangeServer(served, fail_every=1, fail_mode="503", head_status=405) as server:
        assert remote_version(f"{server.url}/a.bin") is None
        assert server.log.failures_injected == 2  # retried once, as GDAL_HTTP_MAX_RETRY says
    assert remote_version(f"{server.url}/a.bin") is None  # server gone: connection refused


BASIC = "Basic " + base64.b64encode(b"alice:pw123").decode()


@pytest.mark.parametrize("settings, header, value", [
    ({"GDAL_HTTP_HEADERS": 'X-Token: abc, X-Other: "1, 2"'}, "X-Token", "abc"),
    ({"GDAL_HTTP_HEADERS": 'X-Token: abc, X-Other: "1, 2"'}, "X-Other", "1, 2"),
    ({"GDAL_HTTP_HEADERS": "X-Token: abc\r\nX-Other: 1, 2"}, "X-Other", "1, 2"),
    ({"GDAL_HTTP_USERPWD": "alice:pw123"}, "Authorization", BASIC),
    ({"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": "tok"}, "Authorization", "Bearer tok"),
    ({"GDAL_HTTP_COOKIE": "session=s1"}, "Cookie", "session=s1"),
    ({"GDAL_HTTP_USERAGENT": "survey-bot/2"}, "User-Agent", "survey-bot/2"),
])
def test_the_headers_given_to_gdal_are_sent(served, monkeypatch, settings, header, value):
    with RangeServer(served, required_headers={header: value}) as server:
        assert remote_version(f"{server.url}/a.bin") is None  # refused without the setting
        for name, setting in settings.items():
            monkeypatch.setenv(name, setting)
        assert remote_version(f"{server.url}/a.bin") == expected(served / "a.bin")


def test_a_header_file_and_a_rasterio_env_count_too(served, tmp_path):
    (tmp_path / "headers.txt").write_text("X-Token: from-file\n")
    with RangeServer(served, required_headers={"X-Token": "from-file", "X-Api-Key": "k9"}) as server:
        with rasterio.Env(GDAL_HTTP_HEADER_FILE=str(tmp_path / "headers.txt"), GDAL_HTTP_HEADERS="X-Api-Key: k9"):
            assert remote_version(f"{server.url}/a.bin") == expected(served / "a.bin")
        assert remote_version(f"{server.url}/a.bin") is None  # outside the Env


def test_authorization_is_not_carried_to_another_host_on_a_redirect(served, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_AUTH", "BEARER")
    monkeypatch.setenv("GDAL_HTTP_BEARER", "tok")
    with RangeServer(served) as target, RangeServer(served, redirects={"a.bin": f"{target.url}/a.bin"}) as origin:
        assert remote_version(f"{origin.url}/a.bin") == expected(served / "a.bin")
    assert origin.log.headers[0]["Authorization"] == "Bearer tok"
    assert target.log.requests == 1 and "Authorization" not in target.log.headers[0]


def test_gdal_http_headers_are_split_as_gdal_splits_them():
    assert _split_headers("Accept: text/plain, application/json") == ["Accept: text/plain, application/json"]
    assert _split_headers('A: 1, B: "x, \\"y\\""') == ["A: 1", 'B: x, "y"']
    assert _split_headers("A: 1, 2\r\nB: 3") == ["A: 1, 2", "B: 3"]
    assert _split_headers("") == []


def test_the_http_files_of_a_scene():
    assert http_urls(f"https://h/a.tif?{SECRET}") == [f"https://h/a.tif?{SECRET}"]
    assert http_urls("/vsicurl/http://h/a.tif") == ["http://h/a.tif"]
    assert http_urls("s3://bucket/a.tif") == [] and http_urls("/vsis3/bucket/a.tif") == []
    assert http_urls("/data/a.tif") == []
    vrt = ('<VRTDataset><VRTRasterBand><ComplexSource><SourceFilename>/vsicurl/https://h/B04.tif?s=1&amp;t=2'
           '</SourceFilename></ComplexSource><ComplexSource><SourceFilename>/data/B03.tif</SourceFilename>'
           '</ComplexSource></VRTRasterBand><VRTRasterBand><ComplexSource><SourceFilename>/vsicurl/https://h/B04.tif'
           '?s=1&amp;t=2</SourceFilename></ComplexSource></VRTRasterBand></VRTDataset>')
    assert http_urls(vrt) == ["https://h/B04.tif?s=1&t=2"]


V1 = {"etag": '"a1"', "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT", "size_bytes": 100}


@pytest.mark.parametrize("new, changes", [
    (V1, []),
    ({**V1, "etag": '"b2"'}, ["ETag"]),
    ({**V1, "etag": '"b2"', "size_bytes": 101}, ["ETag", "size"]),
    ({**V1, "last_modified": "Tue, 02 Jan 2024 00:00:00 GMT"}, []),  # same ETag: same content (S3 re-upload)
    ({"last_modified": "Tue, 02 Jan 2024 00:00:00 GMT", "size_bytes": 100}, ["Last-Modified"]),
    ({"last_modified": V1["last_modified"], "size_bytes": 100}, []),
    ({"size_bytes": 101}, ["size"]),
    ({"size_bytes": 100}, None),  # ETag recorded, none now: cannot be told
    ({}, None),
])
def test_what_changed_between_two_versions(new, changes):
    assert version_changes(V1, new) == changes


def test_a_file_known_by_its_size_only_is_compared_by_size():
    assert version_changes({"size_bytes": 100}, {"size_bytes": 100}) == []
    assert version_changes({"size_bytes": 100}, {"size_bytes": 99}) == ["size"]
    assert version_changes({"size_bytes": 100}, {}) is None
