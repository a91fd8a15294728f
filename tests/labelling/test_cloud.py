"""Scenes from the cloud (issue 15), end to end on 127.0.0.1: a COG by URL labels like the local
file, an area of interest reads only its part, flaky servers are retried, missing and forbidden
URLs stop cleanly, STAC items label like a stacked GeoTIFF, dask workers read URLs themselves."""
from __future__ import annotations

import os

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from conftest import ODD_TRANSFORM, random_boxes, scene_with_objects, write_raster
from geoalps import label
from geoalps.errors import InputError, ResumeError
from http_server import RangeServer
from stac_items import GRID_10M, write_item

BIN = Path(sys.executable).parent
FAST = dict(engine="classical", classes=4, tile_size_px=128, overlap_px=16, min_area_px=30, quiet=True)
SECRET = "X-Amz-Signature=deadbeef42&X-Amz-Credential=AKIASECRET"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")


def write_cog(path: Path, data: np.ndarray, transform=ODD_TRANSFORM, blocksize=128) -> Path:
    with rasterio.open(path, "w", driver="COG", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32633", transform=transform, nodata=0,
                       blocksize=blocksize) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    write_cog(folder / "scene.tif",
              scene_with_objects(512, 512, random_boxes(24, 512, seed=4), seed=4, bands=4, dtype="uint16"))
    return folder


