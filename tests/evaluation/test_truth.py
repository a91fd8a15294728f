"""Ground truth onto the prediction's grid, and the whole evaluation, on tiny rasters and polygons.

The scored grid is 6 x 8 pixels of 1 m in UTM 33N; expected tables are counted here pixel by
pixel from the expected truth on that grid.
"""
from __future__ import annotations

import json
from collections import Counter

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from conftest import write_raster
from http_server import RangeServer
from geoalps.errors import GeoAlpsError
from geoalps.evaluation import evaluate_pseudo_labels

CRS = "EPSG:32633"
X0, Y0 = 500000.0, 5000000.0
GRID = Affine(1.0, 0, X0, 0, -1.0, Y0)
NAMES = "ground,building,road"

#: The prediction used throughout: pseudo-class = column // 2 (0..3), one nodata pixel.
PRED = (np.arange(8)[None, :] // 2).repeat(6, axis=0).astype(np.uint8)
PRED[0, 0] = 255


def counted(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> tuple[list, list, list]:
    """(pseudo ids, true ids, table) counted pixel by pixel; prediction 255 goes to the last row."""
    pairs = Counter((int(p), int(t)) for p, t, v in zip(pred.ravel(), truth.ravel(), valid.ravel()) if v)
    pred_ids = sorted({p for p, _ in pairs if p != 255})
    true_ids = sorted({t for _, t in pairs})
    table = [[pairs[(p, t)] for t in true_ids] for p in pred_ids + [255]]
    return pred_ids, true_ids, table


def pixel_box(col0: int, row0: int, col1: int, row1: int, transform=GRID):
    """The polygon covering pixels col0..col1-1, row0..row1-1 of ``transform``'s grid."""
    (x0, y0), (x1, y1) = transform * (col0, row0), transform * (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def tag_names(path, names: str = NAMES):
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(CLASS_NAMES=names)
    return path


@pytest.fixture
def prediction(tmp_path):
    return write_raster(tmp_path / "labels.tif", PRED, transform=GRID, crs=CRS, nodata=255)


def write_layer(path, geoms, crs=CRS, layer=None, **columns):
    frame = gpd.GeoDataFrame(columns, geometry=list(geoms), crs=CRS).to_crs(crs)
    pyogrio.write_dataframe(frame, path, layer=layer)
    return path


# --------------------------------------------------------------------------------------------
# raster truth


def test_truth_raster_on_the_same_grid(tmp_path, prediction):
    truth = np.zeros((6, 8), np.uint8)
    truth[:, 4:] = 1
    truth[3:, :3] = 2
    truth[5, 7] = 255
    path = tag_names(write_raster(tmp_path / "truth.gt.tif", truth, transform=GRID, crs=CRS, nodata=255))
    result = evaluate_pseudo_labels(prediction, path)
    pred_ids, true_ids, table = counted(PRED, truth, truth != 255)
    assert result["contingency"]["pixels"] == table
    assert (result["contingency"]["pseudo_classes"], result["contingency"]["true_classes"]) == (pred_ids, true_ids)
    assert result["valid_pixels"] == 47 and result["unpredicted_pixels"] == 1
    assert result["class_names"] == ["ground", "building", "road"]
    assert [c["name"] for c in result["per_class"]] == ["ground", "building", "road"]
    assert result["grid"] == "prediction"
    # pseudo 0 (cols 0-1): 5 ground (one pixel is prediction nodata), 6 road -> road; 1 (cols 2-3):
    # 9 ground, 3 road -> ground; 2 and 3 (cols 4-7): 12 + 11 building. Hits: 6 + 9 + 23 of 47
    assert result["mapping"]["many_to_one"] == {"0": 2, "1": 0, "2": 1, "3": 1}
    assert result["pixel_accuracy"] == pytest.approx(38 / 47)
    # ground: hits 9, predicted 12, true 5 + 9 + 1 unpredicted = 15; building 23 / 23; road 6 / (11 + 9 - 6)
    assert result["many_to_one_miou"] == pytest.approx((9 / (12 + 15 - 9) + 1 + 6 / (11 + 9 - 6)) / 3)
    json.dumps(result, allow_nan=False)


def test_truth_raster_at_a_url_is_read_through_the_scene_door(tmp_path, prediction):
    """A truth on a web server (127.0.0.1) is read as scenes are: GDAL's remote settings, the same
    figures as the local file; a missing one is one line naming the URL, its signature redacted."""
    truth = np.zeros((6, 8), np.uint8)
    truth[:, 4:] = 1
    served = tmp_path / "served"
    served.mkdir()
    write_raster(served / "truth.tif", truth, transform=GRID, crs=CRS)
    local = evaluate_pseudo_labels(prediction, served / "truth.tif")
    with RangeServer(served) as server:
        remote = evaluate_pseudo_labels(prediction, f"{server.url}/truth.tif")
        assert server.log.requests > 0
        with pytest.raises(GeoAlpsError) as missing:
            evaluate_pseudo_labels(prediction, f"{server.url}/gone.tif?X-Amz-Signature=s3cr3t")
    assert remote["contingency"] == local["contingency"] and remote["many_to_one_miou"] == local["many_to_one_miou"]
    message = str(missing.value)
    assert message.startswith(f"{server.url}/gone.tif?***: ") and "not found" in message
    assert "s3cr3t" not in message and "\n" not in message


def test_truth_raster_without_crs_on_the_same_pixel_grid_is_used_as_is(tmp_path, prediction):
    truth = np.ones((6, 8), np.uint8)
    path = write_raster(tmp_path / "truth.tif", truth, transform=GRID, crs=None)
    result = evaluate_pseudo_labels(prediction, path)
    assert result["contingency"]["pixels"] == [[11], [12], [12], [12], [1]]


def test_truth_nodata_value_adds_to_the_rasters_own(tmp_path, prediction):
    truth = np.zeros((6, 8), np.uint8)
    truth[:, 4:] = 1
    truth[5, 7] = 255
    path = write_raster(tmp_path / "truth.tif", truth, transform=GRID, crs=CRS, nodata=255)
    result = evaluate_pseudo_labels(prediction, path, truth_nodata=0)
    assert result["contingency"]["true_classes"] == [1]
    assert result["valid_pixels"] == 23
    assert result["class_names"] is None


def test_truth_raster_at_half_resolution_in_another_crs_is_resampled_nearest(tmp_path, prediction):
    # UTM 33S is UTM 33N with 10 000 km false northing: the same metres, so the expected
    # resampling is exact: each 2 m truth pixel covers 2 x 2 prediction pixels
    truth = np.array([[0, 1, 1, 2],
                      [0, 0, 255, 2],
                      [2, 1, 1, 0]], np.uint8)
    transform = Affine(2.0, 0, X0 + 2, 0, -2.0, Y0 + 10_000_000)  # starts 2 columns in, ends 2 beyond
    path = write_raster(tmp_path / "truth_south.tif", truth, transform=transform, crs="EPSG:32733", nodata=255)
    expected = np.zeros((6, 8), np.int64)
    valid = np.zeros((6, 8), bool)
    for row in range(6):
        for col in range(2, 8):
            expected[row, col] = truth[row // 2, (col - 2) // 2]
            valid[row, col] = expected[row, col] != 255
    pred_ids, true_ids, table = counted(PRED, expected, valid)
    for block_px in (1024, 3):
        result = evaluate_pseudo_labels(prediction, path, block_px=block_px)
        assert result["contingency"]["pixels"] == table
        assert result["contingency"]["true_classes"] == true_ids
        assert result["valid_pixels"] == 6 * 6 - 4


def test_truth_raster_in_a_projected_crs_of_other_units(tmp_path, prediction):
    # truth in Web Mercator at about 3 m: not exact pixel for pixel, but a truth pixel whose
    # footprint holds a whole 3 x 3 block of prediction pixels must give them all its class
    with rasterio.Env():
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(CRS, "EPSG:3857", X0 - 20, Y0 - 30, X0 + 30, Y0 + 20)
    truth = (np.arange(40)[:, None] + np.arange(40)[None, :]).astype(np.uint8) % 3
    transform = Affine((right - left) / 40, 0, left, 0, -(top - bottom) / 40, top)
    path = write_raster(tmp_path / "truth_3857.tif", truth, transform=transform, crs="EPSG:3857")
    result = evaluate_pseudo_labels(prediction, path)
    assert result["valid_pixels"] == 48  # the truth covers the whole prediction grid
    assert sum(map(sum, result["contingency"]["pixels"])) == 48


# --------------------------------------------------------------------------------------------
# polygon truth


@pytest.mark.parametrize("name, crs", [("truth.geojson", CRS), ("truth.gpkg", "EPSG:4326")])
def test_polygon_truth_with_a_text_class_field(tmp_path, prediction, name, crs):
    geoms = [pixel_box(0, 0, 4, 3), pixel_box(4, 0, 8, 6), pixel_box(0, 3, 2, 6)]
    path = write_layer(tmp_path / name, geoms, crs=crs, landuse=["forest", "water", "unknown"])
    result = evaluate_pseudo_labels(prediction, path, truth_field="landuse")
    assert result["class_names"] == ["forest", "unknown", "water"]  # ids 0, 1, 2 in sorted order
    expected = np.full((6, 8), -1)
    expected[0:3, 0:4], expected[:, 4:8], expected[3:6, 0:2] = 0, 2, 1  # cols 2-3 of rows 3-5: no polygon
    pred_ids, true_ids, table = counted(PRED, expected, expected >= 0)
    assert result["contingency"]["pixels"] == table
    assert result["valid_pixels"] == 42
    assert {c["name"]: c["pixels"] for c in result["per_class"]} == {"forest": 12, "unknown": 6, "water": 24}
    # pseudo 0 (cols 0-1): 5 forest (one nodata pixel), 6 unknown -> unknown; 1: forest; 2, 3: water
    assert result["mapping"]["many_to_one"] == {"0": 1, "1": 0, "2": 2, "3": 2}


def test_polygon_truth_nodata_value_and_integer_field(tmp_path, prediction):
    geoms = [pixel_box(0, 0, 4, 3), pixel_box(4, 0, 8, 6), pixel_box(0, 3, 2, 6)]
    path = write_layer(tmp_path / "truth.gpkg", geoms, landuse=["forest", "water", "unknown"], code=[3, 7, 9])
    result = evaluate_pseudo_labels(prediction, path, truth_field="landuse", truth_nodata="unknown")
    assert result["class_names"] == ["forest", "water"] and result["valid_pixels"] == 36
    result = evaluate_pseudo_labels(prediction, path, truth_field="code", truth_nodata=9)
    assert result["class_names"] is None
    assert result["contingency"]["true_classes"] == [3, 7]
    assert result["contingency"]["pixels"] == [[5, 0], [6, 0], [0, 12], [0, 12], [1, 0]]


# --------------------------------------------------------------------------------------------
# GeoPackage prediction


@pytest.mark.parametrize("crs", [CRS, "EPSG:3857"])
def test_geopackage_prediction_is_rasterized_on_the_truth_grid(tmp_path, crs):
    truth = np.zeros((6, 8), np.uint8)
    truth[:, 5:] = 1
    truth[0, 0] = 255
    truth_path = tag_names(write_raster(tmp_path / "truth.tif", truth, transform=GRID, crs=CRS, nodata=255))
    geoms = [pixel_box(0, 0, 4, 6), pixel_box(4, 0, 8, 3)]  # rows 3-5 of cols 4-7 stay uncovered
    gpkg = write_layer(tmp_path / "out.gpkg", geoms, crs=crs, layer="masks", pseudo_class=[5, 2], score=[0.9, 0.8])
    result = evaluate_pseudo_labels(gpkg, truth_path, block_px=4)
    pred = np.full((6, 8), 255)
    pred[:, 0:4], pred[0:3, 4:8] = 5, 2
    pred_ids, true_ids, table = counted(pred, truth, truth != 255)
    assert result["contingency"]["pseudo_classes"] == [2, 5] == pred_ids
    assert result["contingency"]["pixels"] == table == [[3, 9], [23, 0], [3, 9]]
    assert result["grid"] == "truth" and result["class_names"] == ["ground", "building", "road"]
    # many-to-one: 2 -> building (9 of 12), 5 -> ground; ground IoU 23 / (23 + 29 - 23), building 9 / (12 + 18 - 9)
    assert result["many_to_one_miou"] == pytest.approx((23 / 29 + 9 / 21) / 2)
    assert result["pixel_accuracy"] == pytest.approx(32 / 47)


# --------------------------------------------------------------------------------------------
# object recall through the evaluation


def test_object_recall_of_geopackage_polygons_against_a_class_raster(tmp_path):
    truth = np.zeros((6, 8), np.uint8)
    truth[1:4, 1:4] = 1  # 9 px
    truth[0:2, 6:8] = 1  # 4 px
    truth_path = write_raster(tmp_path / "truth.tif", truth, transform=GRID, crs=CRS, nodata=255)
    geoms = [pixel_box(1, 1, 4, 4), pixel_box(5, 0, 8, 4)]  # the first exactly; the second 4 of 12 px: IoU 1/3
    gpkg = write_layer(tmp_path / "out.gpkg", geoms, layer="masks", pseudo_class=[0, 1])
    result = evaluate_pseudo_labels(gpkg, truth_path, objects=truth_path, object_classes=[1], min_object_px=4)
    assert result["object_recall"]["recall"] == 0.5
    assert result["object_recall"]["mean_best_iou"] == pytest.approx((1 + 1 / 3) / 2)
    result = evaluate_pseudo_labels(gpkg, truth_path, objects=truth_path, object_classes=[1], min_object_px=5)
    assert result["object_recall"] | {"mean_best_iou": 0} == {
        "recall": 1.0, "iou_threshold": 0.5, "min_size_px": 5.0, "box": False, "n_true_objects": 1,
        "n_found": 1, "n_too_small": 1, "mean_best_iou": 0}
    lower = evaluate_pseudo_labels(gpkg, truth_path, objects=truth_path, object_classes=[1], min_object_px=4,
                                   iou_threshold=0.3)
    assert lower["object_recall"]["recall"] == 1.0


def test_object_recall_of_a_label_raster_uses_its_components(tmp_path, prediction):
    objects = [pixel_box(2, 0, 4, 6), pixel_box(6, 0, 8, 3)]  # pseudo 1 exactly; half of pseudo 3's 12 px
    objects_path = write_layer(tmp_path / "objects.geojson", objects, kind=["a", "b"])
    truth = write_raster(tmp_path / "truth.tif", np.zeros((6, 8), np.uint8), transform=GRID, crs=CRS)
    result = evaluate_pseudo_labels(prediction, truth, objects=objects_path, min_object_px=6)
    assert result["object_recall"]["n_true_objects"] == 2
    assert result["object_recall"]["n_found"] == 2  # IoU 1 and 6 / 12 = 0.5 (>= 0.5 counts)
    result = evaluate_pseudo_labels(prediction, truth, objects=objects_path, min_object_px=6, iou_threshold=0.51)
    assert result["object_recall"]["n_found"] == 1


# --------------------------------------------------------------------------------------------
# errors: one line naming the file


def test_missing_files(tmp_path, prediction):
    with pytest.raises(GeoAlpsError, match=r"nope\.tif: file not found"):
        evaluate_pseudo_labels(tmp_path / "nope.tif", prediction)
    with pytest.raises(GeoAlpsError, match=r"gone\.gpkg: file not found"):
        evaluate_pseudo_labels(prediction, tmp_path / "gone.gpkg", truth_field="x")


def test_no_overlap_and_no_valid_truth(tmp_path, prediction):
    far = Affine(1.0, 0, X0 + 1000, 0, -1.0, Y0)
    path = write_raster(tmp_path / "far.tif", np.zeros((6, 8), np.uint8), transform=far, crs=CRS)
    with pytest.raises(GeoAlpsError, match=r"far\.tif: does not overlap .*labels\.tif"):
        evaluate_pseudo_labels(prediction, path)
    empty = write_raster(tmp_path / "empty.tif", np.full((6, 8), 255, np.uint8), transform=GRID, crs=CRS, nodata=255)
    with pytest.raises(GeoAlpsError, match=r"empty\.tif: no valid truth pixel"):
        evaluate_pseudo_labels(prediction, empty)
    polygons = write_layer(tmp_path / "far.geojson", [pixel_box(2000, 0, 2004, 3)], landuse=["forest"])
    with pytest.raises(GeoAlpsError, match=r"far\.geojson: does not overlap"):
        evaluate_pseudo_labels(prediction, polygons, truth_field="landuse")


def test_fields_and_layers(tmp_path, prediction):
    polygons = write_layer(tmp_path / "truth.geojson", [pixel_box(0, 0, 4, 3)], landuse=["forest"])
    with pytest.raises(GeoAlpsError, match=r"truth\.geojson: no field 'klass'; fields: landuse"):
        evaluate_pseudo_labels(prediction, polygons, truth_field="klass")
    with pytest.raises(GeoAlpsError, match=r"truth\.geojson: polygon truth needs a class field"):
        evaluate_pseudo_labels(prediction, polygons)
    truth = write_raster(tmp_path / "truth.tif", np.zeros((6, 8), np.uint8), transform=GRID, crs=CRS)
    other = write_layer(tmp_path / "other.gpkg", [pixel_box(0, 0, 4, 3)], layer="polygons", pseudo_class=[0])
    with pytest.raises(GeoAlpsError, match=r"other\.gpkg: no layer 'masks' \(layers: polygons\)"):
        evaluate_pseudo_labels(other, truth)
    unnamed = write_layer(tmp_path / "unnamed.gpkg", [pixel_box(0, 0, 4, 3)], layer="masks", klass=[0])
    with pytest.raises(GeoAlpsError, match=r"unnamed\.gpkg: layer 'masks' has no field 'pseudo_class'"):
        evaluate_pseudo_labels(unnamed, truth)
    with pytest.raises(GeoAlpsError, match=r"truth\.geojson: a GeoPackage prediction needs a truth raster"):
        evaluate_pseudo_labels(unnamed, polygons, truth_field="landuse")


def test_unusable_rasters(tmp_path, prediction):
    floats = write_raster(tmp_path / "float.tif", np.zeros((6, 8), np.float32), transform=GRID, crs=CRS)
    with pytest.raises(GeoAlpsError, match=r"float\.tif: float32 pixels"):
        evaluate_pseudo_labels(prediction, floats)
    coarse = Affine(2, 0, X0, 0, -2, Y0)
    bare = write_raster(tmp_path / "bare.tif", np.zeros((3, 4), np.uint8), transform=coarse, crs=None)
    with pytest.raises(GeoAlpsError, match=r"bare\.tif: has no CRS"):
        evaluate_pseudo_labels(prediction, bare)
    text = tmp_path / "text.tif"
    text.write_text("not a raster")
    with pytest.raises(GeoAlpsError, match=r"text\.tif: not a raster file GDAL can read"):
        evaluate_pseudo_labels(prediction, text)
    truth = write_raster(tmp_path / "truth.tif", np.zeros((6, 8), np.uint8), transform=GRID, crs=CRS)
    with pytest.raises(GeoAlpsError, match=r"truth\.tif: truth_nodata 'x' is text"):
        evaluate_pseudo_labels(prediction, truth, truth_nodata="x")


def test_one_list_of_vector_suffixes_holds_every_output_format(tmp_path):
    """evaluate reads what geoalps writes as polygons, whatever the case of the suffix; the other
    readers (training labels, the plugin) take the same list from outputs/formats."""
    from geoalps.evaluation.grid import kind_of
    from geoalps.outputs.formats import FORMATS, VECTOR_SUFFIXES, is_vector_path

    assert {e for f in FORMATS for e in f.extensions} <= set(VECTOR_SUFFIXES)
    assert all(s.startswith(".") and s == s.lower() for s in VECTOR_SUFFIXES)
    assert is_vector_path("a/B.GPKG") and is_vector_path("t.geoparquet") and not is_vector_path("t.tif")
    for suffix in (*VECTOR_SUFFIXES, ".TIF", ".vrt"):
        (tmp_path / f"f{suffix}").touch()
        assert kind_of(tmp_path / f"f{suffix}") == ("vector" if suffix in VECTOR_SUFFIXES else "raster")
