"""geoalps.train.data: pairing checks, spatial regions, pixel-exact tiles, vector labels, ignore values."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from geoalps.errors import InputError
from geoalps.train import data as gdata

from train.train_scenes import CRS, TRAIN_TRANSFORM, class_pattern, write_labels, write_scene
from train.train_scenes import _train_test_environment, scene  # noqa: F401 - fixtures used by name


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(transform=TRAIN_TRANSFORM * Affine.translation(1, 0)), "origin/pixel"),
        (dict(crs="EPSG:32634"), "CRS"),
        (dict(shape=(150, 172)), "size"),
    ],
)
def test_label_raster_on_another_grid_is_refused(tmp_path, scene, change, message):
    image, _, classes = scene
    shape = change.pop("shape", classes.shape)
    labels = write_labels(tmp_path / "off.tif", classes[: shape[0], : shape[1]], **change)
    with pytest.raises(InputError, match=f"not on the grid.*{message}") as err:
        gdata.open_training_data([image], [labels])
    assert str(labels) in str(err.value) and "never resampled" in str(err.value)


def test_band_counts_must_agree(tmp_path):
    classes = class_pattern(80, 80)
    a, b = write_scene(tmp_path / "a.tif", classes, bands=4), write_scene(tmp_path / "b.tif", classes, bands=5)
    with pytest.raises(InputError, match="same bands"):
        gdata.open_training_data([a, b])


def test_regions_split_validation_strip_and_training_part(scene):
    data = gdata.open_training_data([scene[0]], [scene[1]])
    regions = gdata.split_regions(data, tile_px=64, val_fraction=0.2)
    # Validation: the bottom 64 px (20 % of 150 is less than a tile), full width; training: the rest.
    assert regions.val == [gdata.PixelBox(0, 0, 150 - 64, 173, 64)]
    assert regions.train == [gdata.PixelBox(0, 0, 0, 173, 150 - 64)]
    assert regions.to_dict() == {"train": [[0, 0, 0, 173, 86]], "val": [[0, 0, 86, 173, 64]]}


def test_few_labels_are_scattered_tile_cells(tmp_path):
    classes = class_pattern(256, 256)
    data = gdata.open_training_data([write_scene(tmp_path / "s.tif", classes)], [write_labels(tmp_path / "l.tif", classes)])
    regions = gdata.split_regions(data, tile_px=64, val_fraction=0.25, label_fraction=0.25, seed=3)
    cells = set()
    for box in regions.train:
        assert (box.width, box.height) == (64, 64)
        assert box.col_off % 64 == 0 and box.row_off % 64 == 0 and box.row_off + 64 <= 256 - 64  # above validation
        cells.add((box.row_off, box.col_off))
    assert len(cells) == 4  # 25 % of 256 x 256 px is four 64 px cells, all different
    assert gdata.split_regions(data, 64, 0.25, 0.25, seed=3).train == regions.train
    assert gdata.split_regions(data, 64, 0.25, 0.25, seed=4).train != regions.train

    # The sampler draws exactly those cells, never the space between them, and every cell in time.
    loader = gdata.train_loader(data, regions, 64, batch_size=8, steps=4, generator=torch.Generator().manual_seed(0))
    drawn = {(int(row), int(col)) for batch in loader for _, col, row, _, _ in batch["box"].tolist()}
    assert drawn == cells


def test_training_tiles_are_whole_scene_pixels(scene):
    image, labels, classes = scene
    data = gdata.open_training_data([image], [labels])
    regions = gdata.split_regions(data, 64, val_fraction=0.2)
    loader = gdata.train_loader(data, regions, 64, batch_size=3, steps=4, generator=torch.Generator().manual_seed(0))
    seen = set()
    with rasterio.open(image) as src:
        for batch in loader:
            for i, (index, col, row, width, height) in enumerate(batch["box"].tolist()):
                assert (index, width, height) == (0, 64, 64)
                assert row + 64 <= 150 - 64  # never in the validation strip
                expected = src.read(window=rasterio.windows.Window(col, row, 64, 64))
                assert batch["image"][i].shape == (4, 64, 64)
                assert np.array_equal(batch["image"][i].numpy(), expected.astype(np.float32))
                assert np.array_equal(batch["mask"][i].numpy(), classes[row : row + 64, col : col + 64])
                seen.add((col, row))
    assert len(seen) > 6  # 12 draws of 110 x 23 positions: random offsets, not a fixed grid


def test_the_loader_draws_on_each_epoch_and_repeats_with_the_seed(scene):
    data = gdata.open_training_data([scene[0]], [scene[1]])
    regions = gdata.split_regions(data, 64, val_fraction=0.2)

    def epochs(seed):
        loader = gdata.train_loader(data, regions, 64, batch_size=2, steps=2, generator=torch.Generator().manual_seed(seed))
        return [[tuple(b) for batch in loader for b in batch["box"].tolist()] for _ in range(2)]

    first, second = epochs(5)
    assert first != second  # one loader per run: iterating again is a new epoch of tiles
    assert epochs(5) == [first, second] and epochs(6)[0] != first


def test_validation_tiles_score_every_strip_pixel_once(tmp_path):
    classes = class_pattern(200, 150)
    data = gdata.open_training_data([write_scene(tmp_path / "s.tif", classes)], [write_labels(tmp_path / "l.tif", classes)])
    regions = gdata.split_regions(data, 64, val_fraction=0.45)  # a 90 px strip: two tile rows, shifted back
    (strip,) = regions.val
    loader = gdata.val_loader(data, regions, 64, batch_size=4)
    prep = gdata.BatchPrep([0.0] * 4, [1.0] * 4, image_nodata=None, n_classes=3)
    scored = np.zeros((200, 150), dtype=np.int64)
    for batch in loader:
        _, y, _ = prep(batch)
        for i, (_, col, row, width, height) in enumerate(batch["box"].tolist()):
            assert (width, height) == (64, 64) and strip.row_off <= row <= 200 - 64
            keep = (y[i] != gdata.IGNORE_INDEX).numpy()
            assert np.array_equal(y[i].numpy()[keep], classes[row : row + 64, col : col + 64][keep])
            scored[row : row + 64, col : col + 64] += keep
    assert (scored[strip.row_off :] == 1).all() and (scored[: strip.row_off] == 0).all()


def test_nodata_ignore_value_and_invalid_pixels_become_ignore_index():
    image = torch.full((1, 2, 4, 4), 5.0)
    image[0, :, 0, 0] = 0  # image nodata
    mask = torch.tensor([[[255, 1, 2, 7], [0, 1, 2, 0], [0, 0, 0, 0], [1, 1, 1, 1]]])
    prep = gdata.BatchPrep([5.0, 5.0], [1.0, 1.0], image_nodata=0, label_nodata=7, ignore_value=2, n_classes=3)
    x, y, valid = prep({"image": image, "mask": mask})
    ignored = y == gdata.IGNORE_INDEX
    assert ignored[0, 0].tolist() == [True, False, True, True]  # nodata image, class 1, ignore 2, label nodata 7
    assert ignored[0, 1:].sum() == 1  # the other 2
    assert not valid[0, 0, 0] and x[0, :, 0, 0].abs().sum() == 0


def test_vector_ground_truth_is_rasterized_on_the_image_grid(tmp_path):
    classes = class_pattern(128, 128)
    image = write_scene(tmp_path / "scene.tif", classes)
    t = TRAIN_TRANSFORM
    # Two buildings on pixel edges: rows 10..30 x cols 20..50 (class 2), rows 70..100 x cols 60..90 (class 1).
    def pixel_box(r0, c0, r1, c1):
        (x0, y0), (x1, y1) = t * (c0, r0), t * (c1, r1)
        return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    frame = gpd.GeoDataFrame({"kind": [2, 1]}, geometry=[pixel_box(10, 20, 30, 50), pixel_box(70, 60, 100, 90)], crs=CRS)
    # Extend the layer's extent to the whole scene with a class-1 sliver in the corner.
    frame = gpd.GeoDataFrame(
        {"kind": [2, 1, 1]}, geometry=[*frame.geometry, pixel_box(0, 0, 1, 1).union(pixel_box(127, 127, 128, 128))], crs=CRS
    )
    path = tmp_path / "buildings.gpkg"
    frame.to_file(path, driver="GPKG")
    data = gdata.open_training_data([image], [path], label_column="kind")
    assert data.n_classes == 3
    (query,) = gdata.plan_queries([gdata.PixelBox(0, 0, 0, 128, 128)], 128)
    mask = data.dataset[query]["mask"]
    expected = np.zeros((128, 128), dtype=np.int64)
    expected[10:30, 20:50] = 2
    expected[70:100, 60:90] = 1
    expected[0, 0] = expected[127, 127] = 1
    assert np.array_equal(mask, expected)


def test_vector_labels_need_integer_ids_from_one(tmp_path):
    image = write_scene(tmp_path / "scene.tif", class_pattern(64, 64))
    frame = gpd.GeoDataFrame({"kind": [0]}, geometry=[shapely.box(*rasterio.open(image).bounds)], crs=CRS)
    frame.to_file(tmp_path / "v.gpkg", driver="GPKG")
    with pytest.raises(InputError, match=">= 1"):
        gdata.open_training_data([image], [tmp_path / "v.gpkg"], label_column="kind")


def test_rotated_scene_is_refused(tmp_path):
    rotated = Affine(0.5, 0.1, 1000, 0.1, -0.5, 2000)
    image = write_scene(tmp_path / "r.tif", class_pattern(64, 64), transform=rotated)
    with pytest.raises(InputError, match="rotated"):
        gdata.open_north_up(image)


def test_a_single_labelled_class_is_refused_with_a_hint(tmp_path):
    # A building mask whose background 0 is tagged nodata: only class 1 would be seen.
    classes = (class_pattern(64, 64, n_classes=2) > 0).astype(np.uint8)
    image = write_scene(tmp_path / "s.tif", classes)
    labels = write_labels(tmp_path / "b.tif", classes, nodata=0)
    with pytest.raises(InputError, match="single class.*unsetnodata"):
        gdata.open_training_data([image], [labels])


def test_scenes_in_other_crss_are_each_tiled_on_their_own_grid(tmp_path):
    # Nothing is warped: a second scene in another UTM zone, with other pixel sizes, gives its own pixels.
    a, b = class_pattern(128, 128, seed=1), class_pattern(96, 160, seed=2)
    other = Affine(0.5, 0.0, 300017.3, 0.0, -0.45, 4200031.9)
    images = [write_scene(tmp_path / "a.tif", a), write_scene(tmp_path / "b.tif", b, transform=other, seed=2)]
    with rasterio.open(images[1], "r+") as dst:
        dst.crs = "EPSG:32634"
    labels = [write_labels(tmp_path / "a.l.tif", a), write_labels(tmp_path / "b.l.tif", b, transform=other, crs="EPSG:32634")]
    data = gdata.open_training_data(images, labels)
    regions = gdata.split_regions(data, 64, val_fraction=0)
    assert regions.train == [gdata.PixelBox(0, 0, 0, 128, 128), gdata.PixelBox(1, 0, 0, 160, 96)]
    loader = gdata.train_loader(data, regions, 64, batch_size=4, steps=4, generator=torch.Generator().manual_seed(1))
    seen = set()
    for batch in loader:
        for i, (index, col, row, _, _) in enumerate(batch["box"].tolist()):
            classes = (a, b)[index]
            with rasterio.open(images[index]) as src:
                expected = src.read(window=rasterio.windows.Window(col, row, 64, 64))
            assert np.array_equal(batch["image"][i].numpy(), expected.astype(np.float32))
            assert np.array_equal(batch["mask"][i].numpy(), classes[row : row + 64, col : col + 64])
            seen.add(index)
    assert seen == {0, 1}


def test_each_scene_is_read_once_for_its_statistics(scene, monkeypatch):
    """Opening the training data and the band statistics for normalisation read each scene's
    pixels once (open_scene's decimated read), not once more for mean/std."""
    from rasterio.io import DatasetReader

    image, labels, _ = scene
    reads: list[str] = []
    read = DatasetReader.read

    def counted(self, *args, **kwargs):
        reads.append(self.name)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(DatasetReader, "read", counted)
    data = gdata.open_training_data([image])
    mean, std = gdata.band_statistics(data.scenes)
    assert reads.count(str(image)) == 1
    with rasterio.open(image) as src:
        values = src.read().astype(np.float64)  # 150 x 173 px: the statistics read is the whole scene
    np.testing.assert_allclose(mean, values.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, values.std(axis=(1, 2)), rtol=1e-12)
