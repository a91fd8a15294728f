"""Pseudo-class gallery, Name pseudo-classes and Evaluate pseudo-labels against a fake geoalps:
the argument lists, the layers handed over as files, and the outputs read back."""
from __future__ import annotations

import json
import os

import processing
import pytest
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from helpers import RecordingFeedback, read_record


def _memory_layer(uri: str, rows: list[tuple[str, list]]) -> QgsVectorLayer:
    layer = QgsVectorLayer(uri, "mem", "memory")
    features = []
    for wkt, attributes in rows:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        feature.setAttributes(attributes)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def _write(layer: QgsVectorLayer, path: str, layer_name: str, driver: str = "GPKG") -> str:
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.layerName = layer_name
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, path, QgsProject.instance().transformContext(), options
    )
    assert error == QgsVectorFileWriter.NoError, message
    return path


@pytest.fixture(scope="module")
def labels_gpkg(qgis_app, tmp_path_factory) -> str:
    """A stand-in for a geoalps output: layer "masks" with pseudo_class, EPSG:32633."""
    squares = [
        (f"POLYGON(({x} 4999990, {x + 8} 4999990, {x + 8} 4999998, {x} 4999998, {x} 4999990))", [i, i % 2])
        for i, x in enumerate((500001, 500011, 500021))
    ]
    layer = _memory_layer("Polygon?crs=EPSG:32633&field=instance_id:integer&field=pseudo_class:integer", squares)
    return _write(layer, str(tmp_path_factory.mktemp("labels") / "labels.gpkg"), "masks")


def gallery_params(labels, tmp_path, **extra) -> dict:
    params = {"INPUT": labels, "SCENES": None, "CHIPS": 6, "RANDOM_CHIPS": 2, "SEED": 0,
              "OUTPUT": str(tmp_path / "out" / "gallery.png")}
    params.update(extra)
    return params


def test_gallery_arguments(qgis_app, fake_cli, labels_gpkg, tiny_raster, tmp_path):
    params = gallery_params(labels_gpkg, tmp_path, SCENES=[tiny_raster], CHIPS=1, RANDOM_CHIPS=2, SEED=3)
    results = processing.run("geoalps:classgallery", params, feedback=RecordingFeedback())
    assert read_record(fake_cli)["argv"] == [
        "classes", "gallery", labels_gpkg, "-o", params["OUTPUT"], "--chips", "1",
        "--random-chips", "1",  # at most the chips per class, which geoalps requires
        "--seed", "3", "--scene", tiny_raster, "--overwrite",
    ]
    assert results["OUTPUT"] == params["OUTPUT"] and os.path.exists(params["OUTPUT"])


def test_gallery_html_from_a_layer_with_its_layername(qgis_app, fake_cli, labels_gpkg, tmp_path):
    params = gallery_params(f"{labels_gpkg}|layername=masks", tmp_path, OUTPUT=str(tmp_path / "g.html"))
    processing.run("geoalps:classgallery", params)
    argv = read_record(fake_cli)["argv"]
    assert argv[:5] == ["classes", "gallery", labels_gpkg, "-o", str(tmp_path / "g.html")]


def test_gallery_refuses_other_pictures_and_non_geopackages(qgis_app, fake_cli, labels_gpkg, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"\.png or \.html"):
        processing.run("geoalps:classgallery", gallery_params(labels_gpkg, tmp_path, OUTPUT=str(tmp_path / "g.jpg")))
    shp = _write(QgsVectorLayer(labels_gpkg, "l", "ogr"), str(tmp_path / "labels.shp"), "labels", "ESRI Shapefile")
    with pytest.raises(QgsProcessingException, match="not a GeoPackage"):
        processing.run("geoalps:classgallery", gallery_params(shp, tmp_path))


def name_params(labels, tmp_path, **extra) -> dict:
    params = {"INPUT": labels, "EXAMPLES": None, "NAME_FIELD": "name", "NAMES": "", "KMEANS_MODEL": None,
              "OUTPUT": str(tmp_path / "out" / "named.gpkg")}
    params.update(extra)
    return params


