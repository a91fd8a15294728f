"""Pseudo-label metrics on hand-made tables: every expected value is worked out here, by hand or by brute force."""
from __future__ import annotations

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest
import shapely
from affine import Affine
from sklearn.metrics import normalized_mutual_info_score

from geoalps.errors import GeoAlpsError
from geoalps.evaluation import (ContingencyAccumulator, best_iou, contingency, nmi_from_table, object_recall,
                                pseudo_label_scores, raster_objects)

NODATA = 255

#: rows: pseudo-classes 0, 1, 2, then "prediction is nodata"; columns: true classes 0, 1, 2.
TABLE = np.array([
    [50, 10, 0],
    [30, 0, 5],
    [0, 20, 15],
    [5, 0, 5],
])


def pixels_of(table: np.ndarray, pred_nodata: int = NODATA) -> tuple[np.ndarray, np.ndarray]:
    """Flat (pred, truth) arrays holding exactly ``table``'s counts, in a shuffled order."""
    pred, truth = [], []
    for (row, col), count in np.ndenumerate(table):
        pred += [row if row < table.shape[0] - 1 else pred_nodata] * int(count)
        truth += [col] * int(count)
    order = np.random.default_rng(0).permutation(len(pred))
    return np.array(pred, np.uint8)[order], np.array(truth, np.uint8)[order]


def iou_by_pixels(pred_class: np.ndarray, truth: np.ndarray, classes) -> list[float]:
    """IoU per class straight from per-pixel boolean arrays (-1 in pred_class = no class)."""
    return [float(np.sum((pred_class == c) & (truth == c)) / np.sum((pred_class == c) | (truth == c))) for c in classes]


def brute_force_hungarian(table: np.ndarray) -> tuple[float, dict[int, int]]:
    """(mIoU, mapping) of the one-to-one mapping with the largest total overlap, by trying every one.

    Asserts that the best total is reached by a single mapping (after dropping zero-overlap
    pairs), so the expected value does not depend on a tie rule.
    """
    overlap = table[:-1]
    n_pseudo, n_true = overlap.shape
    best_total, best = -1, []
    for used in itertools.permutations(range(n_true), min(n_pseudo, n_true)):
        for rows in itertools.combinations(range(n_pseudo), len(used)):
            mapping = {r: c for r, c in zip(rows, used) if overlap[r, c] > 0}
            total = sum(overlap[r, c] for r, c in mapping.items())
            if total > best_total:
                best_total, best = total, [mapping]
            elif total == best_total and mapping not in best:
                best.append(mapping)
    assert len(best) == 1, "the test table must have a unique optimal assignment"
    mapping = best[0]
    ious = []
    for c in range(n_true):
        rows = [r for r, m in mapping.items() if m == c]
        inter = sum(overlap[r, c] for r in rows)
        predicted = sum(overlap[r].sum() for r in rows)
        ious.append(inter / (predicted + table[:, c].sum() - inter))
    return float(np.mean(ious)), mapping


# --------------------------------------------------------------------------------------------
# contingency


def test_contingency_counts_pairs_and_puts_prediction_nodata_last():
    pred = np.array([[0, 0, 1, 7], [1, 7, 255, 255]], np.uint8)
    truth = np.array([[5, 5, 5, 9], [2, 2, 2, 9]], np.uint8)  # 9 is the truth's nodata
    table, pred_ids, true_ids = contingency(pred, truth, pred_nodata=255, truth_nodata=9)
    assert pred_ids.tolist() == [0, 1, 7]  # 7 only on truth nodata at (0, 3); it also sits on (1, 1)
    assert true_ids.tolist() == [2, 5]
    assert table.tolist() == [
        [0, 2],  # pseudo 0: two pixels of truth 5
        [1, 1],  # pseudo 1
        [1, 0],  # pseudo 7 at (1, 1)
        [1, 0],  # prediction nodata on truth 2 at (1, 2); (1, 3) is truth nodata
    ]


def test_contingency_without_nodata_values_counts_everything():
    table, pred_ids, true_ids = contingency(np.array([3, 3, 4]), np.array([0, 1, 1]))
    assert table.tolist() == [[1, 1], [0, 1], [0, 0]]
    assert pred_ids.tolist() == [3, 4] and true_ids.tolist() == [0, 1]


