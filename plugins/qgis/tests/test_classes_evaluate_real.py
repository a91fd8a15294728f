"""End to end in the QGIS process with the real geoalps: label the sample scene (classical engine),
then name its pseudo-classes from example points drawn in a memory layer, score it against the
sample ground truth, and draw the gallery.
"""
from __future__ import annotations

import json
import os
import time

import processing
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProject,
    QgsVectorLayer,
)

from conftest import SAMPLE_SCENE, require_real_cli, require_sample_scene
from helpers import RecordingFeedback

CLASSES = 6
TRUTH = SAMPLE_SCENE.with_name(SAMPLE_SCENE.name.replace(".tif", ".gt.tif"))
EXAMPLE_NAMES = ("meadow", "roof")


@pytest.fixture(scope="module")
def labelled(qgis_app, tmp_path_factory):
    """One real "Auto-label raster" run: polygons, class raster and k-means model."""
    cli = require_real_cli()
    scene = require_sample_scene()
    out = tmp_path_factory.mktemp("classes")
    params = {
        "INPUT": str(scene), "BANDS": "", "ENGINE": 2, "CHECKPOINT": None, "MODEL_TYPE": 0,
        "CLASSES": CLASSES, "TILE_SIZE": 640, "OVERLAP": 64, "KMEANS_MODEL": None, "SEED": 0,
        "OUTPUT": str(out / "labels.gpkg"), "RASTER_OUTPUT": str(out / "labels.tif"),
        "KMEANS_MODEL_OUT": str(out / "km.joblib"),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEOALPS_CLI", cli)
        started = time.monotonic()
        processing.run("geoalps:autolabel", params)
        print(f"autolabel (tile 640) took {time.monotonic() - started:.1f} s")
        yield params, out, patch


def _examples_at_objects(labels_path: str) -> tuple[QgsVectorLayer, dict[int, str]]:
    """A memory point layer in EPSG:4326 with one named point in the largest object of two
    pseudo-classes (a point that lies in that object only); {instance_id: name}."""
    labels = QgsVectorLayer(labels_path, "labels", "ogr")
    by_class: dict[int, list[QgsFeature]] = {}
    for feature in labels.getFeatures():
        by_class.setdefault(int(feature["pseudo_class"]), []).append(feature)
    to_wgs84 = QgsCoordinateTransform(labels.crs(), QgsCoordinateReferenceSystem("EPSG:4326"),
                                      QgsProject.instance())
    examples = QgsVectorLayer("Point?crs=EPSG:4326&field=name:string", "examples", "memory")
    chosen: dict[int, str] = {}
    features = []
    classes = sorted(by_class, key=lambda k: -len(by_class[k]))
    for name, k in zip(EXAMPLE_NAMES, classes):
        for candidate in sorted(by_class[k], key=lambda f: -f.geometry().area()):
            point = candidate.geometry().pointOnSurface()
            under = [f.id() for f in labels.getFeatures(QgsFeatureRequest().setFilterRect(point.boundingBox()))
                     if f.geometry().intersects(point)]
            if under == [candidate.id()]:
                break
        else:
            pytest.fail(f"no object of class {k} has a point of its own")
        point.transform(to_wgs84)
        feature = QgsFeature(examples.fields())
        feature.setGeometry(QgsGeometry(point))
        feature.setAttributes([name])
        features.append(feature)
        chosen[int(candidate["instance_id"])] = name
    assert examples.dataProvider().addFeatures(features)[0]
    del labels
    return examples, chosen


def test_name_classes_from_memory_examples_in_wgs84(labelled):
    params, out, _ = labelled
    examples, chosen = _examples_at_objects(params["OUTPUT"])
    named_path = str(out / "named.gpkg")
    feedback = RecordingFeedback()
    started = time.monotonic()
    results = processing.runAndLoadResults("geoalps:nameclasses", {
        "INPUT": params["OUTPUT"], "EXAMPLES": examples, "NAME_FIELD": "name", "NAMES": "",
        "KMEANS_MODEL": None, "OUTPUT": named_path,
    }, feedback=feedback)
    print(f"nameclasses took {time.monotonic() - started:.1f} s")
    assert results["OUTPUT"] == named_path
    assert results["NAMED_CLASSES"] == 2 and results["UNUSED_EXAMPLES"] == 0 and results["CONFLICTS"] == 0
    assert set(EXAMPLE_NAMES) <= set(results["CLASS_NAMES"].split(","))
    assert any(line.startswith("named classes:") for line in feedback.console)  # the CLI's report

    named = QgsVectorLayer(named_path, "named", "ogr")
    assert named.isValid() and {"class_id", "class_name"} <= set(named.fields().names())
    found = {int(f["instance_id"]): f["class_name"] for f in named.getFeatures()}
    for instance_id, name in chosen.items():
        assert found[instance_id] == name
    assert {n for n in found.values() if n not in EXAMPLE_NAMES} <= {f"class {k}" for k in range(CLASSES)}
    del named

    loaded = [layer for layer in QgsProject.instance().mapLayers().values()
              if isinstance(layer, QgsVectorLayer) and layer.source().split("|")[0] == named_path]
    assert len(loaded) == 1
    renderer = loaded[0].renderer()
    assert renderer.type() == "categorizedSymbol"
    labels = [c.label() for c in renderer.categories()]
    assert set(EXAMPLE_NAMES) <= set(labels)
    QgsProject.instance().removeAllMapLayers()
    del examples


def test_name_classes_from_a_mapping_stores_the_names_in_the_model(labelled):
    params, out, _ = labelled
    model = params["KMEANS_MODEL_OUT"]
    before = os.stat(model).st_mtime_ns
    results = processing.run("geoalps:nameclasses", {
        "INPUT": params["OUTPUT"], "EXAMPLES": None, "NAME_FIELD": "name", "NAMES": "0=water,1=water",
        "KMEANS_MODEL": model, "OUTPUT": str(out / "mapped.gpkg"),
    })
    assert results["CLASS_NAMES"].split(",")[0] == "water"
    assert os.stat(model).st_mtime_ns != before
    mapped = QgsVectorLayer(results["OUTPUT"], "mapped", "ogr")
    merged = {(f["class_id"], f["class_name"]) for f in mapped.getFeatures() if f["pseudo_class"] in (0, 1)}
    assert len(merged) == 1 and next(iter(merged))[1] == "water"  # one class on output
    del mapped


def test_evaluate_against_the_sample_truth(labelled):
    params, out, _ = labelled
    if not TRUTH.is_file():
        pytest.skip(f"{TRUTH} missing")
    figure = str(out / "confusion.png")
    started = time.monotonic()
    results = processing.run("geoalps:evaluate", {
        "PREDICTION": params["RASTER_OUTPUT"], "TRUTH": str(TRUTH), "TRUTH_FIELD": None, "OBJECTS": None,
        "IOU": 0.5, "TRUTH_NODATA": "", "OBJECTS_BY": 0, "OBJECT_CLASSES": "", "BOX": False,
        "MIN_OBJECT_PX": 64, "OUTPUT": str(out / "scores.json"), "FIGURE": figure,
    })
    print(f"evaluate took {time.monotonic() - started:.1f} s")
    with open(results["OUTPUT"]) as handle:
        scores = json.load(handle)
    for name, key in (("MANY_TO_ONE_MIOU", "many_to_one_miou"), ("PIXEL_ACCURACY", "pixel_accuracy"),
                      ("HUNGARIAN_MIOU", "hungarian_miou"), ("NMI", "nmi")):
        assert results[name] == pytest.approx(scores[key]), name
        assert 0.0 <= results[name] <= 1.0, name
    assert results["MANY_TO_ONE_MIOU"] > 0.1
    assert os.path.getsize(figure) > 0


def test_gallery_writes_a_png(labelled):
    params, out, _ = labelled
    picture = str(out / "gallery.png")
    started = time.monotonic()
    results = processing.run("geoalps:classgallery", {
        "INPUT": params["OUTPUT"], "SCENES": [params["INPUT"]], "CHIPS": 3, "RANDOM_CHIPS": 1, "SEED": 0,
        "OUTPUT": picture,
    })
    print(f"classgallery took {time.monotonic() - started:.1f} s")
    assert results["OUTPUT"] == picture
    with open(picture, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(picture) > 0