def test_name_classes_with_a_mapping_reports_the_names(qgis_app, fake_cli, labels_gpkg, tmp_path):
    model = tmp_path / "km.joblib"
    model.write_bytes(b"model")
    feedback = RecordingFeedback()
    params = name_params(labels_gpkg, tmp_path, NAMES=" 0=water ", KMEANS_MODEL=str(model))
    results = processing.run("geoalps:nameclasses", params, feedback=feedback)
    argv = read_record(fake_cli)["argv"]
    assert argv[:9] == ["classes", "name", labels_gpkg, "-o", params["OUTPUT"], "--names", "0=water",
                        "--kmeans-model", str(model)]
    assert argv[9] == "--report" and argv[-1] == "--overwrite"
    assert not os.path.exists(argv[10])  # the temporary report is read and removed
    assert results["CLASS_NAMES"] == "water,class 1"
    assert results["NAMED_CLASSES"] == 1 and results["UNUSED_EXAMPLES"] == 1 and results["CONFLICTS"] == 0
    assert any("under no object" in w for w in feedback.warnings)
    assert model.read_bytes() == b"model"  # an input, never treated as an output to clean up


def test_name_classes_writes_a_memory_example_layer_to_a_file(qgis_app, fake_cli, labels_gpkg, tmp_path):
    examples = _memory_layer(
        "Point?crs=EPSG:4326&field=name:string&field=note:string",
        [("POINT(15.0 45.1)", ["water", "x"]), ("POINT(15.1 45.1)", ["roof", "y"])],
    )
    feedback = RecordingFeedback()
    processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=examples), feedback=feedback)
    argv = read_record(fake_cli)["argv"]
    assert argv[5] == "--examples" and argv[7:9] == ["--field", "name"]
    written = QgsVectorLayer(argv[6], "written", "ogr")
    assert written.isValid() and argv[6].endswith(".gpkg")
    assert written.featureCount() == 2
    assert written.crs().authid() == "EPSG:4326"
    assert "note" not in written.fields().names()  # only the name field travels
    assert sorted(f["name"] for f in written.getFeatures()) == ["roof", "water"]
    assert any("wrote it to" in line for line in feedback.infos)
    del written


def test_name_classes_splits_conflicts_unless_told_not_to(qgis_app, fake_cli, labels_gpkg, tmp_path):
    examples = _memory_layer("Point?crs=EPSG:4326&field=name:string", [("POINT(15 45)", ["water"])])
    processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=examples))
    assert "--no-split" not in read_record(fake_cli)["argv"]  # the CLI's default: split
    processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=examples, SPLIT=False))
    argv = read_record(fake_cli)["argv"]
    assert argv[7:10] == ["--field", "name", "--no-split"]
    processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, NAMES="0=a", SPLIT=False))
    assert "--no-split" not in read_record(fake_cli)["argv"]  # a mapping names whole classes anyway


def test_name_classes_passes_a_plain_file_as_is_and_a_filtered_one_as_a_copy(qgis_app, fake_cli, labels_gpkg,
                                                                             tmp_path):
    examples = _memory_layer("Point?crs=EPSG:32633&field=label:string",
                             [("POINT(500005 4999994)", ["water"]), ("POINT(500015 4999994)", ["roof"])])
    geojson = _write(examples, str(tmp_path / "examples.geojson"), "examples", "GeoJSON")
    processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=geojson, NAME_FIELD="label"))
    assert read_record(fake_cli)["argv"][5:9] == ["--examples", geojson, "--field", "label"]

    filtered = QgsVectorLayer(geojson, "filtered", "ogr")
    filtered.setSubsetString("\"label\" = 'roof'")
    processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=filtered, NAME_FIELD="label"))
    copy = read_record(fake_cli)["argv"][6]
    assert copy != geojson
    written = QgsVectorLayer(copy, "copy", "ogr")
    assert [f["label"] for f in written.getFeatures()] == ["roof"]
    del written, filtered


def test_name_classes_wants_examples_or_a_mapping(qgis_app, fake_cli, labels_gpkg, tmp_path):
    examples = _memory_layer("Point?crs=EPSG:4326&field=name:string", [("POINT(15 45)", ["water"])])
    with pytest.raises(QgsProcessingException, match="either example"):
        processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path))
    with pytest.raises(QgsProcessingException, match="either example"):
        processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=examples, NAMES="0=a"))
    with pytest.raises(QgsProcessingException, match="no field 'kind'"):
        processing.run("geoalps:nameclasses", name_params(labels_gpkg, tmp_path, EXAMPLES=examples, NAME_FIELD="kind"))


