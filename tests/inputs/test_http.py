"""The HTTP requests geoalps makes itself (STAC JSON, an --aoi URL): sent with the headers the user
gave GDAL, retried as GDAL retries, and refused with one line naming the (redacted) URL."""
from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from conftest import random_boxes, scene_with_objects, write_raster
from geoalps.errors import InputError
from geoalps.inputs.aoi import load_aoi
from geoalps.inputs.http import fetch_bytes
from geoalps.inputs.scene import open_scene, read_window
from geoalps.inputs.stac import stac_scenes
from http_server import RangeServer
from stac_items import write_item

SECRET = "X-Amz-Signature=deadbeef42&X-Amz-Credential=AKIASECRET"
TOKEN = {"X-Token": "abc123"}
#: A 300 m x 200 m field with a 50 m x 50 m hole, in UTM 33N.
FIELD = shapely.Polygon([(500000, 4199000), (500300, 4199000), (500300, 4199200), (500000, 4199200)],
                        holes=[[(500100, 4199050), (500150, 4199050), (500150, 4199100), (500100, 4199100)]])


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    for name in ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_USERPWD", "GDAL_HTTP_AUTH",
                 "GDAL_HTTP_BEARER", "GDAL_HTTP_COOKIE", "GDAL_HTTP_MAX_RETRY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    data = scene_with_objects(128, 128, random_boxes(6, 128, seed=3), seed=3, bands=4, dtype="uint16")
    return write_item(tmp_path_factory.mktemp("stac"), data)


@pytest.fixture
def aoi_files(tmp_path):
    frame = gpd.GeoDataFrame(geometry=[FIELD], crs="EPSG:32633")
    frame.to_file(tmp_path / "field.geojson", driver="GeoJSON")
    frame.to_file(tmp_path / "field.gpkg", driver="GPKG")
    return tmp_path


def assert_is_the_field(aoi):
    assert aoi.geometry.normalize().equals_exact(FIELD.normalize(), 1e-6)
    assert aoi.geometry.area == pytest.approx(300 * 200 - 50 * 50)
    assert rasterio.crs.CRS.from_wkt(aoi.crs_wkt).to_epsg() == 32633


def test_a_stac_item_behind_a_token_header_is_read_with_the_header_given_to_gdal(item, monkeypatch):
    path, stacked = item
    with RangeServer(path.parent, required_headers=TOKEN) as server:
        url = f"{server.url}/{path.name}"
        with pytest.raises(InputError) as refused:
            stac_scenes(url, "red,green,blue,nir")
        assert str(refused.value) == f"{url}: access forbidden (HTTP 403)"
        monkeypatch.setenv("GDAL_HTTP_HEADERS", "X-Token: abc123")
        (scene,) = stac_scenes(url, "red,green,blue,nir")
        assert scene.band_names == ("red", "green", "blue", "nir")
        opened = open_scene(scene.vrt_xml, name=scene.name, shown=scene.shown)
        assert np.array_equal(read_window(opened, Window(64, 0, 64, 64)), stacked[:, :64, 64:])
    assert server.log.headers[0].get("X-Token") is None  # the refused request went without it
    assert all(h.get("X-Token") == "abc123" for h in server.log.headers[1:])


def test_a_rasterio_env_gives_the_stac_request_its_headers_too(item):
    path, _ = item
    with RangeServer(path.parent, required_headers=TOKEN) as server:
        with rasterio.Env(GDAL_HTTP_HEADERS="X-Token: abc123"):
            (scene,) = stac_scenes(f"{server.url}/{path.name}", "red,nir")
    assert scene.name == "S2X_TEST" and scene.band_names == ("red", "nir")


@pytest.mark.parametrize("fail_mode", ["503", "close"])
def test_an_aoi_url_failing_every_second_get_is_read_after_a_retry(aoi_files, fail_mode):
    with RangeServer(aoi_files, fail_every=2, fail_mode=fail_mode) as server:
        with urllib.request.urlopen(f"{server.url}/field.gpkg") as answer:  # the server's first GET
            answer.read()
        aoi = load_aoi(f"{server.url}/field.geojson")  # its first GET is the server's second: fails
    assert server.log.failures_injected == 1 and len(server.log.ranges) == 3
    assert_is_the_field(aoi)
    assert aoi.shown == f"{server.url}/field.geojson"


