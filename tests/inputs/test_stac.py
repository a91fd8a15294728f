"""STAC items as scenes: chosen assets stacked into one VRT on the finest grid, band names from
eo:bands, read window by window from files or over HTTP."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from conftest import random_boxes, scene_with_objects
from geoalps.errors import InputError, OptionError
from geoalps.inputs.scene import open_scene, read_window
from geoalps.inputs.sources import scene_sources
from http_server import RangeServer
from stac_items import GRID_10M, write_item


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    data = scene_with_objects(256, 256, random_boxes(12, 256, seed=2), seed=2, bands=4, dtype="uint16")
    return write_item(tmp_path_factory.mktemp("stac"), data)


def test_assets_by_common_name_become_one_scene_on_the_10m_grid(item):
    path, stacked = item
    (source,) = scene_sources([path], "red,green,blue,nir")
    assert source.name == "S2X_TEST"
    scene = open_scene(source.path, name=source.name, shown=source.shown)
    assert (scene.width, scene.height, scene.count, scene.dtype) == (256, 256, 4, "uint16")
    assert scene.transform == GRID_10M and scene.crs.to_epsg() == 32633 and scene.nodata == 0
    assert np.array_equal(read_window(scene, Window(0, 0, 256, 256)), stacked)
    assert np.array_equal(read_window(scene, Window(33, 71, 100, 90)), stacked[:, 71:161, 33:133])
    with rasterio.open(source.path) as vrt:
        assert vrt.descriptions == ("red", "green", "blue", "nir")


def test_assets_by_key_and_the_default_choice(item):
    path, stacked = item
    (by_key,) = scene_sources([path], "B04,B8A")
    with rasterio.open(by_key.path) as vrt:
        assert vrt.descriptions == ("red", "nir")
        assert np.array_equal(vrt.read(), stacked[[0, 3]])
    (default,) = scene_sources([path])  # every data asset, in item order; not the thumbnail
    with rasterio.open(default.path) as vrt:
        assert vrt.descriptions == ("blue", "green", "red", "nir")


def test_an_item_collection_is_one_scene_per_item(item, tmp_path):
    path, _ = item
    one = json.loads(path.read_text())
    assets_dir = path.parent
    for asset in one["assets"].values():
        asset["href"] = str(assets_dir / asset["href"])
    two = dict(one, id="S2X_OTHER")
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": [one, two]}))
    sources = scene_sources([tmp_path / "items.json"], "red,nir")
    assert [s.name for s in sources] == ["S2X_TEST", "S2X_OTHER"]
    assert sources[1].shown.endswith("items.json#S2X_OTHER")


def test_an_item_over_http_reads_its_assets_by_url(item, monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    path, stacked = item
    with RangeServer(path.parent) as server:
        (source,) = scene_sources([f"{server.url}/{path.name}"], "red,green,blue,nir")
        assert "/vsicurl/http://127.0.0.1" in source.path
        scene = open_scene(source.path, name=source.name, shown=source.shown)
        assert np.array_equal(read_window(scene, Window(128, 0, 128, 128)), stacked[:, :128, 128:])


def test_bad_choices_and_items_are_one_line_errors(item, tmp_path):
    path, _ = item
    with pytest.raises(OptionError, match=r"--assets 'swir16' is neither an asset key nor an eo:bands common name.*B04.*red"):
        scene_sources([path], "red,swir16")
    with pytest.raises(OptionError, match="no STAC item"):
        scene_sources([path.parent / "S2X_TEST_B04.tif"], "red")
    (tmp_path / "cat.json").write_text('{"type": "Catalog", "id": "c"}')
    with pytest.raises(InputError, match="not a STAC item or item collection"):
        scene_sources([tmp_path / "cat.json"])
    broken = json.loads(path.read_text())
    broken["assets"]["B04"]["href"] = "missing_B04.tif"
    (path.parent / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match=r"broken.json: asset 'B04' \(.*missing_B04.tif\)"):
        scene_sources([path.parent / "broken.json"], "red")


def _served_item(folder, name, key, href, template):
    """A copy of ``template`` (the item JSON) in ``folder`` whose asset ``key`` points at ``href``."""
    data = json.loads(template.read_text())
    data["assets"][key]["href"] = href
    (folder / name).write_text(json.dumps(data))
    return name


def test_a_remote_item_may_not_point_at_local_files_or_gdal_paths(item, tmp_path, monkeypatch):
    """An item fetched over http(s) is someone else's data: an asset at an absolute local path,
    a file:// URL, a GDAL virtual path to another host or another scheme is refused by name, and
    neither the local file nor the other host is read; relative and http(s) hrefs still work."""
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    path, stacked = item
    local = path.parent / "S2X_TEST_B04.tif"  # a readable local raster: the old code read it
    served = tmp_path / "served"
    served.mkdir()
    for tif in path.parent.glob("S2X_TEST_*.tif"):
        (served / tif.name).write_bytes(tif.read_bytes())
    with RangeServer(path.parent) as other, RangeServer(served) as server:
        hrefs = {
            "absolute.json": str(local),
            "file.json": f"file://{local}",
            "vsicurl.json": f"/vsicurl/{other.url}/S2X_TEST_B04.tif",
            "vsi_relative.json": f"/vsizip/{local}.zip/B04.tif",
            "s3.json": "s3://bucket/S2X_TEST_B04.tif",
        }
        for name, href in hrefs.items():
            _served_item(served, name, "B04", href, path)
            with pytest.raises(InputError) as refused:
                scene_sources([f"{server.url}/{name}"], "red,nir")
            message = str(refused.value)
            assert message.startswith(f"{server.url}/{name}: asset 'B04' (") and "\n" not in message
            assert message.endswith("may only point at http(s) URLs or paths relative to the item, "
                                    "not local files or GDAL virtual paths; refused"), message
        assert other.log.requests == 0
        _served_item(served, "absolute_http.json", "B04", f"{other.url}/S2X_TEST_B04.tif", path)
        _served_item(served, "dotted.json", "B04", "./S2X_TEST_B04.tif", path)
        for name in ("absolute_http.json", "dotted.json"):
            (source,) = scene_sources([f"{server.url}/{name}"], "red,nir")
            scene = open_scene(source.path, name=source.name, shown=source.shown)
            assert np.array_equal(read_window(scene, Window(0, 0, 256, 256)), stacked[[0, 3]])
        assert other.log.requests > 0  # the http(s) URL to another host is allowed


def test_a_local_item_may_still_point_at_local_paths(item, tmp_path):
    path, stacked = item
    for name, href in (("absolute.json", str(path.parent / "S2X_TEST_B04.tif")),
                       ("file.json", f"file://{path.parent / 'S2X_TEST_B04.tif'}")):
        _served_item(tmp_path, name, "B04", href, path)
        (source,) = scene_sources([tmp_path / name], "red")
        with rasterio.open(source.path) as vrt:
            assert np.array_equal(vrt.read(1), stacked[0])
