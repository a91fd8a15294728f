"""The provider registers with its algorithms, as the toolbox, the modeler and qgis_process see it."""
import pytest
from qgis.core import (QgsApplication, QgsProcessingAlgorithm, QgsProcessingParameterDefinition,
                       QgsProcessingParameterNumber)


def test_provider_registers_its_algorithms(qgis_app):
    provider = QgsApplication.processingRegistry().providerById("geoalps")
    assert provider is not None
    assert provider.name() == "GeoALPS"
    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == [
        "geoalps:autolabel", "geoalps:classgallery", "geoalps:evaluate", "geoalps:installgeoalps",
        "geoalps:nameclasses", "geoalps:predict", "geoalps:pretrain", "geoalps:train",
    ]
    assert provider.defaultVectorFileExtension() == "gpkg"


def test_autolabel_parameters(qgis_app):
    alg = QgsApplication.processingRegistry().algorithmById("geoalps:autolabel")
    assert alg.displayName() == "Auto-label raster"
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == [
        "INPUT", "BANDS", "BAND_NAMES", "ENGINE", "CHECKPOINT", "MODEL_TYPE", "CLASSES", "TILE_SIZE",
        "OVERLAP", "KMEANS_MODEL", "SEED", "WORKERS", "CLASSICAL_SCALE", "CLASSICAL_SPLIT", "TRUST_KMEANS_MODEL",
        "AOI_EXTENT", "AOI_LAYER", "RESUME", "OUTPUT", "RASTER_OUTPUT", "KMEANS_MODEL_OUT",
    ]
    # sam2 comes last, so the indexes of models and batch files saved before it still mean the same
    assert alg.parameterDefinition("ENGINE").options() == ["auto", "sam", "classical", "sam2"]
    assert alg.parameterDefinition("OUTPUT").defaultFileExtension() == "gpkg"
    scale = alg.parameterDefinition("CLASSICAL_SCALE")
    assert scale.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert scale.dataType() == QgsProcessingParameterNumber.Double
    assert (scale.defaultValue(), scale.minimum()) == (200.0, 1.0)
    resume = alg.parameterDefinition("RESUME")
    assert resume.type() == "boolean" and resume.defaultValue() is True
    assert [o.name() for o in alg.outputDefinitions()] == [
        "OUTPUT", "RASTER_OUTPUT", "KMEANS_MODEL_OUT", "FEATURE_COUNT",
    ]
    # Usable in the Graphical Modeler and batch mode: no flags hiding it.
    assert not alg.flags() & QgsProcessingAlgorithm.FlagHideFromModeler
    assert alg.shortHelpString()


def test_predict_parameters(qgis_app):
    alg = QgsApplication.processingRegistry().algorithmById("geoalps:predict")
    assert alg.displayName() == "Predict segmentation"
    assert [p.name() for p in alg.parameterDefinitions()] == ["MODEL", "INPUT", "OUTPUT", "POLYGONS"]
    assert alg.parameterDefinition("OUTPUT").defaultFileExtension() == "tif"


def test_class_gallery_parameters(qgis_app):
    alg = QgsApplication.processingRegistry().algorithmById("geoalps:classgallery")
    assert alg.displayName() == "Pseudo-class gallery"
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "INPUT", "SCENES", "CHIPS", "RANDOM_CHIPS", "SEED", "OUTPUT",
    ]
    assert alg.parameterDefinition("OUTPUT").defaultFileExtension() == "png"
    assert alg.parameterDefinition("CHIPS").defaultValue() == 6
    assert alg.shortHelpString()


def test_name_classes_parameters(qgis_app):
    alg = QgsApplication.processingRegistry().algorithmById("geoalps:nameclasses")
    assert alg.displayName() == "Name pseudo-classes from examples"
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "INPUT", "EXAMPLES", "NAME_FIELD", "SPLIT", "NAMES", "KMEANS_MODEL", "OUTPUT",
    ]
    assert alg.parameterDefinition("NAME_FIELD").parentLayerParameterName() == "EXAMPLES"
    assert alg.parameterDefinition("SPLIT").defaultValue() is True  # as the CLI: split unless --no-split
    assert alg.parameterDefinition("OUTPUT").defaultFileExtension() == "gpkg"
    assert [o.name() for o in alg.outputDefinitions()] == [
        "OUTPUT", "CLASS_NAMES", "NAMED_CLASSES", "UNUSED_EXAMPLES", "CONFLICTS",
    ]
    assert alg.shortHelpString()


def test_evaluate_parameters(qgis_app):
    alg = QgsApplication.processingRegistry().algorithmById("geoalps:evaluate")
    assert alg.displayName() == "Evaluate pseudo-labels"
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "PREDICTION", "TRUTH", "TRUTH_FIELD", "OBJECTS", "IOU", "TRUTH_NODATA", "OBJECTS_BY",
        "OBJECT_CLASSES", "BOX", "MIN_OBJECT_PX", "OUTPUT", "FIGURE",
    ]
    assert alg.parameterDefinition("TRUTH_FIELD").parentLayerParameterName() == "TRUTH"
    assert alg.parameterDefinition("OUTPUT").defaultFileExtension() == "json"
    assert alg.parameterDefinition("IOU").defaultValue() == 0.5
    outputs = [o.name() for o in alg.outputDefinitions()]
    for name in ("MANY_TO_ONE_MIOU", "PIXEL_ACCURACY", "HUNGARIAN_MIOU", "NMI", "OBJECT_RECALL"):
        assert name in outputs
    assert not alg.flags() & QgsProcessingAlgorithm.FlagHideFromModeler
    assert alg.shortHelpString()


def test_overlap_must_be_at_most_half_a_tile(qgis_app, tiny_raster, tmp_path):
    from qgis.core import QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("geoalps:autolabel")
    params = {"INPUT": tiny_raster, "TILE_SIZE": 256, "OVERLAP": 129,
              "OUTPUT": str(tmp_path / "o.gpkg")}
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    assert not ok and "overlap" in message.lower()
    params["OVERLAP"] = 128
    assert alg.checkParameterValues(params, QgsProcessingContext())[0]


@pytest.mark.parametrize("names, fragment", [("blue,green", "2 given but the raster has 3 bands"),
                                             ("blue,green,infrared", "unknown name 'infrared'")])
def test_band_names_must_name_each_band_from_the_vocabulary(qgis_app, tiny_raster, tmp_path, names, fragment):
    from qgis.core import QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("geoalps:autolabel")
    params = {"INPUT": tiny_raster, "TILE_SIZE": 256, "OVERLAP": 128, "BAND_NAMES": names,
              "OUTPUT": str(tmp_path / "o.gpkg")}
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    assert not ok and fragment in message
    params["BAND_NAMES"] = "Blue, green,red"
    assert alg.checkParameterValues(params, QgsProcessingContext())[0]


def test_cli_path_setting_is_registered_under_the_provider(qgis_app):
    from processing.core.ProcessingConfig import ProcessingConfig

    from geoalps_processing.settings import SETTING_CLI

    setting = ProcessingConfig.settings[SETTING_CLI]
    assert setting.group == "GeoALPS"
    assert "GEOALPS_CLI" in setting.description
