"""End-to-end tests of geoalps.label with the weight-free classical engine."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from conftest import ODD_TRANSFORM, scene_with_objects, write_raster
from geoalps import label
from geoalps.errors import GeoAlpsError

FAST = dict(engine="classical", classes=3, quiet=True, min_area_px=30)


def _box_polygon(transform: Affine, r0, c0, r1, c1):
    corners = [transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
    return shapely.Polygon(corners)


def _best_match(gdf, truth):
    ious = shapely.area(shapely.intersection(gdf.geometry.values, truth)) / shapely.area(
        shapely.union(gdf.geometry.values, truth))
    return int(np.argmax(ious)), float(np.max(ious)), ious


def test_polygon_lands_exactly_on_the_burnt_square(tmp_path):
    data = scene_with_objects(120, 150, [(37, 53, 77, 101)])
    path = write_raster(tmp_path / "square.tif", data, transform=ODD_TRANSFORM)
    gdf = label(path, tmp_path / "out.gpkg", **FAST).gdf
    truth = _box_polygon(ODD_TRANSFORM, 37, 53, 77, 101)
    index, iou, _ = _best_match(gdf, truth)
    assert iou == pytest.approx(1.0)
    geom = gdf.geometry.iloc[index]
    # vertices are exactly the pixel corners: x0 + 53 * 0.37 etc.
    xs, ys = shapely.get_coordinates(geom).T
    assert xs.min() == pytest.approx(412345.67 + 53 * 0.37) and xs.max() == pytest.approx(412345.67 + 101 * 0.37)
    assert ys.max() == pytest.approx(5123456.78 - 37 * 0.53) and ys.min() == pytest.approx(5123456.78 - 77 * 0.53)
    assert gdf.area.iloc[index] == pytest.approx(40 * 48 * 0.37 * 0.53)
    assert gdf.crs.to_epsg() == 32633
    # the GeoPackage on disk says the same, in layer "masks", GPKG 1.2
    written = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="masks")
    assert written.crs.to_epsg() == 32633 and len(written) == len(gdf)
    for column in ("instance_id", "pseudo_class", "score", "area", "scene"):
        assert column in written.columns
    assert set(written["scene"]) == {"square.tif"}
    assert written["pseudo_class"].between(0, 2).all()
    assert written["instance_id"].is_unique
    import sqlite3

    with sqlite3.connect(tmp_path / "out.gpkg") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert db.execute("select count(*) from layer_styles").fetchone()[0] == 1


def test_rotated_transform_alignment(tmp_path):
    rotated = Affine(0.8, 0.3, 1000.0, 0.2, -0.9, 2000.0)
    data = scene_with_objects(100, 100, [(20, 30, 50, 70)])
    path = write_raster(tmp_path / "rot.tif", data, transform=rotated)
    gdf = label(path, None, **FAST).gdf
    _, iou, _ = _best_match(gdf, _box_polygon(rotated, 20, 30, 50, 70))
    assert iou == pytest.approx(1.0)


# objects placed across the tile borders of a 256 px / 64 px-overlap plan (windows start at
# 0, 192, 384; core cuts at 224 and 416), some wider than the overlap
SEAM_BOXES = [
    (40, 200, 90, 250),    # small, inside the overlap strip of two tiles
    (120, 150, 170, 330),  # 180 px wide across the first seam: cut by both tiles
    (200, 380, 330, 440),  # across the second column seam and the row seam
    (300, 60, 330, 110),   # far from any seam
    (400, 190, 470, 260),  # across a column seam near the bottom
]


@pytest.fixture
def seam_scene(tmp_path):
    data = scene_with_objects(512, 600, SEAM_BOXES, seed=3)
    return write_raster(tmp_path / "seams.tif", data)


@pytest.mark.parametrize("overlap", [64, 0])  # 0: fragments only touch across the seam
def test_objects_across_tile_borders_come_out_once(seam_scene, overlap):
    gdf = label(seam_scene, None, tile_size_px=256, overlap_px=overlap, **FAST).gdf
    for box in SEAM_BOXES:
        truth = _box_polygon(ODD_TRANSFORM, *box)
        _, best, ious = _best_match(gdf, truth)
        assert best > 0.97, f"object {box} not recovered whole (best IoU {best:.2f})"
        overlapping = shapely.area(shapely.intersection(gdf.geometry.values, truth)) > 0.05 * truth.area
        assert overlapping.sum() == 1, f"object {box} is split or duplicated into {overlapping.sum()} polygons"
    # no two output polygons overlap
    tree = shapely.STRtree(gdf.geometry.values)
    left, right = tree.query(gdf.geometry.values, predicate="overlaps")
    assert (shapely.area(shapely.intersection(gdf.geometry.values[left], gdf.geometry.values[right])) < 1e-6).all()


def test_tiling_does_not_change_the_objects(seam_scene):
    whole = label(seam_scene, None, tile_size_px=1024, overlap_px=128, **FAST).gdf
    tiled = label(seam_scene, None, tile_size_px=256, overlap_px=64, **FAST).gdf
    for box in SEAM_BOXES:
        truth = _box_polygon(ODD_TRANSFORM, *box)
        a = whole.geometry.values[_best_match(whole, truth)[0]]
        b = tiled.geometry.values[_best_match(tiled, truth)[0]]
        assert a.symmetric_difference(b).area < 1e-6


def test_same_inputs_same_output(seam_scene, tmp_path):
    first = label(seam_scene, tmp_path / "a.gpkg", tile_size_px=256, overlap_px=64, seed=7, **FAST).gdf
    second = label(seam_scene, tmp_path / "b.gpkg", tile_size_px=256, overlap_px=64, seed=7, **FAST).gdf
    assert first.drop(columns="geometry").equals(second.drop(columns="geometry"))
    assert all(a.equals(b) for a, b in zip(first.geometry, second.geometry))


def test_label_raster_is_on_the_scene_grid(seam_scene, tmp_path):
    gdf = label(seam_scene, tmp_path / "o.gpkg", raster_out=tmp_path / "o.tif", tile_size_px=256, overlap_px=64, **FAST).gdf
    with rasterio.open(seam_scene) as src, rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height)
        assert out.dtypes[0] == "uint8" and out.nodata == 255
        assert out.profile["tiled"] and out.compression is not None
        colours = out.colormap(1)
        assert len({colours[i] for i in range(3)}) == 3
        labels = out.read(1)
    assert set(np.unique(labels)) <= {0, 1, 2, 255}
    # every object's pixels carry its class
    for box in SEAM_BOXES:
        r0, c0, r1, c1 = box
        index = _best_match(gdf, _box_polygon(ODD_TRANSFORM, *box))[0]
        assert (labels[r0:r1, c0:c1] == gdf.pseudo_class.iloc[index]).mean() > 0.99
    assert (labels != 255).all()  # the background is a region of the partition too: it has a class
    qml = (tmp_path / "o.qml").read_text()  # QGIS default style beside the raster: K entries
    assert qml.count("<paletteEntry") == 3


def test_kmeans_model_is_reused_frozen(seam_scene, tmp_path):
    model = tmp_path / "km.joblib"
    first = label(seam_scene, None, tile_size_px=256, overlap_px=64, kmeans_model=model, **FAST).gdf
    assert model.exists()
    before = model.read_bytes()
    other = write_raster(tmp_path / "other.tif", scene_with_objects(400, 400, SEAM_BOXES[:2], seed=11))
    second = label(other, None, kmeans_model=model, **FAST).gdf
    assert model.read_bytes() == before, "a reused model must not be refitted"
    # the same-coloured object gets the same class in both scenes
    for box in SEAM_BOXES[:2]:
        truth = _box_polygon(ODD_TRANSFORM, *box)
        a = first.pseudo_class.iloc[_best_match(first, truth)[0]]
        b = second.pseudo_class.iloc[_best_match(second, truth)[0]]
        assert a == b
    # a scene with objects (a background-only one gives no features to check)
    four_band = write_raster(tmp_path / "four.tif", scene_with_objects(400, 400, SEAM_BOXES[:2], seed=11, bands=4))
    with pytest.raises(GeoAlpsError, match="fitted on features"):
        label(four_band, None, kmeans_model=model, **FAST)


@pytest.mark.parametrize("dtype,nodata", [("uint8", 0), ("uint16", 0), ("int16", -9999), ("float32", float("nan")), ("float64", -1e30)])
def test_dtypes_and_nodata(tmp_path, dtype, nodata):
    data = scene_with_objects(160, 160, [(30, 30, 70, 90), (100, 100, 140, 150)], bands=4,
                              dtype="uint16" if dtype != "uint8" else "uint8").astype(dtype)
    data[:, :, :20] = nodata  # a nodata strip on the left
    path = write_raster(tmp_path / f"{dtype}.tif", data, nodata=nodata)
    gdf = label(path, None, raster_out=tmp_path / "l.tif", **FAST).gdf
    for box in [(30, 30, 70, 90), (100, 100, 140, 150)]:
        assert _best_match(gdf, _box_polygon(ODD_TRANSFORM, *box))[1] > 0.97
    nodata_strip = shapely.box(*(ODD_TRANSFORM @ (0, 160)), *(ODD_TRANSFORM @ (20, 0)))
    assert shapely.area(shapely.intersection(gdf.geometry.values, nodata_strip)).max() < 1e-6
    with rasterio.open(tmp_path / "l.tif") as out:
        assert (out.read(1)[:, :20] == 255).all()


def test_several_scenes_in_different_crs(tmp_path):
    a = write_raster(tmp_path / "a.tif", scene_with_objects(100, 100, [(20, 20, 60, 60)]))
    b = write_raster(tmp_path / "b.tif", scene_with_objects(100, 100, [(30, 30, 70, 80)]), crs="EPSG:32634",
                     transform=Affine(0.5, 0, 300000, 0, -0.5, 5000000))
    folder = tmp_path / "rasters"
    folder.mkdir()
    gdf = label([a, b], tmp_path / "ab.gpkg", raster_out=folder, **FAST).gdf
    assert gdf.crs.to_epsg() == 32633
    assert set(gdf.scene) == {"a.tif", "b.tif"}
    with rasterio.open(folder / "b.labels.tif") as out:
        assert out.crs.to_epsg() == 32634 and out.transform == Affine(0.5, 0, 300000, 0, -0.5, 5000000)
    # b's object, reprojected into a's CRS, still covers the same ground
    import pyproj

    truth_b = _box_polygon(Affine(0.5, 0, 300000, 0, -0.5, 5000000), 30, 30, 70, 80)
    project = pyproj.Transformer.from_crs(32634, 32633, always_xy=True).transform
    truth_in_a = shapely.transform(truth_b, lambda xy: np.column_stack(project(xy[:, 0], xy[:, 1])))
    assert _best_match(gdf[gdf.scene == "b.tif"], truth_in_a)[1] > 0.95


def test_existing_output_is_refused_and_failures_leave_nothing(tmp_path):
    good = write_raster(tmp_path / "good.tif", scene_with_objects(100, 100, [(20, 20, 60, 60)]))
    out = tmp_path / "out.gpkg"
    out.write_text("precious")
    with pytest.raises(GeoAlpsError, match="exists"):
        label(good, out, **FAST)
    assert out.read_text() == "precious"
    empty = write_raster(tmp_path / "empty.tif", np.zeros((3, 50, 50), np.uint8), nodata=0)
    with pytest.raises(GeoAlpsError, match="empty.tif: every pixel is nodata"):
        label([good, empty], tmp_path / "new.gpkg", raster_out=tmp_path, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif", "good.tif", "out.gpkg"]


def test_folder_of_plain_chips_in_pixel_coordinates(tmp_path):
    from PIL import Image

    chips = tmp_path / "chips"
    chips.mkdir()
    for i in range(3):
        rgb = scene_with_objects(64, 80, [(10 + i * 5, 10, 40 + i * 5, 50)], seed=i).transpose(1, 2, 0)
        Image.fromarray(rgb).save(chips / f"chip_{i}.png")
    with pytest.raises(GeoAlpsError, match="--allow-pixel-coords"):
        label(chips, None, **FAST)
    gdf = label(chips, tmp_path / "chips.gpkg", allow_pixel_coords=True, raster_out=tmp_path, **FAST).gdf
    assert gdf.crs is None and set(gdf.scene) == {f"chip_{i}.png" for i in range(3)}
    chip1 = gdf[gdf.scene == "chip_1.png"]
    # pixel coordinates: x = column, y = row
    assert _best_match(chip1, shapely.box(10, 15, 50, 45))[1] == pytest.approx(1.0)
    assert (tmp_path / "chip_2.labels.tif").exists()


def test_all_nodata_tiles_are_skipped(tmp_path):
    data = scene_with_objects(300, 600, [(100, 400, 150, 470)])
    data[:, :, :300] = 0
    gdf = label(write_raster(tmp_path / "half.tif", data, nodata=0), None, tile_size_px=256, overlap_px=32, **FAST).gdf
    stats = gdf.attrs["geoalps"]
    assert stats["tiles"] == 6 and stats["tiles_skipped"] == 2
    assert len(gdf) >= 1


def test_featureless_scene_is_one_region_or_with_alps_threshold_an_empty_valid_layer(tmp_path):
    flat = write_raster(tmp_path / "flat.tif", np.full((3, 80, 80), 50, np.uint8))
    whole = label(flat, None, **FAST).gdf  # the classical engine keeps a region of the whole tile
    assert len(whole) == 1 and whole.area.iloc[0] == pytest.approx(80 * 80 * 0.37 * 0.53)
    gdf = label(flat, tmp_path / "flat.gpkg", raster_out=tmp_path / "flat.labels.tif", max_area_frac=0.3, **FAST).gdf
    assert len(gdf) == 0
    written = pyogrio.read_dataframe(tmp_path / "flat.gpkg", layer="masks")
    assert len(written) == 0 and "pseudo_class" in written.columns and written.crs.to_epsg() == 32633
    with rasterio.open(tmp_path / "flat.labels.tif") as out:
        assert (out.read(1) == 255).all()


def test_keywords_apply_on_top_of_the_option_records(tmp_path):
    from geoalps import LabelOptions, RunOptions

    data = scene_with_objects(120, 150, [(10, 10, 40, 50), (60, 80, 100, 130), (15, 90, 45, 140)])
    path = write_raster(tmp_path / "three.tif", data)
    settings = LabelOptions(engine="classical", classes=3, min_area_px=30)
    result = label(path, None, settings=settings, classes=6, run=RunOptions(quiet=True), workers=1)
    assert result.stats["n_classes"] == 6  # the keyword, not the record's 3
    assert result.stats["workers"] == 1
    assert settings.classes == 3  # the caller's record is left as it was
    with pytest.raises(GeoAlpsError, match="unknown option"):
        label(path, None, settings=settings, clases=6)


def test_pass_2_streams_into_the_output_without_scratch_layers(tmp_path):
    """Scenes in two CRSs: the objects go straight into the output (in the first scene's CRS) and
    each label raster is burnt from them; the kept work folder holds tile results only."""
    a = write_raster(tmp_path / "a.tif", scene_with_objects(100, 100, [(20, 20, 60, 60)]))
    b = write_raster(tmp_path / "b.tif", scene_with_objects(100, 100, [(30, 30, 70, 80)]), crs="EPSG:32634",
                     transform=Affine(0.5, 0, 300000, 0, -0.5, 5000000))
    folder = tmp_path / "rasters"
    folder.mkdir()
    out = tmp_path / "ab.gpkg"
    label([a, b], out, raster_out=folder, keep_work=True, **FAST)
    work = tmp_path / "ab.gpkg.geoalps-work"
    assert work.is_dir() and list(work.rglob("*.npz")) and not list(work.rglob("*.gpkg"))
    written = pyogrio.read_dataframe(out, layer="masks")
    assert written.crs.to_epsg() == 32633
    # b's raster, on b's grid, holds b's objects' classes where they lie
    with rasterio.open(folder / "b.labels.tif") as src:
        pixels = src.read(1)
        transform = src.transform
    b_rows = written[written.scene == "b.tif"]
    assert len(b_rows) and set(np.unique(pixels[pixels != 255])) <= set(b_rows.pseudo_class)
    inside = ~transform * (300000 + 0.5 * 50, 5000000 - 0.5 * 55)  # the centre of b's object
    assert pixels[int(inside[1]), int(inside[0])] != 255


def test_in_memory_result_is_what_the_file_holds(seam_scene, tmp_path):
    """Without an output file the objects come back as the file holds them: rows, ids, types."""
    kept = label(seam_scene, None, tile_size_px=256, overlap_px=64, **FAST).gdf
    written = label(seam_scene, tmp_path / "out.gpkg", tile_size_px=256, overlap_px=64, **FAST).gdf
    assert list(kept.columns) == list(written.columns)
    assert dict(kept.dtypes.astype(str)) == dict(written.dtypes.astype(str))
    assert len(kept) == len(written) > 0
    assert shapely.equals_exact(kept.geometry.values, written.geometry.values, tolerance=0).all()
    for column in ("instance_id", "pseudo_class", "area_px", "n_fragments", "scene"):
        assert (kept[column].to_numpy() == written[column].to_numpy()).all(), column
    assert kept.crs == written.crs


def test_engine_is_decided_once_and_recorded(seam_scene, tmp_path, monkeypatch):
    """``--engine auto`` is decided once a run (not again for the log line, the worker count and
    each worker's engine) and the output's metadata says what ran."""
    import json

    import geoalps.engines as engines
    from geoalps.outputs.vector import ENGINE_METADATA, layer_metadata

    monkeypatch.delenv("GEOALPS_SAM_CHECKPOINT", raising=False)
    monkeypatch.setattr(engines, "find_cached_checkpoint", lambda *args, **kwargs: None)
    monkeypatch.setattr(engines, "find_cached_sam2", lambda *args, **kwargs: None)
    decided = []
    real = engines.resolve_engine_name
    monkeypatch.setattr(engines, "resolve_engine_name", lambda options: decided.append(options.engine) or real(options))
    from geoalps.labelling import tile_work

    monkeypatch.setattr(tile_work, "_ENGINES", {})  # no engine cached by an earlier test
    out = tmp_path / "out.gpkg"
    result = label(seam_scene, out, workers=1, **{**FAST, "engine": "auto", "quiet": False})
    assert decided == ["auto"]
    recorded = json.loads(layer_metadata(out)[ENGINE_METADATA])
    assert recorded["engine"] == "classical" and recorded["checkpoint"] is None
    assert recorded["description"] == result.stats["engine"] and recorded["description"].startswith("classical")


def test_label_raster_is_the_same_when_a_scenes_objects_spill_to_the_work_folder(seam_scene, tmp_path, monkeypatch):
    """Past RASTER_OBJECTS_IN_MEMORY a scene's objects go to a scratch GeoPackage in the work
    folder (bounded memory) and the label raster is burnt through its spatial index: the same
    pixels as from memory."""
    import geoalps.labelling.run as run_module

    held = tmp_path / "held.tif"
    label(seam_scene, tmp_path / "held.gpkg", raster_out=held, tile_size_px=256, overlap_px=64, **FAST)
    monkeypatch.setattr(run_module, "RASTER_OBJECTS_IN_MEMORY", 3)
    spilled = tmp_path / "spilled.tif"
    label(seam_scene, tmp_path / "spilled.gpkg", raster_out=spilled, tile_size_px=256, overlap_px=64, keep_work=True, **FAST)
    assert list((tmp_path / "spilled.gpkg.geoalps-work").rglob("raster_objects_0.gpkg"))
    with rasterio.open(held) as a, rasterio.open(spilled) as b:
        held_pixels, spilled_pixels = a.read(1), b.read(1)
        assert a.transform == b.transform
    assert (held_pixels != a.nodata).sum() > 100
    assert (held_pixels == spilled_pixels).all()
