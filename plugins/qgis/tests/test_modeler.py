"""GeoALPS algorithms as steps of a Graphical Modeler model, and with Processing's temp outputs."""
from __future__ import annotations

import os

import processing
from qgis.core import (
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterLayer,
)

from helpers import read_record


def build_model() -> QgsProcessingModelAlgorithm:
    """A model: raster input -> Auto-label raster (classical, 5 classes) -> polygons output."""
    model = QgsProcessingModelAlgorithm("label a scene", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"),
                            QgsProcessingModelParameter("scene"))
    child = QgsProcessingModelChildAlgorithm("geoalps:autolabel")
    child.setChildId("autolabel")
    fixed = {"BANDS": "", "ENGINE": 2, "MODEL_TYPE": 0, "CLASSES": 5, "TILE_SIZE": 256,
             "OVERLAP": 32, "SEED": 1}
    for name, value in fixed.items():
        child.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    output = QgsProcessingModelOutput("labels", "Labels")
    output.setChildId("autolabel")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"labels": output})
    model.addChildAlgorithm(child)
    return model


def test_autolabel_runs_as_a_model_step(qgis_app, fake_cli, tiny_raster, tmp_path):
    model = build_model()
    assert model.validate()[0], model.validate()[1]
    target = str(tmp_path / "model out" / "labels.gpkg")
    results = processing.run(model, {"scene": tiny_raster, "autolabel:labels": target})
    assert results["autolabel:labels"] == target
    argv = read_record(fake_cli)["argv"]
    assert argv[:4] == ["label", tiny_raster, "-o", target]
    assert argv[argv.index("--classes") + 1] == "5"
    assert os.path.exists(target)


def test_temporary_outputs_get_gpkg_and_tif_paths(qgis_app, fake_cli, tiny_raster):
    params = {
        "INPUT": tiny_raster, "BANDS": "", "ENGINE": 2, "CHECKPOINT": None, "MODEL_TYPE": 0,
        "CLASSES": 3, "TILE_SIZE": 512, "OVERLAP": 64, "KMEANS_MODEL": None, "SEED": 0,
        "OUTPUT": "TEMPORARY_OUTPUT", "RASTER_OUTPUT": "TEMPORARY_OUTPUT", "KMEANS_MODEL_OUT": None,
    }
    results = processing.run("geoalps:autolabel", params)
    assert results["OUTPUT"].endswith(".gpkg") and os.path.exists(results["OUTPUT"])
    assert results["RASTER_OUTPUT"].endswith(".tif") and os.path.exists(results["RASTER_OUTPUT"])
