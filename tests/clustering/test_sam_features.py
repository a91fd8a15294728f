"""The clustering design holds for SAM features: the tiny random-weight SAM through label() with
features='both' (pooled embedding + band means + indices), area-weighted, over-clustered and
merged; a saved model reused frozen gives the same classes."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import scene_with_objects, write_raster

from geoalps import label
from geoalps.clustering.kmeans import OnlineKMeans

torch = pytest.importorskip("torch")

SAM = dict(engine="sam", features="both", points_per_side=8, pred_iou_thresh=0.0, stability_thresh=0.0,
           max_area_frac=1.0, classes=3, quiet=True)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from tests.sam_models import build_tiny_sam, save_sam_checkpoint

    path = tmp_path_factory.mktemp("sam") / "sam_tiny_random.pth"
    save_sam_checkpoint(build_tiny_sam(seed=0), path)
    return path


def test_tiny_sam_with_both_feature_blocks(tiny_checkpoint, tmp_path):
    data = scene_with_objects(160, 200, [(20, 30, 80, 90), (90, 110, 150, 190), (10, 120, 60, 180)],
                              bands=4, dtype="uint16")
    scene = write_raster(tmp_path / "rgbn.tif", data, nodata=0)
    model_path = tmp_path / "km.joblib"
    first = label(scene, None, checkpoint=tiny_checkpoint, kmeans_model=model_path, **SAM).gdf
    assert len(first) >= 1
    model = OnlineKMeans.load(model_path)
    assert model.block_widths == {"sam": 64, "spectral": 4, "index": 2}
    assert model.mapping is not None and model.effective_classes <= 3
    assert set(first.pseudo_class) <= set(range(model.effective_classes))
    second = label(scene, None, checkpoint=tiny_checkpoint, kmeans_model=model_path, **SAM).gdf
    assert np.array_equal(first.pseudo_class.to_numpy(), second.pseudo_class.to_numpy())
