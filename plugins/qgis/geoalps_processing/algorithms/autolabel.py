"""geoalps:autolabel — "Auto-label raster", a wrapper of ``geoalps label``."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from ..limits import (CLASSES_DEFAULT, CLASSES_MAX, CLASSES_MIN, CLASSICAL_SCALE_DEFAULT, CLASSICAL_SCALE_MIN,
                      CLASSICAL_SPLIT_DEFAULT, ENGINES, MODEL_TYPES, OVERLAP_DEFAULT_PX, RESUME_REFUSED_EXIT_CODE, SEED_DEFAULT, TILE_SIZE_DEFAULT_PX,
                      TILE_SIZE_MIN_PX, WORK_FOLDER_SUFFIX, band_names_problem, enum_help, overlap_problem)
from ..progress import ERROR_PREFIX, TileCounts, parse_tile_counts
from .base import GeoAlpsAlgorithm, feature_count, layer_path

HELP = f"""Finds objects in a raster without training data and groups them into pseudo-classes.

A mask engine proposes object masks tile by tile (SAM when a checkpoint is available, otherwise a weight-free classical segmenter); each mask gets features (spectral statistics, shape and, with SAM, its embedding) and online k-means assigns it one of K pseudo-classes. The result is a GeoPackage of polygons (layer "masks": instance_id, pseudo_class, score, area, scene) styled by class, and optionally a class raster (0..K-1, nodata 255, with a colour table).

Bands: which bands the mask engine sees as red, green, blue, as 1-based indices ("3,2,1") or a preset name ("rgb"); empty lets geoalps choose (the red, green and blue bands when the band names are known).
Band names (optional): what each band is, in band order, e.g. "blue,green,red,nir" for Landsat-8 B2-B5, Sentinel-2 B2,B3,B4,B8 or PlanetScope 4-band; names: coastal, blue, green, red, rededge, nir, swir1, swir2, pan, other. Empty: from the raster's band descriptions or colour interpretation; when those say nothing, no NDVI is computed (ratios that need no band roles stand in).
Engine (qgis_process index): {enum_help(ENGINES)}. Model type (auto: from the checkpoint; vit_*: SAM, hiera_*: SAM 2): {enum_help(MODEL_TYPES)}.
Parallel worker processes (advanced): tiles run on a local dask cluster of that many processes; each needs its own memory (a SAM model per process).
Classical engine region size (advanced): only for the classical engine; larger gives larger regions (raise it when tree crowns or roofs come out split into pieces, lower it when neighbouring objects are merged). Default {CLASSICAL_SCALE_DEFAULT:g}.
Classical split (advanced, {'on' if CLASSICAL_SPLIT_DEFAULT else 'off'} by default): cut the classical engine's land-cover-sized regions where the tile's spectral clusters change, so two covers with a soft edge between them do not share a region; roofs and crowns stay whole. Untick it for the regions of earlier versions, at about 0.6 times the time per tile.
Area of interest (optional): an extent or a polygon layer; only the part of the raster inside it is read and labelled, polygons are clipped to it (at pixel edges) and the class raster covers its window. Give one or the other, not both.
Existing k-means model: reuse the classes of an earlier run (its "Fitted k-means model" output) so that class ids mean the same across scenes; it is not refitted. A model saved by an older geoalps is a pickle, which runs code when read: tick "Trust an existing k-means model" (advanced) only for files you made.
Resume an interrupted run (on by default): every finished tile is kept in a work folder beside the output (OUTPUT.geoalps-work) until the run completes, also when it is cancelled or fails. Run again with the same output and this on, and only the missing tiles are labelled; the result is the same as an uninterrupted run's, and the log says how many tiles were resumed. If the inputs or settings changed since, the run starts over (the log says why). Off: always start over.

