"""The classical engine: region sizes from the ground resolution, boundaries from every band."""
from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from conftest import scene_with_objects, write_raster
from geoalps.engines import EngineTile
from geoalps.engines.classical import (REGION_MAX_PX, REGION_MIN_PX, REGION_NO_CRS_PX, SPLIT_REGION_FACTOR,
                                      ClassicalEngine, region_scale, split_by_clusters)
from geoalps.inputs.scene import open_scene
from geoalps.inputs.bands import stretch_to_uint8
from geoalps.labelling.tile_work import all_bands_uint8, engine_tile, pixel_size_m
from geoalps.options import MIN_AREA_PX_DEFAULT, LabelOptions


def test_region_size_follows_the_ground_resolution():
    landsat, spacenet, aerial = (region_scale(200.0, size) for size in (30.0, 0.5, 0.1))
    assert landsat[1] == REGION_MIN_PX and aerial[1] == REGION_MAX_PX
    assert landsat[1] <= spacenet[1] <= aerial[1]
    assert landsat[0] <= spacenet[0] <= aerial[0]
    # No resolution (pixel coordinates): the fixed settings of earlier versions.
    assert region_scale(200.0, None) == (200.0, REGION_NO_CRS_PX)


@pytest.mark.parametrize("crs, transform, expected_m", [
    ("EPSG:32633", Affine(0.5, 0, 500000, 0, -0.5, 4100000), 0.5),
    ("EPSG:2249", Affine(2.0, 0, 700000, 0, -2.0, 2900000), 2.0 * 0.3048006),  # US survey feet
    ("EPSG:4326", Affine(1e-4, 0, 10.0, 0, -1e-4, 60.0), 1e-4 * 111320 * np.sqrt(0.5)),  # 60 deg N
    (None, Affine(1, 0, 0, 0, 1, 0), None),
])
def test_pixel_size_in_metres(tmp_path, crs, transform, expected_m):
    path = write_raster(tmp_path / "s.tif", np.ones((1, 8, 8), np.uint8), transform=transform, crs=crs)
    scene = open_scene(str(path), allow_pixel_coords=crs is None)
    got = pixel_size_m(scene)
    assert got == pytest.approx(expected_m, rel=1e-3) if expected_m else got is None


def _nir_tile():
    """Two halves of identical RGB; only the NIR band tells them apart (vegetation vs roof)."""
    rng = np.random.default_rng(0)
    data = np.full((4, 96, 96), 120, np.uint8)
    data[3, :, :48], data[3, :, 48:] = 40, 220
    data = np.clip(data + rng.integers(-3, 4, data.shape), 0, 255).astype(np.uint8)
    valid = np.ones((96, 96), bool)
    bands = np.moveaxis(data, 0, -1).copy()
    return bands[..., :3].copy(), bands, valid


def test_nir_separates_regions_of_the_same_colour():
    rgb, bands, valid = _nir_tile()
    engine = ClassicalEngine(LabelOptions(engine="classical", min_area_px=16).validated())
    with_nir = engine.generate_tiles([EngineTile(rgb, valid, bands, 0.5)])[0].index_image()
    rgb_only = engine.generate_tiles([EngineTile(rgb, valid, None, 0.5)])[0].index_image()
    left, right = with_nir[:, :40], with_nir[:, 56:]
    assert not np.isin(np.unique(left), np.unique(right)).any(), "NIR edge must split the halves"
    assert len(np.unique(rgb_only)) < len(np.unique(with_nir))


def test_all_bands_keep_the_scene_stretch(tmp_path):
    data = np.stack([np.arange(64, dtype=np.uint16).reshape(8, 8) * (b + 1) for b in range(5)])
    scene = open_scene(str(write_raster(tmp_path / "b.tif", data)))
    valid = np.ones((8, 8), bool)
    out = all_bands_uint8(data, valid, scene)
    assert out.shape == (8, 8, 5) and out.dtype == np.uint8
    for band in range(5):
        lo, hi = scene.stats.low[band], scene.stats.high[band]
        expected = np.clip(np.rint((data[band] - lo) * 255.0 / (hi - lo)), 0, 255)
        assert np.abs(out[..., band].astype(int) - expected).max() <= 1