def evaluate_params(prediction, truth, tmp_path, **extra) -> dict:
    params = {"PREDICTION": prediction, "TRUTH": truth, "TRUTH_FIELD": None, "OBJECTS": None, "IOU": 0.5,
              "TRUTH_NODATA": "", "OBJECTS_BY": 0, "OBJECT_CLASSES": "", "BOX": False, "MIN_OBJECT_PX": 64,
              "OUTPUT": str(tmp_path / "out" / "scores.json"), "FIGURE": None}
    params.update(extra)
    return params


def test_evaluate_arguments_and_scores(qgis_app, fake_cli, tiny_raster, tmp_path):
    figure = str(tmp_path / "out" / "confusion.png")
    params = evaluate_params(tiny_raster, tiny_raster, tmp_path, FIGURE=figure, TRUTH_NODATA="0")
    results = processing.run("geoalps:evaluate", params)
    assert read_record(fake_cli)["argv"] == [
        "evaluate", tiny_raster, tiny_raster, "--json", params["OUTPUT"], "--figure", figure,
        "--truth-nodata", "0", "--overwrite",
    ]
    assert results["MANY_TO_ONE_MIOU"] == 0.5 and results["PIXEL_ACCURACY"] == 0.75
    assert results["HUNGARIAN_MIOU"] == 0.25 and results["PURITY"] == 0.8
    assert results["NMI"] is None  # null in the JSON
    assert results["FIGURE"] == figure and os.path.exists(figure)


def test_evaluate_polygon_truth_objects_and_a_geoalps_geopackage(qgis_app, fake_cli, labels_gpkg, tiny_raster,
                                                                 tmp_path):
    truth = _memory_layer(
        "Polygon?crs=EPSG:32633&field=kind:string&field=other:integer",
        [("POLYGON((500000 4999970, 500032 4999970, 500032 5000000, 500000 5000000, 500000 4999970))",
          ["roof", 1])],
    )
    params = evaluate_params(labels_gpkg, truth, tmp_path, TRUTH_FIELD="kind", OBJECTS=tiny_raster,
                             IOU=0.25, OBJECTS_BY=1, OBJECT_CLASSES="1, 2", BOX=True, MIN_OBJECT_PX=10)
    results = processing.run("geoalps:evaluate", params)
    argv = read_record(fake_cli)["argv"]
    assert argv[1] == labels_gpkg
    written = QgsVectorLayer(argv[2], "truth", "ogr")
    assert written.isValid() and [f["kind"] for f in written.getFeatures()] == ["roof"]
    assert argv[3:] == [
        "--json", params["OUTPUT"], "--truth-field", "kind", "--objects", tiny_raster, "--objects-by", "value",
        "--iou", "0.25", "--object-class", "1", "--object-class", "2", "--box", "--min-object-px", "10",
        "--overwrite",
    ]
    assert results["OBJECT_RECALL"] == 0.125
    with open(params["OUTPUT"]) as handle:
        assert json.load(handle)["pixel_accuracy"] == 0.75
    del written


def test_evaluate_checks_its_inputs(qgis_app, fake_cli, tiny_raster, tmp_path):
    truth = _memory_layer("Polygon?crs=EPSG:32633&field=kind:string",
                          [("POLYGON((500000 4999970, 500032 4999970, 500032 5000000, 500000 4999970))", ["a"])])
    with pytest.raises(QgsProcessingException, match="needs its class field"):
        processing.run("geoalps:evaluate", evaluate_params(tiny_raster, truth, tmp_path))
    with pytest.raises(QgsProcessingException, match="whole numbers"):
        processing.run("geoalps:evaluate", evaluate_params(tiny_raster, tiny_raster, tmp_path, OBJECT_CLASSES="x"))
    with pytest.raises(QgsProcessingException, match=r"\.json"):
        processing.run("geoalps:evaluate", evaluate_params(tiny_raster, tiny_raster, tmp_path,
                                                           OUTPUT=str(tmp_path / "s.txt")))
