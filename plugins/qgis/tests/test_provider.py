"""The provider registers with its algorithms, as the toolbox, the modeler and qgis_process see it."""
from qgis.core import QgsApplication, QgsProcessingAlgorithm


def test_provider_registers_its_algorithms(qgis_app):
    provider = QgsApplication.processingRegistry().providerById("geoalps")
    assert provider is not None
    assert provider.name() == "GeoALPS"
    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == ["geoalps:autolabel", "geoalps:predict"]
    assert provider.defaultVectorFileExtension() == "gpkg"


def test_autolabel_parameters(qgis_app):
    alg = QgsApplication.processingRegistry().algorithmById("geoalps:autolabel")
    assert alg.displayName() == "Auto-label raster"
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == [
        "INPUT", "BANDS", "ENGINE", "CHECKPOINT", "MODEL_TYPE", "CLASSES", "TILE_SIZE",
        "OVERLAP", "KMEANS_MODEL", "SEED", "WORKERS", "OUTPUT", "RASTER_OUTPUT", "KMEANS_MODEL_OUT",
    ]
    assert alg.parameterDefinition("ENGINE").options() == ["auto", "sam", "classical"]
    assert alg.parameterDefinition("OUTPUT").defaultFileExtension() == "gpkg"
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


def test_overlap_must_be_at_most_half_a_tile(qgis_app, tiny_raster, tmp_path):
    from qgis.core import QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("geoalps:autolabel")
    params = {"INPUT": tiny_raster, "TILE_SIZE": 256, "OVERLAP": 129,
              "OUTPUT": str(tmp_path / "o.gpkg")}
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    assert not ok and "overlap" in message.lower()
    params["OVERLAP"] = 128
    assert alg.checkParameterValues(params, QgsProcessingContext())[0]


def test_cli_path_setting_is_registered_under_the_provider(qgis_app):
    from processing.core.ProcessingConfig import ProcessingConfig

    from geoalps_processing.settings import SETTING_CLI

    setting = ProcessingConfig.settings[SETTING_CLI]
    assert setting.group == "GeoALPS"
    assert "GEOALPS_CLI" in setting.description