@pytest.mark.parametrize("high_id", [9, 200_000])  # 200 000: ids too spread for direct indexing
def test_accumulator_block_by_block_equals_one_pass(high_id):
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 6, (64, 64)).astype(np.int64)
    truth = rng.integers(0, 4, (64, 64)).astype(np.int64)
    pred[40:, 50:] = high_id  # an id first seen in a late block
    truth[60:, :] = high_id  # a true class first seen in the last blocks
    pred[::7, ::5] = -1  # prediction nodata
    truth[::11, ::3] = -2  # truth nodata
    acc = ContingencyAccumulator(pred_nodata=-1, truth_nodata=-2)
    for r in range(0, 64, 16):
        for c in range(0, 64, 24):
            acc.add(pred[r:r + 16, c:c + 24], truth[r:r + 16, c:c + 24])
    whole = contingency(pred, truth, -1, -2)
    for got, want in zip(acc.result(), whole):
        assert got.tolist() == want.tolist()
    table, pred_ids, true_ids = whole
    keep = truth != -2
    assert table.sum() == keep.sum()
    assert table[-1].sum() == np.sum(keep & (pred == -1))
    k, c = pred_ids.tolist().index(high_id), true_ids.tolist().index(high_id)
    assert table[k, c] == np.sum(keep & (pred == high_id) & (truth == high_id))


def test_accumulator_masks_add_to_nodata_values():
    acc = ContingencyAccumulator()
    acc.add(np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1]),
            pred_valid=np.array([True, False, True, True]), truth_valid=np.array([True, True, True, False]))
    table, _, _ = acc.result()
    assert table.tolist() == [[1, 0], [0, 1], [1, 0]]


def test_accumulator_refuses_float_classes_and_shape_mismatch():
    acc = ContingencyAccumulator()
    with pytest.raises(GeoAlpsError, match="float64 values"):
        acc.add(np.zeros(3), np.zeros(3, int))
    with pytest.raises(GeoAlpsError, match="differ in shape"):
        acc.add(np.zeros(3, int), np.zeros(4, int))


# --------------------------------------------------------------------------------------------
# pixel scores


def test_scores_of_the_hand_table():
    result = pseudo_label_scores(TABLE)
    # many-to-one: 0 -> 0 (50 of 60), 1 -> 0 (30 of 35), 2 -> 1 (20 of 35)
    assert result["mapping"]["many_to_one"] == {"0": 0, "1": 0, "2": 1}
    # class 0: hits 50 + 30, predicted 60 + 35, true 85 -> 80 / 100; class 1: 20 / (35 + 30 - 20);
    # class 2: nothing maps to it -> 0
    assert result["many_to_one_miou"] == pytest.approx(float((Fraction(80, 100) + Fraction(20, 45)) / 3), abs=1e-15)
    assert result["pixel_accuracy"] == pytest.approx(100 / 140, abs=1e-15)  # 10 unpredicted pixels count as misses
    assert result["purity"] == pytest.approx(100 / 130, abs=1e-15)  # predicted pixels only
    # one-to-one: 0 -> 0, 1 -> 2, 2 -> 1 (total 75; the next best is 65)
    assert result["mapping"]["hungarian"] == {"0": 0, "1": 2, "2": 1}
    hungarian = (Fraction(50, 60 + 85 - 50) + Fraction(20, 35 + 30 - 20) + Fraction(5, 35 + 25 - 5)) / 3
    assert result["hungarian_miou"] == pytest.approx(float(hungarian), abs=1e-15)
    assert result["hungarian_pixel_accuracy"] == pytest.approx(75 / 140, abs=1e-15)
    assert (result["valid_pixels"], result["unpredicted_pixels"]) == (140, 10)
    assert (result["n_pseudo_classes"], result["n_true_classes"]) == (3, 3)


def test_hand_table_agrees_with_pixel_by_pixel_and_brute_force():
    pred, truth = pixels_of(TABLE)
    majority = {k: np.bincount(truth[pred == k], minlength=3).argmax() for k in range(3)}
    mapped = np.array([majority.get(p, -1) for p in pred])
    result = pseudo_label_scores(TABLE)
    assert result["many_to_one_miou"] == pytest.approx(np.mean(iou_by_pixels(mapped, truth, range(3))), abs=1e-15)
    assert result["pixel_accuracy"] == pytest.approx(np.mean(mapped == truth), abs=1e-15)
    miou, mapping = brute_force_hungarian(TABLE)
    assert result["hungarian_miou"] == pytest.approx(miou, abs=1e-15)
    assert result["mapping"]["hungarian"] == {str(k): c for k, c in mapping.items()}
    assert [c["iou_many_to_one"] for c in result["per_class"]] == pytest.approx(iou_by_pixels(mapped, truth, range(3)))