@pytest.fixture(scope="module")
def reference(served, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "local.gpkg"
    label(served / "scene.tif", out, **FAST)
    return pyogrio.read_dataframe(out, layer="masks")


def assert_same(a, b):
    assert len(a) == len(b) > 0
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert all(x.equals_exact(y, 0) for x, y in zip(a.geometry, b.geometry))


def cli(*args):
    return subprocess.run([str(BIN / "geoalps"), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_a_signed_url_labels_like_the_local_file_and_its_secret_is_nowhere(served, reference, tmp_path):
    out = tmp_path / "url.gpkg"
    with RangeServer(served, tokens={"scene.tif": SECRET}, fail_every=3, fail_mode="503") as server:
        result = cli("label", f"{server.url}/scene.tif?{SECRET}", "-o", out, "--keep-work", "--raster-out",
                     tmp_path / "url.tif", "--engine", "classical", "--classes", "4", "--tile-size", "128",
                     "--overlap", "16", "--min-area-px", "30")
    assert result.returncode == 0, result.stderr
    assert server.log.failures_injected >= 1  # retried, and the retries printed nothing secret
    assert_same(reference, pyogrio.read_dataframe(out, layer="masks"))
    assert set(pyogrio.read_dataframe(out, layer="masks")["scene"]) == {"scene.tif"}
    written = [out, tmp_path / "url.tif", *Path(f"{out}.geoalps-work").rglob("*.json")]
    for text in [result.stderr, result.stdout, *(p.read_bytes().decode("latin-1") for p in written)]:
        assert "deadbeef42" not in text and "AKIASECRET" not in text
    assert f"{server.url}/scene.tif?***" in out.read_bytes().decode("latin-1")  # layer metadata


@pytest.mark.parametrize("fail_mode", ["close", "503"])
def test_a_server_failing_every_third_request_gives_the_same_output(served, tmp_path, fail_mode, monkeypatch):
    # statistics from the COG's overview, so the tiles fetch their blocks (one request or more each)
    monkeypatch.setattr("geoalps.inputs.scene.STATS_READ_PX", 128)
    local = label(served / "scene.tif", tmp_path / "local.gpkg", **FAST)
    with RangeServer(served, fail_every=3, fail_mode=fail_mode) as server:
        result = label(f"{server.url}/scene.tif", tmp_path / "flaky.gpkg", **FAST)
    print(f"{fail_mode}: {server.log.requests} requests, {server.log.failures_injected} failed on purpose")
    assert server.log.failures_injected >= 3
    assert result.stats["tiles"] == 25
    assert_same(local.gdf, result.gdf)


@pytest.mark.parametrize("status, words", [(404, "not found"), (403, "access forbidden")])
def test_missing_and_forbidden_urls_stop_with_one_line_and_no_output(served, tmp_path, status, words):
    out = tmp_path / "none.gpkg"
    with RangeServer(served, status={"scene.tif": status}) as server:
        result = cli("label", f"{server.url}/scene.tif?{SECRET}", "-o", out, "--engine", "classical")
    assert result.returncode == InputError.exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"geoalps: error: {server.url}/scene.tif?***: {words}"), result.stderr
    assert "deadbeef42" not in result.stderr
    assert not out.exists() and not Path(f"{out}.geoalps-work").exists()


def test_an_aoi_of_a_tenth_of_a_cog_reads_at_most_a_fifth_of_it(tmp_path):
    grid = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 2048.0)
    data = scene_with_objects(2048, 2048, random_boxes(400, 2048, seed=9), seed=9, bands=3)
    folder = tmp_path / "big"
    folder.mkdir()
    cog = write_cog(folder / "big.tif", data, transform=grid)
    aoi = "512,888,1160,1536"  # cols 512..1160, rows 512..1160: 648 x 648 px, 10.0 % of the scene
    # One process: each dask worker keeps its own GDAL block cache, so with the default two
    # workers here the blocks shared by neighbouring tiles are fetched once per worker (34 %).
    options = dict(FAST, tile_size_px=256, overlap_px=32, aoi=aoi, workers=1)
    with RangeServer(folder) as server:
        remote = label(f"{server.url}/big.tif", tmp_path / "aoi.gpkg", raster_out=tmp_path / "aoi.tif", **options)
        fraction = server.log.sent("big.tif") / cog.stat().st_size
    print(f"AOI 10.0 % of the scene: read {fraction:.1%} of the COG's bytes")
    assert fraction <= 0.20
    local = label(cog, tmp_path / "local.gpkg", **options)
    assert_same(local.gdf, remote.gdf)
    assert remote.stats["tiles"] == 9  # tiles planned over the AOI window only
    box = shapely.box(*map(float, aoi.split(",")))
    assert len(remote.gdf) > 10 and shapely.covered_by(remote.gdf.geometry.values, box).all()
    with rasterio.open(tmp_path / "aoi.tif") as raster:  # the AOI window on the scene grid
        assert (raster.width, raster.height) == (648, 648)
        assert raster.transform == grid * Affine.translation(512, 512)


def test_a_polygon_aoi_clips_polygons_at_pixel_edges(served, tmp_path):
    import geopandas as gpd

    corners = [ODD_TRANSFORM * (c, r) for c, r in ((40, 30), (400, 60), (300, 450))]
    triangle = shapely.Polygon(corners)
    gpd.GeoDataFrame(geometry=[triangle], crs="EPSG:32633").to_file(tmp_path / "aoi.gpkg")
    result = label(served / "scene.tif", tmp_path / "tri.gpkg", aoi=str(tmp_path / "aoi.gpkg"), **FAST)
    geometries = result.gdf.geometry.values
    assert len(geometries) > 5
    # every polygon lies inside the triangle, give or take the half pixel of the centre rule
    pixel = max(ODD_TRANSFORM.a, -ODD_TRANSFORM.e)
    assert shapely.covered_by(geometries, triangle.buffer(pixel)).all()
    xs, ys = shapely.get_coordinates(geometries).T
    cols, rows = ~ODD_TRANSFORM * (xs, ys)
    assert np.allclose(cols, np.round(cols), atol=1e-6) and np.allclose(rows, np.round(rows), atol=1e-6)


def test_the_aoi_is_part_of_the_resume_fingerprint(served, tmp_path):
    out = tmp_path / "r.gpkg"
    label(served / "scene.tif", out, keep_work=True, aoi="412360,5123250,412450,5123420", **FAST)
    with pytest.raises(ResumeError, match="aoi"):
        label(served / "scene.tif", out, resume=True, overwrite=True, aoi="412360,5123250,412460,5123420", **FAST)


def test_a_stac_item_labels_like_the_stacked_geotiff(tmp_path):
    data = scene_with_objects(384, 384, random_boxes(20, 384, seed=6), seed=6, bands=4, dtype="uint16")
    item, stacked = write_item(tmp_path / "stac", data)
    stacked_tif = write_raster(tmp_path / "stacked.tif", stacked, transform=GRID_10M, crs="EPSG:32633", nodata=0)
    with rasterio.open(stacked_tif, "r+") as dst:
        dst.descriptions = ("red", "green", "blue", "nir")  # the names the item's VRT carries
    reference = label(stacked_tif, tmp_path / "stacked.gpkg", **FAST).gdf
    with RangeServer(item.parent) as server:
        result = label(f"{server.url}/{item.name}", tmp_path / "item.gpkg", assets="red,green,blue,nir", **FAST)
        assert server.log.sent("S2X_TEST_B8A.tif") > 0
    from_item = result.gdf
    assert set(from_item["scene"]) == {"S2X_TEST"}
    assert_same(reference.drop(columns="scene"), from_item.drop(columns="scene"))


@pytest.fixture
def restored_environ():
    """dask's nanny writes its pre-spawn environment (MALLOC_TRIM_THRESHOLD_ ...) into this
    process's os.environ; put it back for the tests that follow."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_dask_workers_read_a_url_themselves(served, reference, tmp_path, restored_environ):
    from dask.distributed import LocalCluster

    with RangeServer(served) as server, LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        label(f"{server.url}/scene.tif", tmp_path / "dask.gpkg", scheduler=cluster.scheduler_address, **FAST)
        workers_seen = len(cluster.scheduler_info["workers"])
    assert workers_seen == 2
    assert_same(reference, pyogrio.read_dataframe(tmp_path / "dask.gpkg", layer="masks"))