The work runs in your geoalps environment (the "geoalps" command or that environment's Python), made by "Install or update geoalps" (GeoALPS > Setup) or set in Processing > Options > Providers > GeoALPS or in the GEOALPS_CLI environment variable. Cancelling stops it within a second or two and leaves no output (only the work folder, for a resume)."""


class AutoLabelAlgorithm(GeoAlpsAlgorithm):
    """Auto-label raster: object masks + online k-means, as a styled GeoPackage (and raster)."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    BAND_NAMES = "BAND_NAMES"
    ENGINE = "ENGINE"
    CHECKPOINT = "CHECKPOINT"
    MODEL_TYPE = "MODEL_TYPE"
    CLASSES = "CLASSES"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    KMEANS_MODEL = "KMEANS_MODEL"
    KMEANS_MODEL_OUT = "KMEANS_MODEL_OUT"
    SEED = "SEED"
    WORKERS = "WORKERS"
    CLASSICAL_SCALE = "CLASSICAL_SCALE"
    AOI_EXTENT = "AOI_EXTENT"
    AOI_LAYER = "AOI_LAYER"
    RESUME = "RESUME"
    OUTPUT = "OUTPUT"
    RASTER_OUTPUT = "RASTER_OUTPUT"
    FEATURE_COUNT = "FEATURE_COUNT"
    CLASSICAL_SPLIT = "CLASSICAL_SPLIT"
    TRUST_KMEANS_MODEL = "TRUST_KMEANS_MODEL"
    OUTPUTS = (OUTPUT, RASTER_OUTPUT, KMEANS_MODEL_OUT)
    STYLED = (OUTPUT, RASTER_OUTPUT)

    ALGORITHM_ID = "autolabel"
    DISPLAY_NAME = "Auto-label raster"
    HELP = HELP
    TAGS = ("sam", "segment anything", "unsupervised", "pseudo-label", "k-means", "segmentation")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, "Bands shown to the mask engine (e.g. 3,2,1 or rgb; empty: automatic)",
            defaultValue="", optional=True,
        ))
        self.addParameter(QgsProcessingParameterString(
            self.BAND_NAMES, "Band names, one a band (e.g. blue,green,red,nir; empty: from the raster)",
            defaultValue="", optional=True,  # optional: models saved before it existed stay valid
        ))
        self.addParameter(QgsProcessingParameterEnum(
            self.ENGINE, "Mask engine", options=list(ENGINES), defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "SAM checkpoint", behavior=QgsProcessingParameterFile.File,
            fileFilter="SAM checkpoints (*.pth *.pt);;All files (*)", optional=True,
        ))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL_TYPE, "SAM model type", options=list(MODEL_TYPES), defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.CLASSES, "Number of pseudo-classes", type=QgsProcessingParameterNumber.Integer,
            defaultValue=CLASSES_DEFAULT, minValue=CLASSES_MIN, maxValue=CLASSES_MAX,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (pixels)", type=QgsProcessingParameterNumber.Integer,
            defaultValue=TILE_SIZE_DEFAULT_PX, minValue=TILE_SIZE_MIN_PX,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap (pixels)", type=QgsProcessingParameterNumber.Integer,
            defaultValue=OVERLAP_DEFAULT_PX, minValue=0,
        ))
        self.addParameter(QgsProcessingParameterFile(
            self.KMEANS_MODEL, "Existing k-means model to reuse (optional)",
            behavior=QgsProcessingParameterFile.File,
            fileFilter="k-means models (*.joblib);;All files (*)", optional=True,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, "Random seed", type=QgsProcessingParameterNumber.Integer,
            defaultValue=SEED_DEFAULT, minValue=0,
        ))
        workers = QgsProcessingParameterNumber(
            self.WORKERS, "Parallel worker processes (dask; 1 runs in one process; 0 = the machine's cores)",
            type=QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0,
            optional=True,  # models saved before this parameter existed stay valid
        )
        workers.setFlags(workers.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(workers)
        classical_scale = QgsProcessingParameterNumber(
            self.CLASSICAL_SCALE, "Classical engine region size (larger: larger regions; classical engine only)",
            type=QgsProcessingParameterNumber.Double, defaultValue=CLASSICAL_SCALE_DEFAULT,
            minValue=CLASSICAL_SCALE_MIN,
            optional=True,  # models saved before this parameter existed stay valid
        )
        classical_split = QgsProcessingParameterBoolean(
            self.CLASSICAL_SPLIT, "Classical engine: split land-cover regions where the spectral clusters change",
            defaultValue=CLASSICAL_SPLIT_DEFAULT, optional=True,
        )
        trust = QgsProcessingParameterBoolean(
            self.TRUST_KMEANS_MODEL, "Trust an existing k-means model saved by older geoalps (a pickle: only your own files)",
            defaultValue=False, optional=True,
        )
        for parameter in (classical_scale, classical_split, trust):  # optional: saved models stay valid
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        # optional: models saved before these parameters existed stay valid
        self.addParameter(QgsProcessingParameterExtent(self.AOI_EXTENT, "Area of interest: extent", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.AOI_LAYER, "Area of interest: polygon layer", types=[QgsProcessing.TypeVectorPolygon],
            optional=True,
        ))
        self.addParameter(QgsProcessingParameterBoolean(
            self.RESUME, "Resume an interrupted run (continue from the finished tiles kept beside the output)",
            defaultValue=True, optional=True,  # models saved before this parameter existed stay valid
        ))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Pseudo-label polygons", type=QgsProcessing.TypeVectorPolygon,
        ))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.RASTER_OUTPUT, "Pseudo-label raster", optional=True, createByDefault=False,
        ))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.KMEANS_MODEL_OUT, "Fitted k-means model", fileFilter="k-means models (*.joblib)",
            optional=True, createByDefault=False,
        ))
        self.addOutput(QgsProcessingOutputNumber(self.FEATURE_COUNT, "Number of polygons"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        problem = overlap_problem(tile, overlap)  # geoalps's rule, caught before the run starts
        if problem:
            return False, problem
        band_names = (self.parameterAsString(parameters, self.BAND_NAMES, context) or "").strip()
        if band_names:
            layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
            problem = band_names_problem(band_names, layer.bandCount() if layer is not None else None)
            if problem:
                return False, problem
        if parameters.get(self.AOI_EXTENT) not in (None, "") and parameters.get(self.AOI_LAYER) not in (None, ""):
            return False, "Give the area of interest as an extent or as a polygon layer, not both."
        reuse = self.parameterAsFile(parameters, self.KMEANS_MODEL, context)
        save = self.parameterAsFileOutput(parameters, self.KMEANS_MODEL_OUT, context)
        if reuse and save:
            return False, (
                "Give either an existing k-means model to reuse or a file to save the fitted one "
                "to, not both (a reused model is not refitted)."
            )
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(  # noqa: N802 (QGIS's name)
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> bool:
        # The main thread: a memory or filtered AOI layer is written to a file here.
        self._aoi = self.aoi_arguments(parameters, context, feedback)
        return True

    def aoi_arguments(self, parameters: dict, context: QgsProcessingContext,
                      feedback: QgsProcessingFeedback | None = None) -> list[str]:
        """``--aoi`` (and ``--aoi-crs``) for the extent or polygon layer given, or nothing."""
        if parameters.get(self.AOI_LAYER) not in (None, ""):
            layer = self.parameterAsVectorLayer(parameters, self.AOI_LAYER, context)
            if layer is None:
                raise QgsProcessingException("GeoALPS: the area-of-interest layer cannot be loaded.")
            return ["--aoi", layer_path(layer, context, feedback)]
        if parameters.get(self.AOI_EXTENT) in (None, ""):
            return []
        extent = self.parameterAsExtent(parameters, self.AOI_EXTENT, context)
        crs = self.parameterAsExtentCrs(parameters, self.AOI_EXTENT, context)
        if extent.isNull() or extent.isEmpty():
            return []
        box = ",".join(repr(v) for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()))
        args = ["--aoi", box]
        if crs.isValid():  # else the scene's CRS
            args += ["--aoi-crs", crs.authid() or crs.toWkt()]
        return args

    def arguments(self, parameters: dict, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback | None = None) -> tuple[list[str], list[str]]:
        """The ``geoalps label`` argument list and the files it writes (polygons first)."""
        scene = self.raster_file(parameters, self.INPUT, context)
        polygons = self.output_file(parameters, self.OUTPUT, context, (".gpkg",))
        raster = self.output_file(parameters, self.RASTER_OUTPUT, context, (".tif", ".tiff"))
        args = [
            "label", scene, "-o", polygons,
            "--engine", ENGINES[self.parameterAsEnum(parameters, self.ENGINE, context)],
            "--model-type", MODEL_TYPES[self.parameterAsEnum(parameters, self.MODEL_TYPE, context)],
            "--classes", str(self.parameterAsInt(parameters, self.CLASSES, context)),
            "--tile-size", str(self.parameterAsInt(parameters, self.TILE_SIZE, context)),
            "--overlap", str(self.parameterAsInt(parameters, self.OVERLAP, context)),
            "--seed", str(self.parameterAsInt(parameters, self.SEED, context)),
        ]
        workers = self.parameterAsInt(parameters, self.WORKERS, context) or 0
        if workers >= 1:  # 0 / unset: geoalps's default (the machine's cores)
            args += ["--workers", str(workers)]
        if parameters.get(self.CLASSICAL_SCALE) not in (None, ""):
            scale = self.parameterAsDouble(parameters, self.CLASSICAL_SCALE, context)
            if scale != CLASSICAL_SCALE_DEFAULT:  # the default: geoalps's own
                args += ["--classical-scale", repr(scale)]
        split = self._flag(parameters, self.CLASSICAL_SPLIT, context, CLASSICAL_SPLIT_DEFAULT)
        if split != CLASSICAL_SPLIT_DEFAULT:  # the default: geoalps's own
            args += ["--classical-split" if split else "--no-classical-split"]
        bands = (self.parameterAsString(parameters, self.BANDS, context) or "").strip()
        if bands:
            args += ["--bands", bands]
        band_names = (self.parameterAsString(parameters, self.BAND_NAMES, context) or "").strip()
        if band_names:
            args += ["--band-names", band_names]
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context)
        if checkpoint:
            args += ["--checkpoint", checkpoint]
        reuse = self.parameterAsFile(parameters, self.KMEANS_MODEL, context)
        save = self.parameterAsFileOutput(parameters, self.KMEANS_MODEL_OUT, context)
        if reuse:
            args += ["--kmeans-model", reuse]
            if self._flag(parameters, self.TRUST_KMEANS_MODEL, context, False):
                args += ["--trust-kmeans-model"]
        elif save:
            args += ["--kmeans-model", save]
        if raster:
            args += ["--raster-out", raster]
        aoi = getattr(self, "_aoi", None)
        args += aoi if aoi is not None else self.aoi_arguments(parameters, context)
        if self.resume_wanted(parameters, context) and os.path.isdir(work_folder(polygons)):
            args += ["--resume"]
        args += ["--overwrite", "--progress-lines"]
        return args, [polygons, raster, "" if reuse else save]

    def _flag(self, parameters: dict, name: str, context: QgsProcessingContext, default: bool) -> bool:
        """A boolean parameter, ``default`` when not given (models saved before it existed)."""
        if parameters.get(name) in (None, ""):
            return default
        return self.parameterAsBoolean(parameters, name, context)

    def resume_wanted(self, parameters: dict, context: QgsProcessingContext) -> bool:
        """The "Resume an interrupted run" choice; on when not given (its default)."""
        if parameters.get(self.RESUME) in (None, ""):
            return True
        return self.parameterAsBoolean(parameters, self.RESUME, context)

    def run_command(self, args: list[str], files: list[str], feedback: QgsProcessingFeedback) -> None:
        polygons, _, kmeans_out = files
        if kmeans_out and os.path.exists(kmeans_out):
            # geoalps reuses an existing model file; a destination is overwritten, as in Processing.
            os.remove(kmeans_out)
        self.run_resumable(args, files, work_folder(polygons), feedback)

    def results(self, written: dict, files: list[str], feedback: QgsProcessingFeedback) -> dict:
        return {**super().results(written, files, feedback), self.FEATURE_COUNT: feature_count(files[0])}

    def run_resumable(self, args: list[str], outputs: list[str], work: str, feedback: QgsProcessingFeedback) -> None:
        """Run ``geoalps label`` keeping its work folder when it is cancelled or fails; with
        ``--resume`` in ``args``, start over (saying why) when geoalps refuses the resume, and
        report how many tiles were resumed."""
        resuming = "--resume" in args
        if resuming:
            feedback.pushInfo(f"GeoALPS: resuming the interrupted run whose finished tiles are in {work}.")
        elif os.path.isdir(work):
            feedback.pushInfo(f"GeoALPS: starting over; the finished tiles of an earlier run in {work} are discarded.")
        counts: list[TileCounts] = []

        def read_counts(stream: str, text: str) -> None:
            found = parse_tile_counts(text) if stream == "stderr" else None
            if found is not None:
                counts.append(found)

        refused = (RESUME_REFUSED_EXIT_CODE,) if resuming else ()
        ended = self.run_cli(args, outputs, feedback, keep=(work,), on_line=read_counts, accept_exit_codes=refused)
        if ended.returncode != 0:
            why = ended.error_line[len(ERROR_PREFIX):].strip() or f"exit code {ended.returncode}"
            feedback.pushInfo(f"GeoALPS: the interrupted run cannot be resumed ({why}); starting over without it.")
            resuming = False
            self.run_cli([a for a in args if a != "--resume"], outputs, feedback, keep=(work,), on_line=read_counts)
        if counts and (resuming or counts[-1].resumed):
            feedback.pushInfo(f"GeoALPS: {counts[-1].resumed} of {counts[-1].tiles} tiles resumed from the "
                              "interrupted run.")


def work_folder(polygons: str) -> str:
    """Where ``geoalps label -o polygons`` keeps its finished tiles (what ``--resume`` reads)."""
    return polygons + WORK_FOLDER_SUFFIX
