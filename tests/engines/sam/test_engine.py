"""The sam engine through the same checkpoint path users take: a tiny random-weight SAM saved as
a real .pth file, loaded with --model-type auto, features pooled from its image embedding."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio import features as rio_features

from conftest import ODD_TRANSFORM, scene_with_objects, write_raster
from geoalps import label
from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.errors import GeoAlpsError, ModelError
from geoalps.objects.features import pooled_embedding
from geoalps.objects.masks import TileMasks

torch = pytest.importorskip("torch")
# Random weights give big, low-confidence masks: keep them all so there is something to check.
KEEP_ALL = dict(engine="sam", points_per_side=6, pred_iou_thresh=0.0, stability_thresh=0.0,
                max_area_frac=1.0, dedupe_iou=0.95, classes=3, quiet=True)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from tests.sam_models import build_tiny_sam, save_sam_checkpoint

    path = tmp_path_factory.mktemp("sam") / "sam_tiny_random.pth"
    save_sam_checkpoint(build_tiny_sam(seed=0), path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    data = scene_with_objects(160, 200, [(20, 30, 80, 90), (90, 110, 150, 190)], bands=4, dtype="uint16")
    return write_raster(tmp_path_factory.mktemp("scene") / "rgbn.tif", data, nodata=0)


def test_sam_masks_land_on_the_grid_and_features_pool_the_embedding(tiny_checkpoint, scene, tmp_path):
    model_path = tmp_path / "km.joblib"
    gdf = label(scene, None, checkpoint=tiny_checkpoint, kmeans_model=model_path, raster_out=tmp_path / "l.tif", **KEEP_ALL).gdf
    assert len(gdf) >= 1  # random weights: masks are near-identical blobs, but real SAM output
    assert gdf.attrs["geoalps"]["engine"].startswith("sam (custom(embed_dim=32")
    widths = OnlineKMeans.load(model_path).block_widths
    # auto = both: the encoder neck's 64 channels, the mean of all 4 bands, NDVI and NDWI
    assert widths == {"sam": 64, "spectral": 4, "index": 2}
    # every object's polygon covers exactly the pixels the label raster gives to some object
    with rasterio.open(tmp_path / "l.tif") as out:
        labelled = out.read(1) != 255
    union = rio_features.rasterize([(g, 1) for g in gdf.geometry], out_shape=labelled.shape,
                                   transform=ODD_TRANSFORM, fill=0).astype(bool)
    assert np.array_equal(union, labelled)
    assert gdf.crs.to_epsg() == 32633


def test_same_seed_same_sam_output(tiny_checkpoint, scene):
    a = label(scene, None, checkpoint=tiny_checkpoint, seed=3, **KEEP_ALL).gdf
    b = label(scene, None, checkpoint=tiny_checkpoint, seed=3, **KEEP_ALL).gdf
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


def test_checkpoint_from_environment_and_auto_engine(tiny_checkpoint, scene, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GEOALPS_SAM_CHECKPOINT": str(tiny_checkpoint), "GEOALPS_CACHE": str(tmp_path)}
    options = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0", "--max-area-frac", "1"]
    result = subprocess.run([sys.executable, "-m", "geoalps", "label", str(scene), "-o", str(tmp_path / "o.gpkg"), *options],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "engine sam (custom(embed_dim=32" in result.stderr and "sam_tiny_random.pth" in result.stderr
    wrong = subprocess.run([sys.executable, "-m", "geoalps", "label", str(scene), "-o", str(tmp_path / "w.gpkg"),
                            "--model-type", "vit_h", *options], capture_output=True, text=True, env=env, timeout=600)
    assert wrong.returncode == ModelError.exit_code and "Traceback" not in wrong.stderr
    assert "sam_tiny_random.pth" in wrong.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "w.gpkg").exists()


def test_sam_features_need_the_sam_engine(scene):
    with pytest.raises(GeoAlpsError, match="--features sam needs the sam engine"):
        label(scene, None, engine="classical", features="sam", quiet=True)


def test_pooling_weights_cells_by_mask_coverage():
    # a 4 x 4 grid embedding over an 8 x 8 tile: each cell covers 2 x 2 pixels
    embedding = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4)
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:4] = True  # cells (0,0) and (0,1), fully
    mask[2, 0] = True  # one pixel of cell (1,0)
    tile = TileMasks([mask[0:3, 0:4]], [(0, 0, 3, 4)], np.ones(1), tile_shape=(8, 8), embedding=embedding,
                     embedding_extent=(4, 4))
    pooled = pooled_embedding(tile)
    expected = (4 * embedding[:, 0, 0] + 4 * embedding[:, 0, 1] + 1 * embedding[:, 1, 0]) / 9
    assert np.allclose(pooled[0], expected)
    # SAM pads a non-square tile: only the top rows of the grid cover a 4 x 8 (h x w) image
    wide = TileMasks([np.ones((4, 8), bool)], [(0, 0, 4, 8)], np.ones(1), tile_shape=(4, 8), embedding=embedding,
                     embedding_extent=(2, 4))
    assert np.allclose(pooled_embedding(wide)[0], embedding[:, :2, :].mean(axis=(1, 2)))


def test_tile_batch_encodes_tiles_together_and_changes_nothing(tiny_checkpoint, scene, tmp_path, monkeypatch):
    """--tile-batch N hands N tiles to one encoder call (GPU throughput); polygons, classes and
    the work-folder fingerprint stay what one tile at a time gives."""
    from segment_anything.modeling.image_encoder import PatchEmbed

    # The patch embedding runs once per encoder pass, on the plain and on the chunked-attention
    # (CPU) forward alike, so it counts encoder calls and their batch sizes.
    encoder_batches: list[int] = []
    forward = PatchEmbed.forward

    def spy(self, x):
        encoder_batches.append(int(x.shape[0]))
        return forward(self, x)

    monkeypatch.setattr(PatchEmbed, "forward", spy)
    small = dict(KEEP_ALL, tile_size_px=96, overlap_px=16, seed=1)
    one = label(scene, tmp_path / "one.gpkg", checkpoint=tiny_checkpoint, tile_batch=1, **small).gdf
    assert encoder_batches and set(encoder_batches) == {1}
    tiles = one.attrs["geoalps"]["tiles"]
    assert tiles == len(encoder_batches) == 6
    encoder_batches.clear()
    three = label(scene, tmp_path / "three.gpkg", checkpoint=tiny_checkpoint, tile_batch=3, **small).gdf
    assert encoder_batches == [3, 3]
    assert len(one) == len(three) > 0
    assert one.drop(columns="geometry").equals(three.drop(columns="geometry"))
    assert one.geometry.geom_equals_exact(three.geometry, tolerance=1e-6).all()


def test_sam_on_two_local_workers_gives_the_same_output(tiny_checkpoint, scene, tmp_path):
    """torch in dask workers forked from the CLI (which never loads torch itself): same masks,
    scores and classes as one process; the tile plan has 4 tiles so both workers get some."""
    import pyogrio

    cli = [str(Path(sys.executable).parent / "geoalps"), "label", str(scene), "--engine", "sam", "--checkpoint",
           str(tiny_checkpoint), "--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-thresh", "0",
           "--max-area-frac", "1.0", "--dedupe-iou", "0.95", "--classes", "3", "--tile-size", "128",
           "--overlap", "16", "-q"]
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.gpkg"
        done = subprocess.run([*cli, "-o", str(out), "--workers", str(workers)], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        outputs.append(pyogrio.read_dataframe(out, layer="masks"))
    one, two = outputs
    assert len(one) == len(two) > 0
    assert one.drop(columns="geometry").equals(two.drop(columns="geometry"))
    assert all(a.equals_exact(b, 0) for a, b in zip(one.geometry, two.geometry))
