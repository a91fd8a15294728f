"""``--resume`` of a run over http(s) scenes: the server's ETag, Last-Modified and size are part of
the work folder's fingerprint, so a file replaced at the same URL by one with the same grid (a
re-processed COG) is refused instead of mixing tiles of two versions; an unchanged file resumes;
a server that states nothing resumes as before; no signature of a signed URL is ever written."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import pyogrio
import pytest
import rasterio

from conftest import ODD_TRANSFORM, random_boxes, scene_with_objects
from geoalps import label
from geoalps.errors import ResumeError
from geoalps.inputs.scene import open_scene
from geoalps.inputs.sources import scene_sources
from geoalps.labelling.work_store import fingerprint
from http_server import RangeServer
from stac_items import write_item

BIN = Path(sys.executable).parent
# the scenes' bands are R,G,B,N without descriptions: named, so no "band roles unknown" warning
FAST = dict(engine="classical", classes=4, tile_size_px=128, overlap_px=16, min_area_px=30, quiet=True,
            band_names="red,green,blue,nir")
FAST_CLI = ["--engine", "classical", "--classes", "4", "--tile-size", "128", "--overlap", "16", "--min-area-px", "30",
            "--band-names", "red,green,blue,nir"]
SECRET = "X-Amz-Signature=deadbeef42&X-Amz-Credential=AKIASECRET"
TILES = 9  # a 256 px scene in 128 px tiles with 16 px overlap


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")


def write_scene(path: Path, seed: int) -> Path:
    """An uncompressed COG: every seed gives a file of the same size and grid, so only the
    server's ETag / Last-Modified can tell two of them apart."""
    data = scene_with_objects(256, 256, random_boxes(12, 256, seed=seed), seed=seed, bands=4, dtype="uint16")
    temporary = path.with_suffix(".new")
    with rasterio.open(temporary, "w", driver="COG", width=256, height=256, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=ODD_TRANSFORM, nodata=0, blocksize=128, compress="NONE") as dst:
        dst.write(data)
    mtime_ns = path.stat().st_mtime_ns + 5_000_000_000 if path.exists() else None
    os.replace(temporary, path)
    if mtime_ns is not None:  # a later modification time, as a re-upload has
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def interrupted_run(url: str, out: Path, drop: int = 3) -> set[str]:
    """A run that finished some tiles only: a whole run kept its work folder, then ``drop``
    tiles and the output are removed, as if it had been killed. Returns the tiles left."""
    label(url, out, keep_work=True, **FAST)
    tiles = sorted(Path(f"{out}.geoalps-work/tiles").glob("*.npz"))
    assert len(tiles) == TILES
    for tile in tiles[:drop]:
        tile.unlink()
    out.unlink()
    return {t.stem for t in tiles[drop:]}


