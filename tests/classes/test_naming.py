"""Naming pseudo-classes from examples or a mapping; names stored in the k-means model and used by
later runs; a named output scores like the many-to-one mapping of `geoalps evaluate`."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio import features as rio_features

from conftest import REPO
from geoalps import label
from geoalps.classes.naming import name_classes
from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.errors import InputError, OptionError
from geoalps.evaluation import evaluate_pseudo_labels
from geoalps.outputs.raster import read_class_names

SCENE = REPO / "sample_data/scene_rgbn_u16.tif"
TRUTH = REPO / "sample_data/scene_rgbn_u16.gt.tif"
FAST = dict(engine="classical", quiet=True, tile_size_px=640, overlap_px=64)


def truth_examples(path, per_class: int = 3):
    """Three polygons per true class: its largest connected regions, with the class's name."""
    import geopandas as gpd

    with rasterio.open(path) as src:
        truth, transform, crs = src.read(1), src.transform, src.crs
        names = src.tags()["CLASS_NAMES"].split(",")
    rows = []
    for value in np.unique(truth[truth != 255]):
        parts = [shapely.geometry.shape(g) for g, v in rio_features.shapes(truth, mask=truth == value, transform=transform)
                 if v == value]
        for part in sorted(parts, key=lambda p: -p.area)[:per_class]:
            rows.append({"name": names[int(value)], "geometry": part})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("naming")
    model = folder / "km.joblib"
    label(SCENE, folder / "out.gpkg", raster_out=folder / "out.tif", kmeans_model=model, classes=7, **FAST)
    examples = truth_examples(TRUTH)
    pyogrio.write_dataframe(examples, folder / "examples.gpkg")
    return folder


def test_examples_name_each_class_after_its_majority_true_class(labelled):
    scores = evaluate_pseudo_labels(labelled / "out.tif", TRUTH)
    names = scores["class_names"]
    majority = {int(k): names[int(c)] for k, c in scores["mapping"]["many_to_one"].items() if c is not None}

    report = name_classes(labelled / "out.gpkg", labelled / "named.gpkg", examples=labelled / "examples.gpkg",
                          name_field="name", kmeans_model=labelled / "km.joblib", overwrite=True)

    voted = {k: name for k, name in report.names.names.items() if k not in report.filled}
    assert voted and all(majority[k] == name for k, name in voted.items()), report.table()  # no wrong name
    # Three regions per class reach all but at most one class: a pseudo-class found only outside
    # the three largest regions of its true class (a roof colour absent from the largest
    # buildings) gets no vote; with the run's model it takes its nearest voted class's name.
    assert len(voted) >= len(majority) - 1, report.table()
    assert set(report.names.names) == set(range(report.names.n_classes)), "with the model every class is named"
    for k, nearest in report.filled.items():
        assert k not in report.votes and report.names.names[k] == voted[nearest]
    named = pyogrio.read_dataframe(labelled / "named.gpkg", layer="masks")
    original = pyogrio.read_dataframe(labelled / "out.gpkg", layer="masks")
    assert len(named) == len(original) and (named["instance_id"] == original["instance_id"]).all()
    expected = [report.object_names.get(int(i), report.names.name_of(k))
                for i, k in zip(named["instance_id"], named["pseudo_class"])]
    assert (named["class_name"] == expected).all()
    assert set(report.object_names) <= {int(i) for i in named["instance_id"]}
    for k, counts in report.split.items():  # a split class's objects carry the names its examples gave
        assert set(counts) <= set(report.votes[k]) and sum(counts.values()) == int((named["pseudo_class"] == k).sum())
    assert named.groupby("class_name")["class_id"].nunique().max() == 1, "one class id per name"
    assert OnlineKMeans.load(labelled / "km.joblib").class_names == report.names