def test_an_aoi_body_cut_short_is_fetched_again_not_read_truncated(aoi_files):
    with RangeServer(aoi_files, cut_after=100) as server:
        aoi = load_aoi(f"{server.url}/field.gpkg")
    size = (aoi_files / "field.gpkg").stat().st_size
    assert server.log.sent("field.gpkg") == 100 + size and len(server.log.ranges) == 2
    assert_is_the_field(aoi)


def test_an_aoi_url_gets_the_headers_given_to_gdal(aoi_files):
    with RangeServer(aoi_files, required_headers=TOKEN) as server:
        url = f"{server.url}/field.gpkg?{SECRET}"
        with pytest.raises(InputError) as refused:
            load_aoi(url)
        with rasterio.Env(GDAL_HTTP_HEADERS="X-Token: abc123"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            aoi = load_aoi(url)
    assert not [w for w in caught if "/vsimem/" in str(w.message)]  # pyogrio's, on a GeoPackage without its name
    assert str(refused.value) == f"{server.url}/field.gpkg?***: access forbidden (HTTP 403)"
    assert_is_the_field(aoi)
    assert "deadbeef42" not in aoi.shown


def test_aoi_urls_that_cannot_be_had_are_one_line_errors(aoi_files, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    (aoi_files / "notes.geojson").write_text("this is not a vector file")
    with RangeServer(aoi_files, status={"down.geojson": 503}) as server:
        with pytest.raises(InputError) as down:
            load_aoi(f"{server.url}/down.geojson?{SECRET}")
        assert server.log.requests == 2  # retried once, as GDAL_HTTP_MAX_RETRY says
        with pytest.raises(InputError) as garbage:
            load_aoi(f"{server.url}/notes.geojson")
    assert str(down.value) == f"{server.url}/down.geojson?***: cannot be fetched (HTTP 503)"
    message = str(garbage.value)
    assert message.startswith(f"{server.url}/notes.geojson: cannot read the area of interest (")
    assert "/vsimem/" not in message and "\n" not in message
    with pytest.raises(InputError) as gone:  # server stopped: connection refused
        load_aoi(f"{server.url}/field.geojson")
    assert str(gone.value).startswith(f"{server.url}/field.geojson: cannot be fetched (")
    assert "refused" in str(gone.value).lower() and "\n" not in str(gone.value)


def test_a_missing_aoi_url_stops_the_cli_with_one_line_naming_it(aoi_files, tmp_path):
    data = scene_with_objects(64, 64, random_boxes(3, 64, seed=1), seed=1, bands=3, dtype="uint8")
    scene = write_raster(tmp_path / "scene.tif", data, crs="EPSG:32633")
    out = tmp_path / "out.gpkg"
    with RangeServer(aoi_files) as server:
        result = subprocess.run([str(Path(sys.executable).parent / "geoalps"), "label", str(scene), "-o", str(out),
                                 "--engine", "classical", "--aoi", f"{server.url}/missing.geojson?{SECRET}"],
                                capture_output=True, text=True, timeout=600)
    assert result.returncode == InputError.exit_code, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"geoalps: error: {server.url}/missing.geojson?***: not found (HTTP 404)"], result.stderr
    assert not out.exists()


def test_fetch_bytes_refuses_a_body_over_max_bytes(aoi_files, monkeypatch):
    size = (aoi_files / "field.gpkg").stat().st_size
    with RangeServer(aoi_files) as server:
        url = f"{server.url}/field.gpkg"
        assert fetch_bytes(url, "field", max_bytes=size) == (aoi_files / "field.gpkg").read_bytes()
        with pytest.raises(InputError) as large:
            fetch_bytes(url, "field", max_bytes=size - 1)
        monkeypatch.setattr("geoalps.inputs.aoi.MAX_AOI_BYTES", 1000)
        with pytest.raises(InputError) as large_aoi:
            load_aoi(url)
    assert str(large.value) == f"field: larger than {size - 1} bytes, too large to fetch (use a local copy)"
    assert str(large_aoi.value) == f"{url}: larger than 1000 bytes, too large to fetch (use a local copy)"
    assert server.log.requests == 3  # a file too large is not asked again


def test_fetch_bytes_counts_a_body_sent_without_content_length():
    class NoLength(BaseHTTPRequestHandler):  # HTTP/1.0: the body runs until the server hangs up
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)

        def log_message(self, *args) -> None:
            pass

    with HTTPServer(("127.0.0.1", 0), NoLength) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/big"
        assert fetch_bytes(url, "big", max_bytes=5000) == b"x" * 5000
        with pytest.raises(InputError, match=r"^big: larger than 4999 bytes, too large to fetch"):
            fetch_bytes(url, "big", max_bytes=4999)
        httpd.shutdown()