def test_per_class_entries_name_the_mapped_pseudo_classes():
    result = pseudo_label_scores(TABLE, pred_ids=[4, 7, 9], true_ids=[1, 2, 5], names={1: "ground", 5: "tree"})
    per_class = {c["true_class"]: c for c in result["per_class"]}
    assert per_class[1] == {"true_class": 1, "name": "ground", "pixels": 85, "iou_many_to_one": 0.8,
                            "iou_hungarian": pytest.approx(50 / 95), "pseudo_classes": [4, 7],
                            "hungarian_pseudo_class": 4}
    assert per_class[2]["name"] is None and per_class[2]["pseudo_classes"] == [9]
    assert per_class[5]["pseudo_classes"] == [] and per_class[5]["hungarian_pseudo_class"] == 7
    assert result["mapping"]["many_to_one"] == {"4": 1, "7": 1, "9": 2}
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("n_pseudo, n_true, seed", [(3, 3, 0), (3, 3, 1), (2, 4, 2), (5, 3, 3), (4, 4, 4), (1, 3, 5)])
def test_hungarian_matches_brute_force_for_more_or_fewer_pseudo_classes(n_pseudo, n_true, seed):
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 1000, (n_pseudo + 1, n_true))
    table[rng.random(table.shape) < 0.2] = 0  # some empty cells, so zero-overlap pairs occur
    table[:, table.sum(axis=0) == 0] = 1
    miou, mapping = brute_force_hungarian(table)
    result = pseudo_label_scores(table)
    assert result["hungarian_miou"] == pytest.approx(miou, abs=1e-12)
    assert result["mapping"]["hungarian"] == {str(k): c for k, c in mapping.items()}
    unmatched = set(range(n_true)) - set(mapping.values())
    assert all(c["iou_hungarian"] == 0.0 for c in result["per_class"] if c["true_class"] in unmatched)


def test_many_to_one_ties_go_to_the_lowest_true_id():
    table = np.array([[4, 4, 1], [0, 2, 2], [0, 0, 0]])
    result = pseudo_label_scores(table, true_ids=[3, 8, 9])
    assert result["mapping"]["many_to_one"] == {"0": 3, "1": 8}


def test_prediction_nodata_is_a_miss():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 255, 255, 1, 1, 1, 1])  # perfect where it predicts
    result = pseudo_label_scores(contingency(pred, truth, 255, None)[0])
    assert result["pixel_accuracy"] == 6 / 8
    assert result["many_to_one_miou"] == pytest.approx((2 / 4 + 1.0) / 2)
    assert result["hungarian_miou"] == pytest.approx((2 / 4 + 1.0) / 2)
    assert result["purity"] == 1.0 and result["nmi"] == 1.0  # scored on predicted pixels only


def test_pseudo_classes_only_on_truth_nodata_do_not_count():
    pred = np.array([0, 1, 1, 2])
    truth = np.array([0, 1, 1, 9])
    result = pseudo_label_scores(*contingency(pred, truth, None, 9)[:1])
    assert result["n_pseudo_classes"] == 2 and result["valid_pixels"] == 3
    assert result["many_to_one_miou"] == 1.0


def test_no_valid_pixels_gives_none_not_nan():
    result = pseudo_label_scores(np.zeros((1, 0), np.int64))
    for key in ("many_to_one_miou", "pixel_accuracy", "hungarian_miou", "purity", "nmi"):
        assert result[key] is None
    assert result["valid_pixels"] == 0 and result["per_class"] == []
    json.dumps(result, allow_nan=False)


# --------------------------------------------------------------------------------------------
# NMI


