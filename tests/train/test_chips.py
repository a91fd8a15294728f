"""geoalps export-chips: GeoTIFF chips and masks on the scene grid read back by torchgeo, the COCO
JSON by pycocotools (polygons inside their chips, areas matching the masks), a seeded block split."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from geoalps.cli import main
from geoalps.errors import OutputError

from train.train_scenes import CRS, TRAIN_TRANSFORM, class_pattern, write_scene
from train.train_scenes import _train_test_environment  # noqa: F401 - fixture used by name

pycocotools = pytest.importorskip("pycocotools")


@pytest.fixture
def labelled(tmp_path):
    """A 300 x 330 px scene and a 'masks' layer of 3 pseudo-classes: squares crossing chip edges,
    one object with a hole, one object of another scene (must be ignored)."""
    scene = write_scene(tmp_path / "a.tif", class_pattern(300, 330))
    t = TRAIN_TRANSFORM

    def px_box(c0, r0, c1, r1):
        (x0, y0), (x1, y1) = t * (c0, r0), t * (c1, r1)
        return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    objects = [
        (0, px_box(10, 10, 60, 40)),                                # inside chip (0, 0)
        (1, px_box(100, 20, 170, 90)),                              # crosses the chip edge at col 128
        (2, px_box(200, 200, 260, 290).difference(px_box(220, 220, 240, 240))),  # a hole
        (1, px_box(290, 5, 330, 60)),                               # in the last (shifted back) column
    ]
    frame = gpd.GeoDataFrame({"pseudo_class": [k for k, _ in objects], "scene": ["a.tif"] * len(objects)},
                             geometry=[g for _, g in objects], crs=CRS)
    other = gpd.GeoDataFrame({"pseudo_class": [0], "scene": ["b.tif"]}, geometry=[px_box(0, 0, 300, 300)], crs=CRS)
    path = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(pd_concat([frame, other]), crs=CRS).to_file(path, layer="masks")
    return scene, path, objects


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _export(labelled, out, *extra):
    scene, labels, _ = labelled
    return CliRunner().invoke(main, ["export-chips", str(labels), str(scene), "-o", str(out), "--chip-size", "128",
                                     "--block-chips", "1", "--val-fraction", "0.3", "--seed", "5", *extra])


def _query(dataset, left: float, bottom: float, right: float, top: float) -> dict:
    """A map-unit box of a torchgeo dataset: slices (x, y) from torchgeo 0.8, a 3-D
    ``BoundingBox`` (x, y, time) before it (0.7)."""
    from torchgeo.datasets import BoundingBox

    if hasattr(dataset.bounds, "mint"):  # torchgeo 0.7: the index has a time axis
        return dataset[BoundingBox(left, right, bottom, top, dataset.bounds.mint, dataset.bounds.maxt)]
    return dataset[left:right, bottom:top]


def test_chips_masks_and_coco_read_back(tmp_path, labelled):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from torchgeo.datasets import RasterDataset

    scene, _, objects = labelled
    out = tmp_path / "chips"
    result = _export(labelled, out)
    assert result.exit_code == 0, result.output
    names = sorted(p.stem for p in (out / "images").iterdir())
    assert names == sorted(p.stem for p in (out / "masks").iterdir())
    assert len(names) == 9  # 3 x 3 chips of 128 px over 300 x 330 px (last row and column shifted back)

    # torchgeo reads the chips on the scene grid: the scene's own pixels, and the mask classes
    images = RasterDataset(paths=str(out / "images"), res=(0.73, 0.61))
    masks = RasterDataset(paths=str(out / "masks"), res=(0.73, 0.61))
    masks.is_image = False
    with rasterio.open(scene) as src:
        data = src.read()
    with rasterio.open(out / "images" / "a_r0_c1.tif") as chip:
        assert chip.crs == src.crs and chip.transform == TRAIN_TRANSFORM * rasterio.Affine.translation(128, 0)
        assert np.array_equal(chip.read(), data[:, 0:128, 128:256])
        left, bottom, right, top = chip.bounds
    pad = 1e-6
    sample = _query(images, left + pad, bottom + pad, right - pad, top - pad)
    assert np.array_equal(sample["image"].numpy().astype(np.uint16), data[:, 0:128, 128:256])
    mask = _query(masks, left + pad, bottom + pad, right - pad, top - pad)["mask"].numpy().squeeze()
    assert mask.shape == (128, 128)
    # object 1 (class 1, pixels cols 100-170, rows 20-90) appears in this chip as value 2 on cols 128-170
    assert (mask[20:90, 0:42] == 2).all() and (mask[20:90, 42:] == 0).all()

    # COCO: polygons inside their chips, areas matching the masks
    total = 0
    for split in ("train", "val"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["pseudo 0", "pseudo 1", "pseudo 2"]
        for ann in coco.loadAnns(coco.getAnnIds()):
            total += 1
            image = coco.loadImgs(ann["image_id"])[0]
            if isinstance(ann["segmentation"], list):
                xy = np.concatenate([np.reshape(p, (-1, 2)) for p in ann["segmentation"]])
                assert (xy >= 0).all() and (xy[:, 0] <= image["width"]).all() and (xy[:, 1] <= image["height"]).all()
            drawn = coco.annToMask(ann)
            with rasterio.open(out / image["mask_file"]) as m:
                chip_mask = m.read(1)
            assert (chip_mask[drawn > 0] == ann["category_id"]).mean() > 0.95
            assert abs(drawn.sum() - ann["area"]) <= 0.05 * ann["area"] + 2
    # chips cover cols [0,128) [128,256) [202,330) and rows [0,128) [128,256) [172,300): object 0 is in one
    # chip, object 1 in two (cut at col 128), the holed object 2 in four (the shifted-back chips overlap), 3 in one
    assert total == 1 + 2 + 4 + 1
    holed = [a for s in ("train", "val") for a in json.loads((out / "annotations" / f"instances_{s}.json").read_text())
             ["annotations"] if isinstance(a["segmentation"], dict)]
    assert len(holed) >= 1 and mask_utils.area(mask_utils.frPyObjects(holed[0]["segmentation"], 128, 128)) == holed[0]["area"]


def test_split_is_seeded_blocks_and_complete(tmp_path, labelled):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _export(labelled, a).exit_code == 0 and _export(labelled, b).exit_code == 0
    assert _export(labelled, c, "--seed", "6").exit_code == 0
    split = {d: {s: (d / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val")} for d in (a, b, c)}
    assert split[a] == split[b] and split[a] != split[c]
    assert not set(split[a]["train"]) & set(split[a]["val"]) and len(split[a]["train"]) + len(split[a]["val"]) == 9
    assert len(split[a]["val"]) == 3  # 30 % of 9 one-chip blocks


def test_existing_output_is_refused_and_kept(tmp_path, labelled):
    out = tmp_path / "chips"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _export(labelled, out)
    assert result.exit_code == OutputError.exit_code and "--overwrite" in result.stderr
    assert result.stderr.count("\n") == 1 and (out / "keep.txt").read_text() == "mine"