@pytest.mark.parametrize("bands", [(3, 2, 1), (4, 4, 4), (5, 1, 2)])
def test_an_engine_wanting_every_band_sees_the_same_view_as_one_that_does_not(tmp_path, bands):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (5, 16, 24)).astype(np.uint16)
    data[:, :3, :5] = 0
    scene = open_scene(str(write_raster(tmp_path / "b.tif", data, nodata=0)))
    valid = (data != 0).all(axis=0)
    every = engine_tile(scene, data, valid, bands, True, 0.5)
    rgb_only = engine_tile(scene, data, valid, bands, False, 0.5)
    assert rgb_only.bands is None and every.bands.shape == (16, 24, 5)
    assert np.array_equal(every.rgb, stretch_to_uint8(data, valid, bands, scene.stats))
    assert np.array_equal(every.rgb, rgb_only.rgb) and not every.rgb[:3, :5].any() and every.rgb.std() > 20


def test_smallest_mask_follows_resolution_unless_given():
    auto = ClassicalEngine(LabelOptions(engine="classical").validated())
    assert auto.min_mask_px(30.0) == REGION_MIN_PX and auto.min_mask_px(0.1) == REGION_MAX_PX
    assert auto.min_mask_px(None) == MIN_AREA_PX_DEFAULT
    given = ClassicalEngine(LabelOptions(engine="classical", min_area_px=40).validated())
    assert given.min_mask_px(30.0) == given.min_mask_px(0.1) == 40


def test_largest_mask_kept_by_default_for_a_partition_not_for_sam():
    """ALPS drops masks over 0.3 of the tile (SAM's tile-sized masks are background); the
    classical engine's regions partition the tile, so by default it keeps every one. A given
    ``--max-area-frac`` holds for both."""
    from geoalps.engines.base import MaskEngine

    assert ClassicalEngine(LabelOptions(engine="classical").validated()).max_mask_frac() == 1.0
    assert MaskEngine.max_mask_frac_default == 0.3  # the SAM engines inherit ALPS's threshold
    given = ClassicalEngine(LabelOptions(engine="classical", max_area_frac=0.25).validated())
    assert given.max_mask_frac() == 0.25


def test_a_cover_of_most_of_the_scene_keeps_its_label(tmp_path):
    """A field of 90 % of a one-tile scene with two small roofs: with the default every valid
    pixel of the label raster has a class and the field is one polygon of its area; with
    ALPS's 0.3 it is dropped and leaves a hole of its size."""
    import geopandas as gpd
    import rasterio

    from geoalps import label

    data = scene_with_objects(160, 160, [(20, 20, 44, 44), (100, 110, 124, 134)], seed=3)
    scene = write_raster(tmp_path / "field.tif", data, transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000))
    for given, expect_hole in ((None, False), (0.3, True)):
        out = tmp_path / f"out_{given}"
        out.mkdir()
        label([scene], out / "o.gpkg", raster_out=out / "l.tif", engine="classical", classes=2,
              max_area_frac=given, quiet=True)
        with rasterio.open(out / "l.tif") as ds:
            unlabelled = float((ds.read(1) == ds.nodata).mean())
        areas_m2 = gpd.read_file(out / "o.gpkg", layer="masks").area.to_numpy()
        field_m2 = 160 * 160 * 0.25 - 2 * 24 * 24 * 0.25
        if expect_hole:
            assert unlabelled > 0.8 and areas_m2.max() < 0.3 * 160 * 160 * 0.25
        else:
            assert unlabelled == 0.0
            assert areas_m2.max() == pytest.approx(field_m2, rel=0.02)


