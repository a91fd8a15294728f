"""The sam2 engine end to end, through the checkpoint path users take (a tiny random-weight SAM 2
saved as {"model": state_dict}, like sam2.1_hiera_tiny.pt): polygons on the grid, SAM 2 features,
seams across tiles, --resume, --workers and the reference generator."""
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
from geoalps.errors import ModelError
from tests.floats import assert_float32_close

KEEP_ALL = dict(engine="sam2", points_per_side=4, pred_iou_thresh=0.0, stability_thresh=0.0,
                max_area_frac=1.0, dedupe_iou=0.95, classes=3, quiet=True)
CLI_KEEP_ALL = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
                "--max-area-frac", "1", "--dedupe-iou", "0.95", "--classes", "3"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    data = scene_with_objects(160, 200, [(20, 30, 80, 90), (90, 110, 150, 190)], bands=4, dtype="uint16")
    return write_raster(tmp_path_factory.mktemp("scene") / "rgbn.tif", data, nodata=0)


def test_sam2_masks_land_on_the_grid_and_features_pool_its_embedding(tiny_sam2_checkpoint, scene, tmp_path):
    model_path = tmp_path / "km.joblib"
    gdf = label(scene, None, checkpoint=tiny_sam2_checkpoint, kmeans_model=model_path,
                raster_out=tmp_path / "l.tif", **KEEP_ALL).gdf
    assert len(gdf) >= 1
    assert gdf.attrs["geoalps"]["engine"].startswith("sam2 (custom(sam2.1,embed_dim=8")
    # auto = both: SAM 2's 32-channel image embedding, the mean of all 4 bands, NDVI and NDWI
    assert OnlineKMeans.load(model_path).block_widths == {"sam": 32, "spectral": 4, "index": 2}
    with rasterio.open(tmp_path / "l.tif") as out:
        labelled = out.read(1) != 255
    union = rio_features.rasterize([(g, 1) for g in gdf.geometry], out_shape=labelled.shape,
                                   transform=ODD_TRANSFORM, fill=0).astype(bool)
    assert np.array_equal(union, labelled) and labelled.any()
    assert gdf.crs.to_epsg() == 32633


def test_reference_generator_gives_the_fast_ones_objects(tiny_sam2_checkpoint, scene):
    """The same objects through the whole run, up to float rounding: the two generators' decoders
    sum in another order, so a pixel whose logit is within float32 rounding of 0 may fall on
    either side (one pixel of a 221 px mask on an AMD EPYC); as the generator tests allow
    (tests/engines/sam2/test_generators.py), each polygon matches at IoU >= 0.99, and classes,
    ids and fragments are the same."""
    fast = label(scene, None, checkpoint=tiny_sam2_checkpoint, seed=2, **KEEP_ALL).gdf
    ref = label(scene, None, checkpoint=tiny_sam2_checkpoint, seed=2, sam_generator="reference", **KEEP_ALL).gdf
    assert len(fast) == len(ref) > 0
    for column in ("instance_id", "pseudo_class", "n_fragments", "scene"):
        assert fast[column].tolist() == ref[column].tolist(), column
    assert_float32_close(fast["score"].to_numpy(), ref["score"].to_numpy())
    # features are means under the mask: a pixel more or less moves them by about 1 / its area
    assert np.allclose(fast["class_distance"], ref["class_distance"], rtol=0.02, atol=1e-6)
    iou = fast.geometry.intersection(ref.geometry).area / fast.geometry.union(ref.geometry).area
    assert (iou >= 0.99).all(), iou.tolist()
    assert np.allclose(fast["area_px"], ref["area_px"], rtol=0.01, atol=1)


def test_cli_auto_picks_sam2_for_a_sam2_checkpoint_and_rejects_a_wrong_size(tiny_sam2_checkpoint, scene, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GEOALPS_CACHE": str(tmp_path / "cache")}
    base = [sys.executable, "-m", "geoalps", "label", str(scene), "--checkpoint", str(tiny_sam2_checkpoint), *CLI_KEEP_ALL]
    done = subprocess.run([*base, "-o", str(tmp_path / "o.gpkg")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "engine sam2 (custom(sam2.1" in done.stderr and "sam2.1_tiny_random.pt" in done.stderr
    wrong = subprocess.run([*base, "-o", str(tmp_path / "w.gpkg"), "--engine", "sam2", "--model-type", "hiera_large"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert wrong.returncode == ModelError.exit_code and "Traceback" not in wrong.stderr
    assert "sam2.1_tiny_random.pt: checkpoint is custom" in wrong.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "w.gpkg").exists()
    missing = subprocess.run([sys.executable, "-m", "geoalps", "label", str(scene), "-o", str(tmp_path / "m.gpkg"),
                              "--engine", "sam2"], capture_output=True, text=True, env=env, timeout=600)
    assert missing.returncode == ModelError.exit_code
    assert "geoalps models download sam2.1_hiera_tiny" in missing.stderr


def test_seams_resume_and_two_workers_give_one_runs_output(tiny_sam2_checkpoint, scene, tmp_path):
    """Four tiles with overlap: objects cut by a tile edge are merged across the seam; a run
    interrupted after some tiles and resumed, and a run on two local workers, give the same file."""
    import pyogrio

    cli = [str(Path(sys.executable).parent / "geoalps"), "label", str(scene), "--engine", "sam2",
           "--checkpoint", str(tiny_sam2_checkpoint), *CLI_KEEP_ALL, "--tile-size", "128", "--overlap", "16", "-q"]
    one = tmp_path / "one.gpkg"
    done = subprocess.run([*cli, "-o", str(one), "--keep-work"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    reference = pyogrio.read_dataframe(one, layer="masks")
    work = Path(str(one) + ".geoalps-work")
    assert work.is_dir()
    # tiles cover columns 0..128 and 112..200: a polygon reaching left of 112 and right of 128
    # lies in neither tile alone, so it is masks of both tiles merged across the seam
    xs = [(g.bounds[0], g.bounds[2]) for g in reference.geometry]
    left, right = (ODD_TRANSFORM.c + col * ODD_TRANSFORM.a for col in (112, 128))
    assert any(x0 < left and x1 > right for x0, x1 in xs)

    two = tmp_path / "two.gpkg"
    done = subprocess.run([*cli, "-o", str(two), "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    parallel = pyogrio.read_dataframe(two, layer="masks")

    resumed = tmp_path / "resumed.gpkg"
    partial = Path(str(resumed) + ".geoalps-work")
    import shutil

    shutil.copytree(work, partial)
    tiles = sorted((partial / "tiles").glob("*.npz"))
    assert len(tiles) == 4
    for p in tiles[: len(tiles) // 2]:  # as if killed before these tiles finished
        p.unlink()
    done = subprocess.run([*cli, "-o", str(resumed), "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    again = pyogrio.read_dataframe(resumed, layer="masks")
    for other in (parallel, again):
        assert len(other) == len(reference) > 0
        assert other.drop(columns="geometry").equals(reference.drop(columns="geometry"))
        assert all(a.equals_exact(b, 0) for a, b in zip(other.geometry, reference.geometry))