def test_named_model_labels_new_runs_and_scores_like_many_to_one(labelled):
    report = name_classes(labelled / "out.gpkg", labelled / "named2.gpkg", examples=labelled / "examples.gpkg",
                          kmeans_model=labelled / "km.joblib", overwrite=True)
    label(SCENE, labelled / "again.gpkg", raster_out=labelled / "again.tif", kmeans_model=labelled / "km.joblib",
          overwrite=True, **FAST)
    model = OnlineKMeans.load(labelled / "km.joblib")
    merged = model.class_names.merged_names
    n_classes, names = read_class_names(labelled / "again.tif")
    assert (n_classes, names) == (len(merged), merged)
    again = pyogrio.read_dataframe(labelled / "again.gpkg", layer="masks")
    assert set(again["class_name"]) <= set(merged)

    with rasterio.open(labelled / "again.tif") as named_src, rasterio.open(TRUTH) as truth_src:
        named, truth = named_src.read(1), truth_src.read(1)
        truth_names = truth_src.tags()["CLASS_NAMES"].split(",")
    valid = truth != 255
    named_as_truth = np.array([truth_names.index(n) if n in truth_names else -1 for n in merged] + [-2])
    predicted = named_as_truth[np.where(named == 255, len(merged), named)]
    accuracy = float(np.mean(predicted[valid] == truth[valid]))
    # evaluate's table of the first run, scored through the names: every pseudo-class named after
    # its majority class counts its majority pixels, unnamed ones count as misses; with every
    # class named this is the many-to-one pixel accuracy.
    scores = evaluate_pseudo_labels(labelled / "out.tif", TRUTH)
    table = scores["contingency"]
    expected = sum(table["pixels"][row][table["true_classes"].index(truth_names.index(model.class_names.names[k]))]
                   for row, k in enumerate(table["pseudo_classes"]) if k in model.class_names.names)
    assert accuracy == pytest.approx(expected / scores["valid_pixels"], abs=1e-9)
    if len(model.class_names.names) == scores["n_pseudo_classes"] and not report.filled:
        # every class named by its own votes (all after their majority class, as the first test
        # checks): the many-to-one pixel accuracy. A class named after its nearest class may not be.
        assert accuracy == pytest.approx(scores["pixel_accuracy"], abs=1e-9)

def test_mapping_merges_classes_and_keeps_the_rest(labelled):
    report = name_classes(labelled / "out.gpkg", labelled / "mapped.gpkg", names="0=field,3=field,5=water",
                          overwrite=True)
    named = pyogrio.read_dataframe(labelled / "mapped.gpkg", layer="masks")
    by_class = named.groupby("pseudo_class")["class_name"].first().to_dict()
    assert by_class[0] == by_class[3] == "field" and by_class.get(5, "water") == "water"
    assert by_class.get(1, "class 1") == "class 1"
    assert report.names.merged_names[:2] == ["field", "class 1"]
    field_ids = named.loc[named["class_name"] == "field", "class_id"].unique()
    assert field_ids.tolist() == [0]


def test_conflicts_and_unused_examples_are_reported(labelled, tmp_path):
    import geopandas as gpd

    objects = pyogrio.read_dataframe(labelled / "out.gpkg", layer="masks")
    target = objects.iloc[0]
    far = shapely.Point(0, 0)
    points = gpd.GeoDataFrame({"name": ["a", "b", "b", "lost"]},
                              geometry=[target.geometry.representative_point()] * 3 + [far], crs=objects.crs)
    pyogrio.write_dataframe(points, tmp_path / "pts.gpkg")
    report = name_classes(labelled / "out.gpkg", tmp_path / "n.gpkg", examples=tmp_path / "pts.gpkg")
    k = int(target["pseudo_class"])
    assert report.names.names == {k: "b"}
    area = float(target.geometry.area)
    assert report.votes[k] == pytest.approx({"a": area, "b": 2 * area}) and k in report.conflicts
    assert report.unused_examples == [3]


def test_bad_requests_are_one_line_errors(labelled, tmp_path):
    with pytest.raises(OptionError, match="not CLASS=NAME"):
        name_classes(labelled / "out.gpkg", tmp_path / "x.gpkg", names="0:building")
    with pytest.raises(OptionError, match="class 99 does not exist"):
        name_classes(labelled / "out.gpkg", tmp_path / "x.gpkg", names="99=x")
    with pytest.raises(InputError, match="no field 'label'"):
        name_classes(labelled / "out.gpkg", tmp_path / "x.gpkg", examples=labelled / "examples.gpkg", name_field="label")
    assert not (tmp_path / "x.gpkg").exists()


def _layer_style_colours(gpkg) -> dict[int, tuple[int, int, int]]:
    """Category value -> fill RGB of the default style QGIS loads from ``layer_styles``."""
    import sqlite3
    import xml.etree.ElementTree as ET

    with sqlite3.connect(gpkg) as db:
        qml = db.execute("select styleQML from layer_styles where useAsDefault = 1").fetchone()[0]
    root = ET.fromstring(qml.split("\n", 1)[1])
    symbol_of = {c.get("symbol"): int(c.get("value")) for c in root.iter("category")}
    colours = {}
    for symbol in root.iter("symbol"):
        fill = next(o.get("value") for o in symbol.iter("Option") if o.get("name") == "color")
        colours[symbol_of[symbol.get("name")]] = tuple(int(v) for v in fill.split(",")[:3])
    return colours