def test_settings_decide_the_regions():
    """``settings`` is the one door to the segmentation settings: the resolution rule's values by
    default, and what an override returns is what ``segment`` uses (the engine sweep relies on it)."""
    from geoalps.engines.classical import RegionSettings

    engine = ClassicalEngine(LabelOptions(engine="classical", classical_split=False).validated())
    scale, min_size = region_scale(engine.options.classical_scale, 0.1)
    assert engine.settings(0.1) == RegionSettings(scale, min_size, ClassicalEngine.sigma,
                                                  ClassicalEngine.merge_colour_distance, 0)
    split = ClassicalEngine(LabelOptions(engine="classical").validated())  # the split is the default
    assert split.settings(0.1).split_min_px == SPLIT_REGION_FACTOR * min_size
    rgb, bands, valid = _nir_tile()
    tile = EngineTile(rgb, valid, bands, 0.5)

    class Merged(ClassicalEngine):
        def settings(self, pixel_size_m):
            return super().settings(pixel_size_m)._replace(merge_distance=1e6, split_min_px=0)

    default = engine.generate_tiles([tile])[0]
    merged = Merged(engine.options).generate_tiles([tile])[0]
    assert len(default) >= 2 and len(merged) == 1, "a merge distance above every contrast joins all"


def _two_covers(size: int = 192, ramp_px: int = 24):
    """Grass-green left, grey dirt right, of the same brightness, blended over a soft ramp with
    noise: no edge strong enough for felzenszwalb or the merge. Returns (bands, truth)."""
    rng = np.random.default_rng(1)
    t = np.clip((np.arange(size) - (size - ramp_px) / 2) / ramp_px, 0, 1)[None, :, None]
    green, grey = np.array([50, 95, 45], float), np.array([68, 60, 66], float)
    image = (1 - t) * green + t * grey + rng.normal(0, 3, (size, size, 3))
    truth = np.broadcast_to(np.arange(size)[None, :] >= size // 2, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _purity(regions: np.ndarray, truth: np.ndarray) -> float:
    """Share of pixels in their region's majority class (the segment oracle's pixel accuracy)."""
    table = np.zeros((regions.max() + 1, 2))
    np.add.at(table, (regions.ravel(), truth.ravel().astype(int)), 1)
    return table.max(axis=1).sum() / table.sum()


def test_large_regions_are_split_where_the_surface_changes():
    """A region far larger than an object that straddles two covers of the same brightness is
    cut along the tile's spectral clusters; without the split it stays one mixed region."""
    bands, truth = _two_covers()
    valid = np.ones(truth.shape, bool)
    engine = ClassicalEngine(LabelOptions(engine="classical", classical_split=True).validated())

    class Unsplit(ClassicalEngine):
        def settings(self, pixel_size_m):
            return super().settings(pixel_size_m)._replace(split_min_px=0)

    tile = EngineTile(bands, valid, bands, 0.5)
    split = engine.generate_tiles([tile])[0].index_image()
    unsplit = Unsplit(engine.options).generate_tiles([tile])[0].index_image()
    assert _purity(unsplit, truth) < 0.8, "the fixture must fool the first cut and the merge"
    assert _purity(split, truth) > 0.9
    assert (split > 0).all(), "the split regions still cover the tile"
    again = engine.generate_tiles([tile])[0].index_image()
    np.testing.assert_array_equal(again, split)  # deterministic: no seed, same regions


def test_only_regions_above_the_split_size_are_split():
    """split_by_clusters cuts a large two-cover region but leaves an object-sized one whole
    (a roof or crown with two kinds of pixels stays one object)."""
    bands, truth = _two_covers(size=96, ramp_px=2)
    labels = np.ones(truth.shape, np.int64)
    labels[:, 48:] = 1
    labels[:24, :] = 2  # a small region (24 x 96) straddling both covers
    fine = truth.astype(np.int64) + 1 + 2 * (labels == 2)  # units: each cover inside each region
    out = split_by_clusters(bands.astype(np.float32), labels, fine, split_min_px=3000, min_size_px=16,
                            merge_distance=10.0)
    small, large = out[:24], out[24:]
    assert len(np.unique(small)) == 1, "a region under split_min_px stays whole"
    assert len(np.unique(large)) == 2 and _purity(large, truth[24:]) == 1.0


def test_a_uniform_noisy_surface_is_not_split():
    """k-means cuts pure noise too; clusters closer than the merge distance are one surface, so a
    large region of one cover stays one region (noise of 8 on 0..255 values)."""
    rng = np.random.default_rng(2)
    image = np.clip(np.array([90.0, 120.0, 70.0]) + rng.normal(0, 8, (128, 128, 3)), 0, 255).astype(np.float32)
    labels = np.ones((128, 128), np.int64)
    fine = (np.arange(128 * 128).reshape(128, 128) // 64 % 97).astype(np.int64)  # many small units
    out = split_by_clusters(image, labels, fine, split_min_px=1000, min_size_px=16, merge_distance=10.0)
    assert len(np.unique(out)) == 1
    split = split_by_clusters(image, labels, fine, split_min_px=1000, min_size_px=16, merge_distance=0.0)
    assert len(np.unique(split)) > 1, "without the surface rule k-means would cut the noise"


def test_a_flat_tile_splits_into_nothing_and_warns_nothing():
    """A tile of one value has one kind of unit: no k-means (which would warn about fewer distinct
    points than clusters), the regions come back as they were."""
    import warnings

    image = np.full((64, 64, 3), 100.0, np.float32)
    labels = np.ones((64, 64), np.int64)
    labels[:, 32:] = 2
    fine = (np.arange(64 * 64).reshape(64, 64) // 16 % 7).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = split_by_clusters(image, labels, fine, split_min_px=100, min_size_px=16, merge_distance=10.0)
    np.testing.assert_array_equal(out, labels)


def _block_units(shape: tuple[int, int], side_px: int) -> np.ndarray:
    """Fine units for the split's tests: ids of ``side_px`` square blocks from the top-left (any
    label image of the tile can be the split's units; the engine's are a finer felzenszwalb)."""
    per_row = -(-shape[1] // side_px)
    return (np.arange(shape[0]) // side_px)[:, None] * per_row + (np.arange(shape[1]) // side_px)[None, :]


def test_a_large_region_is_cut_along_the_cover_edge_within_one_unit():
    """Two covers of the same brightness (different band shares) in one large region: the block
    units cut it into the two covers, off the true edge by at most one block side, though the
    edge (column 51) runs through blocks of 6 px (those mixed blocks may make a strip of their own,
    never wider than a block)."""
    rng = np.random.default_rng(3)
    size, edge, side = 120, 51, 6
    image = np.empty((size, size, 3))
    image[:, :edge], image[:, edge:] = [50, 95, 45], [68, 60, 66]
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.float32)
    labels = np.ones((size, size), np.int64)
    out = split_by_clusters(image, labels, _block_units(labels.shape, side), split_min_px=2000,
                            min_size_px=36, merge_distance=10.0)
    left, right = out[:, : edge - side], out[:, edge + side:]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    strip = np.nonzero(~np.isin(out, [left[0, 0], right[0, 0]]))[1]
    assert strip.size == 0 or (strip.min() >= edge - side and strip.max() < edge + side)
    truth = np.broadcast_to(np.arange(size)[None, :] >= edge, (size, size))
    assert _purity(out, truth) > 0.95


def test_the_split_leaves_a_uniform_noisy_tile_as_the_first_cut_made_it():
    """Through the engine: one cover with pixel noise (8 on 0..255), far larger than the split
    size, comes out with exactly the regions the engine makes without the split."""
    rng = np.random.default_rng(4)
    bands = np.clip(np.array([90.0, 120.0, 70.0]) + rng.normal(0, 8, (160, 160, 3)), 0, 255).astype(np.uint8)
    valid = np.ones((160, 160), bool)
    engine = ClassicalEngine(LabelOptions(engine="classical", classical_split=True).validated())

    class Unsplit(ClassicalEngine):
        def settings(self, pixel_size_m):
            return super().settings(pixel_size_m)._replace(split_min_px=0)

    tile = EngineTile(bands, valid, bands, 0.5)
    settings = engine.settings(0.5)
    unsplit = Unsplit(engine.options).generate_tiles([tile])[0].index_image()
    assert np.bincount(unsplit.ravel()).max() >= settings.split_min_px, "the fixture must reach the split"
    split = engine.generate_tiles([tile])[0].index_image()
    np.testing.assert_array_equal(split, unsplit)


def test_object_sized_regions_are_never_cut_by_block_units():
    """A region under the split size that holds two covers (a roof half in shade of another
    material, a crown over soil) stays one region; the large region beside it is cut."""
    bands, truth = _two_covers(size=96, ramp_px=2)
    labels = np.ones(truth.shape, np.int64)
    labels[:24, 30:66] = 2  # 24 x 36 px across the cover edge at column 48
    out = split_by_clusters(bands.astype(np.float32), labels, _block_units(labels.shape, 4), split_min_px=3000,
                            min_size_px=16, merge_distance=10.0)
    assert len(np.unique(out[:24, 30:66])) == 1 and not np.isin(out[:24, 30:66], out[24:]).any()
    large = out[24:]
    assert len(np.unique(large)) == 2 and _purity(large, truth[24:]) > 0.97


def test_merging_connected_pieces_with_nothing_to_join_reuses_them():
    """RegionGraph(connected=True).merged(0, m) (the split's last step, which skips one labelling
    and one graph) gives exactly what the general path gives: small pieces joined to their most
    similar neighbour, numbered 1..L."""
    from skimage.measure import label as connected_label

    from geoalps.engines.classical import RegionGraph

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 4, (12, 12)).repeat(4, axis=0).repeat(4, axis=1)  # 4 px blocks of 4 kinds
    codes[rng.random(codes.shape) < 0.02] = 9  # single-pixel specks under the smallest piece
    pieces = connected_label(codes + 1, background=0, connectivity=1)
    image = rng.normal(100, 20, (48, 48, 3)).astype(np.float32)
    general = RegionGraph(image, pieces).merged(0.0, 6)
    reused = RegionGraph(image, pieces, connected=True).merged(0.0, 6)
    np.testing.assert_array_equal(reused, general)
    assert np.bincount(reused.ravel())[1:].min() >= 6 and reused.max() < pieces.max()


def test_small_pieces_that_are_each_others_nearest_still_join_a_region():
    """Two specks of one colour inside a field of another are each other's most similar
    neighbour: one pass pairs them into a group still under the smallest region, which the area
    filter then dropped, leaving valid pixels unlabelled. They must end in a region of at least
    the smallest size (the field's), and the two large regions must stay apart."""
    from geoalps.engines.classical import RegionGraph

    image = np.zeros((20, 40, 3), np.float32)
    image[:, 20:] = 200.0  # two large fields, far apart in value
    pieces = np.ones((20, 40), np.int32)
    pieces[:, 20:] = 2
    pieces[5, 5], pieces[5, 6] = 3, 4  # a two-pixel speck cut in two pieces, near in value to each other
    image[5, 5:7] = 90.0
    pieces[12:14, 30] = 5, 5  # a speck in the other field, with no small neighbour
    image[12:14, 30] = 150.0
    merged = RegionGraph(image, pieces, connected=False).merged(0.0, 6)
    assert merged.min() >= 1 and len(np.unique(merged)) == 2
    assert merged[5, 5] == merged[5, 6] == merged[0, 0] and merged[12, 30] == merged[0, 39] != merged[0, 0]
    assert np.bincount(merged.ravel())[1:].min() >= 6


def test_no_valid_pixel_of_a_partition_is_left_unlabelled(tmp_path):
    """The classical engine's regions cover every valid pixel: the label raster has no hole inside
    the valid area. On this crop of the shipped sample, 48 pixels in specks that paired up below
    the smallest region were dropped by the area filter."""
    import rasterio

    import geoalps
    from conftest import REPO

    with rasterio.open(REPO / "sample_data" / "scene_rgbn_u16.tif") as src:
        data = src.read(window=((0, 256), (0, 256)))
    path = write_raster(tmp_path / "crop.tif", data, nodata=0)
    out = geoalps.label([str(path)], tmp_path / "o.gpkg", raster_out=tmp_path / "o.tif", classes=4, seed=0,
                        workers=1, quiet=True)
    with rasterio.open(tmp_path / "o.tif") as src:
        unlabelled = src.read(1) == src.nodata
    assert (data != 0).any(axis=0).all() and out.stats["objects"] > 10
    assert not unlabelled.any(), f"{unlabelled.sum()} valid pixels unlabelled"


@pytest.mark.parametrize("scale, min_size_px", [(12.5, 2), (6.0, 2), (50.0, 8)])
def test_felzenszwalb_on_the_once_smoothed_tile_gives_its_own_regions(scale, min_size_px):
    """The engine smooths a tile once for both felzenszwalb calls of the split and runs
    felzenszwalb with ``sigma=0``: the regions must be felzenszwalb's own, bit for bit. On this
    crop of the shipped sample, smoothing in float32 instead of felzenszwalb's float64 already
    changes the regions at the first two settings (tied edge costs break the other way)."""
    import warnings

    import rasterio
    from skimage.segmentation import felzenszwalb

    from conftest import REPO
    from geoalps.engines.classical import _felzenszwalb, _smoothed, scaled_bands

    with rasterio.open(REPO / "sample_data" / "scene_rgbn_u16.tif") as src:
        data = src.read().astype(np.float32)
    low, high = data.min(axis=(1, 2), keepdims=True), data.max(axis=(1, 2), keepdims=True)
    stretched = np.moveaxis((data - low) / (high - low + 1e-9) * 255, 0, -1)[512:768, :256]
    image = scaled_bands(stretched.astype(np.uint8))
    with warnings.catch_warnings():  # skimage warns about more than 3 channels: intended here
        warnings.simplefilter("ignore", RuntimeWarning)
        own = felzenszwalb(image, scale=scale, sigma=0.3, min_size=min_size_px, channel_axis=-1)
    assert np.array_equal(_felzenszwalb(_smoothed(image, 0.3), scale, min_size_px), own)


class _NoLargeRegion(ClassicalEngine):
    """The split on, but no region large enough to cut: the engine's path that only absorbs."""

    def settings(self, pixel_size_m):
        return super().settings(pixel_size_m)._replace(split_min_px=10**9)


@pytest.mark.parametrize("engine_class, split", [(ClassicalEngine, True), (ClassicalEngine, False), (_NoLargeRegion, True)])
def test_every_valid_pixel_is_in_a_region_of_the_smallest_size(engine_class, split):
    """Whichever path the engine takes (the split, no split, the split with nothing to cut), its
    regions cover every valid pixel and none is under the smallest region (the area filter
    would drop it and leave a hole). A crop of the shipped sample with a nodata corner."""
    import rasterio

    from conftest import REPO

    with rasterio.open(REPO / "sample_data" / "scene_rgbn_u16.tif") as src:
        data = src.read(window=((0, 256), (0, 256))).astype(np.float32)
    low, high = data.min(axis=(1, 2), keepdims=True), data.max(axis=(1, 2), keepdims=True)
    bands = np.moveaxis((data - low) / (high - low) * 255, 0, -1).astype(np.uint8)
    valid = np.ones((256, 256), bool)
    valid[:40, :60] = False
    engine = engine_class(LabelOptions(engine="classical", classical_split=split).validated())
    masks = engine.generate_tiles([EngineTile(bands[..., :3].copy(), valid, bands, 2.0)])[0]
    sizes = np.bincount(masks.labels.ravel())[1:]
    assert (masks.labels[valid] > 0).all() and not masks.labels[~valid].any()
    assert sizes.min() >= engine.settings(2.0).min_size_px and len(sizes) > 10