# -- user info in URLs (https://user:pass@host/...) ------------------------------------------------
USER, PASSWORD = "user", "s3cret%2Fx"  # percent-encoded in the URL: the password is "s3cret/x"
BASIC = {"Authorization": "Basic " + __import__("base64").b64encode(b"user:s3cret/x").decode()}


def with_user(url: str, password: str = PASSWORD) -> str:
    return url.replace("http://", f"http://{USER}:{password}@", 1)


def test_user_info_is_sent_as_basic_auth_to_that_host_only(aoi_files, item):
    """The URL's user info becomes basic authentication for its host (urllib would look the host
    ``user:pass@127.0.0.1`` up in DNS); a redirect to another host does not get it."""
    from geoalps.inputs.http import request

    path, stacked = item
    for tif in path.parent.glob("*"):
        (aoi_files / tif.name).write_bytes(tif.read_bytes())
    with RangeServer(aoi_files) as other, RangeServer(aoi_files, required_headers=BASIC) as server:
        server.redirects["moved.geojson"] = f"{other.url}/field.geojson"
        assert request(with_user(f"{server.url}/field.geojson"), "HEAD")[0] == 200
        assert fetch_bytes(with_user(f"{server.url}/field.geojson"), "shown") == (aoi_files / "field.geojson").read_bytes()
        assert_is_the_field(load_aoi(with_user(f"{server.url}/field.gpkg")))
        assert_is_the_field(load_aoi(with_user(f"{server.url}/moved.geojson")))  # 302 to another host
        assert other.log.requests == 1 and "Authorization" not in other.log.headers[0]
        (scene,) = stac_scenes(with_user(f"{server.url}/{path.name}"), "red,green,blue,nir")
        opened = open_scene(scene.vrt_xml, name=scene.name, shown=scene.shown)
        assert np.array_equal(read_window(opened, Window(0, 0, 128, 128)), stacked)
        assert PASSWORD not in scene.shown and "s3cret" not in scene.shown
        with pytest.raises(InputError) as wrong:
            load_aoi(with_user(f"{server.url}/field.gpkg", "wr0ng"))
    assert str(wrong.value) == f"{server.url.replace('http://', 'http://***@')}/field.gpkg: access forbidden (HTTP 403)"


def test_a_scene_stac_item_and_aoi_behind_basic_auth_label_without_showing_the_password(aoi_files, item, tmp_path):
    """The CLI reads a scene (through GDAL), a STAC item and an --aoi URL with user info in them;
    nothing it prints or writes (output, work folder) holds the password, nor a failure's line."""
    path, _ = item
    for tif in path.parent.glob("*"):
        (aoi_files / tif.name).write_bytes(tif.read_bytes())
    data = scene_with_objects(128, 128, random_boxes(6, 128, seed=4), seed=4, bands=3, dtype="uint8")
    write_raster(aoi_files / "scene.tif", data, crs="EPSG:32633", transform=rasterio.Affine(10, 0, 500000, 0, -10, 4200000))
    geoalps = str(Path(sys.executable).parent / "geoalps")
    fast = ["--engine", "classical", "--classes", "3", "--tile-size", "64", "--overlap", "8", "--keep-work"]
    with RangeServer(aoi_files, required_headers=BASIC) as server:
        for n, scene in enumerate((f"{server.url}/scene.tif", f"{server.url}/{path.name}")):
            out = tmp_path / f"out{n}.gpkg"
            result = subprocess.run([geoalps, "label", with_user(scene), "-o", str(out), *fast,
                                     "--aoi", with_user(f"{server.url}/field.geojson")],
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr
            assert "s3cret" not in result.stdout + result.stderr
            written = [out, *Path(f"{out}.geoalps-work").rglob("*")]
            assert all(b"s3cret" not in p.read_bytes() for p in written if p.is_file())
            assert b"***@127.0.0.1" in Path(f"{out}.geoalps-work/run.json").read_bytes()
        failed = subprocess.run([geoalps, "label", with_user(f"{server.url}/{path.name}", "wr0ngpass"), "-o",
                                 str(tmp_path / "failed.gpkg"), *fast], capture_output=True, text=True, timeout=600)
    assert failed.returncode == InputError.exit_code
    assert failed.stderr.strip().splitlines() == [
        f"geoalps: error: {server.url.replace('http://', 'http://***@')}/{path.name}: access forbidden (HTTP 403)"]