def _raster_colours(tif) -> tuple[dict[int, tuple[int, int, int]], dict[int, tuple[int, int, int]]]:
    """(colour table, .qml sidecar palette) of a class raster, value -> RGB."""
    import xml.etree.ElementTree as ET

    with rasterio.open(tif) as src:
        table = {k: tuple(v[:3]) for k, v in src.colormap(1).items()}
    root = ET.fromstring(tif.with_suffix(".qml").read_text().split("\n", 1)[1])
    sidecar = {int(e.get("value")): tuple(int(e.get("color")[i:i + 2], 16) for i in (1, 3, 5))
               for e in root.iter("paletteEntry")}
    return table, sidecar


def _gallery_colours(gpkg, folder) -> dict[int, tuple[int, int, int]]:
    from geoalps.classes.gallery import make_gallery

    report = make_gallery(gpkg, folder / f"{gpkg.stem}.gallery.png", scenes=[SCENE], chips_per_class=1,
                          random_chips=0, overwrite=True)
    return {c["class"]: tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in report["classes"]}


def test_a_pseudo_class_keeps_its_colour_through_naming(labelled, tmp_path):
    """Pseudo-class 5 keeps its colour, and merged pseudo-class 2 takes that of 0 (the first of
    "field"), in the layer style, the gallery, the label raster's colour table and its .qml,
    although naming renumbers them (class ids 4 and 0)."""
    import shutil

    from geoalps.outputs.style import class_colors

    model = tmp_path / "km.joblib"
    shutil.copy(labelled / "km.joblib", model)
    before = {"layer": _layer_style_colours(labelled / "out.gpkg"), "gallery": _gallery_colours(labelled / "out.gpkg", tmp_path)}
    before["table"], before["qml"] = _raster_colours(labelled / "out.tif")
    pseudo = class_colors(7)
    for place, colours in before.items():
        assert [colours[k] for k in range(7)] == pseudo, place

    report = name_classes(labelled / "out.gpkg", tmp_path / "named.gpkg", names="0=field,2=field,6=shrub",
                          kmeans_model=model)
    ids = report.names.class_ids()
    assert (ids[5], ids[2], ids[6]) == (4, 0, 5)  # naming renumbers: class 5 is class id 4
    named_objects = pyogrio.read_dataframe(tmp_path / "named.gpkg", layer="masks", read_geometry=False)
    assert {5, 2, 6} <= set(named_objects["pseudo_class"])
    label(SCENE, tmp_path / "again.gpkg", raster_out=tmp_path / "again.tif", kmeans_model=model, **FAST)
    after_layer = _layer_style_colours(tmp_path / "named.gpkg")
    relabelled_layer = _layer_style_colours(tmp_path / "again.gpkg")
    after_table, after_qml = _raster_colours(tmp_path / "again.tif")
    after_gallery = _gallery_colours(tmp_path / "named.gpkg", tmp_path)  # by pseudo-class
    for k, first in ((5, 5), (2, 0), (0, 0), (1, 1), (6, 6)):
        expected = before["layer"][first]
        for place, colour in (("named layer", after_layer[ids[k]]), ("relabelled layer", relabelled_layer[ids[k]]),
                              ("colour table", after_table[ids[k]]), ("raster .qml", after_qml[ids[k]]),
                              ("gallery", after_gallery[k])):
            assert colour == expected, (k, place)
    assert after_layer[ids[5]] == (145, 30, 180)  # class 5's purple, which "shrub" no longer takes
    assert after_layer[ids[6]] == (70, 240, 240)


def test_classes_without_examples_take_the_nearest_named_class():
    """fill_from_centres: each class no example touched takes the name of the voted class whose
    centre is nearest; voted classes keep theirs; without any voted class nothing changes."""
    from geoalps.classes.naming import NamingReport, fill_from_centres
    from geoalps.clustering.names import ClassNames

    centres = np.array([[0.0, 0.0], [0.4, 0.1], [5.0, 5.0], [4.0, 5.5], [2.4, 2.4]])
    voted = NamingReport(ClassNames(5, {0: "water", 2: "tree"}), {0: {"water": 1.0}, 2: {"tree": 1.0}})
    filled = fill_from_centres(voted, centres)
    assert filled.names.names == {0: "water", 1: "water", 2: "tree", 3: "tree", 4: "water"}
    assert filled.filled == {1: 0, 3: 2, 4: 0}
    assert filled.votes == voted.votes
    nothing = NamingReport(ClassNames(5, {}))
    assert fill_from_centres(nothing, centres).names.names == {}