@pytest.mark.parametrize("seed", range(6))
def test_nmi_equals_scikit_learn_on_random_labellings(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 5000))
    truth = rng.integers(0, int(rng.integers(2, 9)), n)
    pred = np.where(rng.random(n) < 0.6, truth * 3 % 7, rng.integers(0, int(rng.integers(2, 12)), n))
    pred[rng.random(n) < 0.1] = 255
    table, _, _ = contingency(pred, truth, 255, None)
    has_class = pred != 255
    expected = normalized_mutual_info_score(truth[has_class], pred[has_class], average_method="arithmetic")
    assert nmi_from_table(table[:-1]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert pseudo_label_scores(table)["nmi"] == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("pred, truth", [
    ([0, 0, 0], [1, 1, 1]),  # one cluster, one class: sklearn says 1
    ([0, 0, 0], [1, 2, 1]),  # one cluster: 0
    ([0, 1, 2], [1, 1, 1]),  # one class: 0
    ([0, 0, 1, 1], [0, 1, 0, 1]),  # independent: MI is 0
])
def test_nmi_special_cases_match_scikit_learn(pred, truth):
    table, _, _ = contingency(np.array(pred), np.array(truth))
    assert nmi_from_table(table[:-1]) == normalized_mutual_info_score(truth, pred)


# --------------------------------------------------------------------------------------------
# objects


def square(x0: float, y0: float, side: float = 100.0):
    return shapely.box(x0, y0, x0 + side, y0 + side)


@pytest.mark.parametrize("shift, found", [(33, True), (34, False)])
def test_object_recall_at_just_above_and_below_half_iou(shift, found):
    # two 100 x 100 squares shifted by d: IoU = (100 - d) / (100 + d): 67/133 = 0.5038, 66/134 = 0.4925
    truth = [square(0, 0), square(1000, 0)]
    pred = [square(shift, 0), square(1000, 0), square(5000, 5000)]
    result = object_recall(pred, truth, 0.5, min_size_px=0)
    assert result["n_true_objects"] == 2
    assert result["n_found"] == (2 if found else 1)
    assert result["recall"] == (1.0 if found else 0.5)
    assert result["mean_best_iou"] == pytest.approx((1 + (100 - shift) / (100 + shift)) / 2)


def test_best_iou_takes_the_best_of_several_candidates_and_zero_for_none():
    truth = [square(0, 0), square(500, 500)]
    pred = [square(50, 0), square(10, 0), square(100, 0)]  # the last only touches the first square: IoU 0
    assert best_iou(pred, truth).tolist() == pytest.approx([90 / 110, 0.0])


def test_object_recall_counts_only_objects_of_the_minimum_size():
    truth = [square(0, 0, 10), square(100, 100, 7)]  # 100 and 49 px at 1 m2 pixels
    result = object_recall([square(100, 100, 7)], truth, min_size_px=50)
    assert (result["n_true_objects"], result["n_too_small"], result["recall"]) == (1, 1, 0.0)
    result = object_recall([square(100, 100, 7)], truth, min_size_px=12, pixel_area=4.0)  # 25 and 12.25 px
    assert (result["n_true_objects"], result["n_found"], result["min_size_px"]) == (2, 1, 12.0)


def test_box_mode_compares_bounding_boxes():
    frame = square(0, 0).difference(square(10, 10, 80))  # a square ring: area 3600, IoU 0.36 with its box
    truth = [square(0, 0)]
    assert object_recall([frame], truth, min_size_px=0)["recall"] == 0.0
    boxed = object_recall([frame], truth, min_size_px=0, box=True)
    assert boxed["recall"] == 1.0 and boxed["box"] is True and boxed["mean_best_iou"] == 1.0


def test_object_recall_without_objects_is_none():
    assert object_recall([square(0, 0)], [], min_size_px=0)["recall"] is None


def test_raster_objects_components_and_instances():
    transform = Affine(2.0, 0, 100.0, 0, -2.0, 50.0)  # 4 m2 pixels
    classes = np.array([
        [1, 1, 0, 2],
        [1, 0, 0, 2],
        [0, 0, 1, 1],
        [9, 9, 1, 0],
    ], np.uint8)
    geoms, values, sizes = raster_objects(classes, transform, nodata=9, classes=[1, 2])
    assert sorted(zip(values.tolist(), sizes.tolist())) == [(1, 3), (1, 3), (2, 2)]
    assert sum(shapely.area(geoms)) == 8 * 4.0
    geoms, values, sizes = raster_objects(classes, transform, nodata=9, classes=[1, 2], min_size_px=3)
    assert values.tolist() == [1, 1]
    # the same raster read as instances: all pixels of id 1 form one object, 0 is background
    geoms, values, sizes = raster_objects(classes, transform, nodata=9, by="value")
    assert values.tolist() == [1, 2] and sizes.tolist() == [6, 2]
    assert geoms[0].geom_type == "MultiPolygon" and len(geoms[0].geoms) == 2
    # object recall with those exact sizes: a prediction equal to the id-2 object finds it
    result = object_recall([geoms[1]], geoms, sizes_px=sizes, min_size_px=2)
    assert (result["n_true_objects"], result["n_found"]) == (2, 1)
    with pytest.raises(GeoAlpsError, match="by='blob'"):
        raster_objects(classes, transform, by="blob")