def cli(*args):
    return subprocess.run([str(BIN / "geoalps"), *map(str, args)], capture_output=True, text=True, timeout=600)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_an_unchanged_remote_file_resumes_with_its_finished_tiles(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    write_scene(served / "scene.tif", seed=1)
    with RangeServer(served) as server:
        url = f"{server.url}/scene.tif"
        whole = label(url, tmp_path / "whole.gpkg", **FAST)
        out = tmp_path / "out.gpkg"
        kept = interrupted_run(url, out)
        stored = json.loads(Path(f"{out}.geoalps-work/run.json").read_text())
        assert set(stored["scenes"][0]["versions"][url]) == {"etag", "last_modified", "size_bytes"}
        resumed = label(url, out, resume=True, **FAST)
    assert resumed.stats["tiles_resumed"] == len(kept) == TILES - 3
    masks = pyogrio.read_dataframe(out, layer="masks")
    assert len(masks) == len(whole.gdf) > 0
    assert masks.drop(columns="geometry").equals(whole.gdf.drop(columns="geometry"))
    assert all(a.equals_exact(b, 0) for a, b in zip(masks.geometry, whole.gdf.geometry))


def test_a_file_replaced_at_the_same_url_is_refused_and_nothing_is_destroyed(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    scene = write_scene(served / "scene.tif", seed=1)
    out = tmp_path / "out.gpkg"
    work = Path(f"{out}.geoalps-work")
    with RangeServer(served, tokens={"scene.tif": SECRET}) as server:
        url = f"{server.url}/scene.tif?{SECRET}"
        label(url, out, keep_work=True, **FAST)
        before = {**snapshot(work), "output": hashlib.sha1(out.read_bytes()).hexdigest()}
        size = scene.stat().st_size
        write_scene(scene, seed=2)  # re-processed: other pixels, same grid, same size
        assert scene.stat().st_size == size
        result = cli("label", url, "-o", out, "--resume", "--overwrite", *FAST_CLI)
    assert result.returncode == ResumeError.exit_code, result.stderr
    assert result.stderr.splitlines() == [
        f"geoalps: error: {work}: work folder was made from another version of {server.url}/scene.tif?*** "
        "(ETag changed); run without --resume and with --overwrite to start over"]
    assert "deadbeef42" not in result.stderr + result.stdout
    assert {**snapshot(work), "output": hashlib.sha1(out.read_bytes()).hexdigest()} == before


def test_a_server_that_states_no_version_resumes_as_before(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    scene = write_scene(served / "scene.tif", seed=1)
    out = tmp_path / "out.gpkg"
    with RangeServer(served, validators=False) as server:
        url = f"{server.url}/scene.tif"
        kept = interrupted_run(url, out)
        stored = json.loads(Path(f"{out}.geoalps-work/run.json").read_text())
        assert stored["scenes"][0]["versions"] == {url: {"size_bytes": scene.stat().st_size}}
        write_scene(scene, seed=2)  # same size: nothing the server says tells the two apart
        result = cli("label", url, "-o", out, "--resume", *FAST_CLI)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(kept)} of {TILES} tiles already done" in result.stderr
    assert "warning" not in result.stderr


def test_a_version_that_cannot_be_had_now_is_warned_about_and_resumed(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    write_scene(served / "scene.tif", seed=1)
    out = tmp_path / "out.gpkg"
    with RangeServer(served) as server:
        url = f"{server.url}/scene.tif"
        kept = interrupted_run(url, out)
        server.validators = False  # e.g. a proxy in front of the server now strips them
        result = cli("label", url, "-o", out, "--resume", *FAST_CLI)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [f"geoalps: warning: {url}: the server does not state the file's version now (ETag, "
                        "Last-Modified), so it cannot be checked that the file did not change since the interrupted "
                        "run; resuming anyway"]
    assert f"resuming: {len(kept)} of {TILES} tiles already done" in result.stderr


def test_the_fingerprint_holds_the_version_of_a_signed_url_but_never_its_signature(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    scene = write_scene(served / "scene.tif", seed=1)
    # signed for GET only, as presigned S3 URLs are: HEAD is refused, the one-byte GET is not
    with RangeServer(served, tokens={"scene.tif": SECRET}, head_status=403) as server:
        url = f"{server.url}/scene.tif?{SECRET}"
        prints = fingerprint([open_scene(url)], {})
    text = json.dumps(prints)
    assert "deadbeef42" not in text and "AKIASECRET" not in text
    stat = scene.stat()
    assert prints["scenes"][0]["versions"] == {f"{server.url}/scene.tif?***": {
        "etag": f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"',
        "last_modified": formatdate(stat.st_mtime, usegmt=True), "size_bytes": stat.st_size}}
    assert server.log.ranges[-1] == "bytes=0-0"  # the version came from the one-byte GET


def test_each_http_asset_of_a_stac_item_has_its_version(tmp_path):
    data = scene_with_objects(128, 128, random_boxes(6, 128, seed=5), seed=5, bands=4, dtype="uint16")
    item, _ = write_item(tmp_path / "stac", data)
    with RangeServer(item.parent) as server:
        (source,) = scene_sources([f"{server.url}/{item.name}"], "red,green,blue,nir")
        prints = fingerprint([open_scene(source.path, name=source.name, shown=source.shown)], {})
        unasked = fingerprint([open_scene(source.path, name=source.name, shown=source.shown)], {},
                              remote_versions=False)
    versions = prints["scenes"][0]["versions"]
    assert sorted(versions) == sorted(f"{server.url}/S2X_TEST_{band}.tif" for band in ("B02", "B03", "B04", "B8A"))
    for url, version in versions.items():
        assert version["size_bytes"] == (item.parent / url.rsplit("/", 1)[-1]).stat().st_size
    assert "versions" not in unasked["scenes"][0]
