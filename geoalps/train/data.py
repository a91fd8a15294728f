"""Scenes and their labels as pixel tiles, and the regions training may sample from.

One tiler for training, validation and prediction: every tile is a :class:`PixelBox`, a window
of one scene's own pixel grid, read through :mod:`geoalps.inputs.scene` (the one door to
rasters: GDAL settings, remote reads, one-line errors). Training draws random tiles inside the
training boxes (:class:`RandomTiles`); validation and prediction cover their areas with the tile
plan of :func:`geoalps.inputs.tiles.plan_tiles` (validation with overlap 0, scoring each tile's
core, so every pixel once). Nothing is warped or resampled: scenes in different CRSs or pixel
sizes are each tiled on their own grid.

Label rasters (pseudo-labels from ``geoalps label`` or a user's class raster) are read on the
same windows; a vector ground truth is read once, reprojected to each scene's CRS and burnt per
tile (``rasterio.features.rasterize``).

The train/validation split is spatial: each labelled area is cut into a validation strip at its
bottom and a training part above it; ``label_fraction`` keeps a few tile-sized cells of the
training part, the few-label case ALPS targets.

A label raster must be on its image's grid (same CRS, transform and size); one that is not is
refused with a message, never resampled, because a silent resample of class ids shifts labels.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoalps.errors import InputError, OptionError
from geoalps.inputs.scene import Scene, open_dataset, open_scene, pooled_mean_std, read_window
from geoalps.outputs.formats import VECTOR_SUFFIXES
from geoalps.outputs.raster import LABEL_RASTER_SUFFIX, label_raster_stem

#: Label value the loss and the metrics skip (torch's cross-entropy default).
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- scene metadata


def open_north_up(path: str | os.PathLike, what: str = "scene", name: str | None = None,
                  shown: str | None = None) -> Scene:
    """:func:`geoalps.inputs.scene.open_scene`, refusing rasters that cannot be tiled on their own grid.

    Tiles are pixel windows, but vector labels are burnt, and predictions and chips written, on the
    scene's map grid, so a scene (or a label raster, ``what="label"``) needs a CRS and a north-up
    geotransform; warp others first. ``name``/``shown``: as ``open_scene`` (a STAC item's VRT is
    named by its item). Costs what ``open_scene`` costs (one decimated read).

    Raises:
        InputError: one line naming the file: what ``open_scene`` refuses, no CRS, rotated,
            sheared or south-up geotransform.
    """
    scene = open_scene(path, allow_pixel_coords=True, name=name, shown=shown)
    shown = scene.shown
    if scene.crs_wkt is None:
        raise InputError(f"{shown}: {what} has no CRS; training and prediction need a georeferenced raster")
    t = scene.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{shown}: rotated or sheared geotransform is not supported; warp it north-up first "
            f"(gdalwarp {shown} north_up.tif)"
        )
    if t.a <= 0 or t.e >= 0:
        raise InputError(f"{shown}: geotransform is not north-up (pixel size {t.a}, {t.e})")
    return scene


def band_descriptions(scene: Scene) -> tuple[str | None, ...]:
    """Band descriptions from the scene's header (recorded in checkpoints), as ``open_scene`` read them."""
    return tuple(scene.band_roles.descriptions) or (None,) * scene.count


def check_same_grid(image: Scene, label: Scene) -> None:
    """Refuse a label raster that is not on its image's pixel grid (CRS, transform, size).

    The transform may differ by float noise (1e-6 of a pixel), nothing more.
    """
    problems = []
    if label.crs != image.crs:
        problems.append(f"CRS {label.crs.to_string()} vs {image.crs.to_string()}")
    if (label.width, label.height) != (image.width, image.height):
        problems.append(f"size {label.width}x{label.height} vs {image.width}x{image.height} px")
    if not label.transform.almost_equals(image.transform, precision=1e-6 * min(image.res)):
        problems.append(
            f"origin/pixel ({label.transform.c:.6f}, {label.transform.f:.6f}; {label.res[0]:g} x {label.res[1]:g})"
            f" vs ({image.transform.c:.6f}, {image.transform.f:.6f}; {image.res[0]:g} x {image.res[1]:g})"
        )
    if problems:
        raise InputError(
            f"{label.shown}: label raster is not on the grid of {image.shown} ({'; '.join(problems)}); "
            "labels are never resampled: write them on the image grid (geoalps label --raster-out does)"
        )


@dataclass(frozen=True)
class LabelInfo:
    """Class ids present in a label source, its nodata value, colour table and class names.

    Names come from the class-raster tag contract of :mod:`geoalps.outputs.raster` (band-1
    ``class_names``, ``;``-separated: rasters written by ``geoalps label --raster-out`` and
    ``geoalps predict``), else from the dataset tag ``CLASS_NAMES`` (comma separated, in id
    order), as the ground truth in ``sample_data`` has them.
    """

    path: str
    n_classes: int
    nodata: int | None
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    pixel_counts: tuple[int, ...] = ()
    names: tuple[str, ...] = ()


def read_label_info(label: Scene | str | os.PathLike, ignore_value: int | None = None,
                    rows_per_read: int = 1024) -> LabelInfo:
    """Scan a class raster (a path, or its :func:`open_north_up` scene) for its largest class id
    (nodata and ``ignore_value`` excluded), its colour table and class names.

    Cost: reads the whole first band once, ``rows_per_read`` full-width rows at a time (memory
    is one such strip); about 0.1 s for 10 Mpx of uint8.
    """
    if not isinstance(label, Scene):
        label = open_north_up(label, what="label")
    path = label.shown
    if np.dtype(label.dtype).kind not in "ui":
        raise InputError(f"{path}: label raster has {label.dtype} pixels; class ids must be integers")
    nodata = None if label.nodata is None else int(label.nodata)
    counts = np.zeros(0, dtype=np.int64)
    for row in range(0, label.height, rows_per_read):
        values = read_window(label, Window(0, row, label.width, min(rows_per_read, label.height - row)))[0].ravel()
        keep = np.ones(values.shape, dtype=bool)
        for skip in (nodata, ignore_value):
            if skip is not None:
                keep &= values != skip
        values = values[keep]
        if values.size and values.min() < 0:
            raise InputError(f"{path}: negative class id {values.min()}; class ids are 0..K-1")
        found = np.bincount(values.astype(np.int64), minlength=counts.size)
        found[: counts.size] += counts
        counts = found
    with open_dataset(label.path, shown=path) as src:  # the header: colour table and tags
        try:
            colormap = src.colormap(1)
        except ValueError:
            colormap = {}
        dataset_names = src.tags().get("CLASS_NAMES", "")
    names = _label_names(label.path, dataset_names)
    n_classes = int(np.flatnonzero(counts).max()) + 1 if counts.any() else 0
    if n_classes == 0:
        raise InputError(f"{path}: label raster has no labelled pixels (all nodata/ignored)")
    colours = {int(k): tuple(int(c) for c in v[:3]) for k, v in colormap.items() if int(k) < n_classes}
    return LabelInfo(label.path, n_classes, nodata, colours, tuple(int(c) for c in counts[:n_classes]), names)


def _label_names(path: str, dataset_names: str) -> tuple[str, ...]:
    """Class names of a label raster: the band-1 tags of the class-raster contract (read by
    :func:`geoalps.outputs.raster.read_class_names`), else the comma-separated ``CLASS_NAMES``."""
    from geoalps.outputs.raster import read_class_names

    names = read_class_names(path)[1] or dataset_names.split(",")
    return tuple(n.strip() for n in names if n.strip())


def is_vector(path: str | os.PathLike) -> bool:
    """True for files read as vector ground truth (by suffix)."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES  # geoalps.outputs.formats: the one list


def read_vector_label_info(path: str, label_column: str | None) -> tuple[LabelInfo, Any]:
    """Class count and layer of a vector ground truth.

    Polygons are burnt with the integer in ``label_column`` (all 1 without one); uncovered
    pixels are class 0, so ids in the column must be >= 1. Cost: reads the whole layer once.
    """
    import geopandas as gpd

    if not os.path.exists(path):
        raise InputError(f"{path}: no such label file")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio/GDAL raise several unrelated types
        raise InputError(f"{path}: not a readable vector layer ({exc.__class__.__name__})") from None
    if frame.crs is None:
        raise InputError(f"{path}: vector labels have no CRS")
    if frame.empty:
        raise InputError(f"{path}: vector labels have no features")
    if label_column is None:
        n_classes = 2
    else:
        if label_column not in frame.columns:
            raise InputError(f"{path}: no column {label_column!r} (has {', '.join(map(str, frame.columns))})")
        values = frame[label_column].to_numpy()
        if not np.issubdtype(values.dtype, np.integer) or values.min() < 1:
            raise InputError(f"{path}: column {label_column!r} must hold integer class ids >= 1 (0 is background)")
        n_classes = int(values.max()) + 1
    return LabelInfo(path, n_classes, None), frame


def band_statistics(scenes: Sequence[Scene]) -> tuple[list[float], list[float]]:
    """Per-band mean and std over the valid pixels of all scenes, for standardising training
    inputs: pooled from what :func:`geoalps.inputs.scene.open_scene` computed on its one
    decimated read (at most ``STATS_READ_PX`` px on the long side; valid = not every band at
    nodata, as training masks pixels). No read of its own. A flat band's std is 1.
    """
    mean, std = pooled_mean_std([scene.stats for scene in scenes])
    return mean, [v if v > 1e-6 else 1.0 for v in std]


# --------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class PixelBox:
    """A window of one scene's pixel grid: a region, a validation strip or a tile.

    ``core`` (tiles only): the part of the tile, in tile pixels (col0, row0, col1, row1), that
    is scored; None scores the whole tile. Validation tiles from ``plan_tiles`` overlap where
    the last one is shifted back to the edge; their cores partition the area.
    """

    scene_index: int
    col_off: int
    row_off: int
    width: int
    height: int
    core: tuple[int, int, int, int] | None = None

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    def as_list(self) -> list[int]:
        return [self.scene_index, self.col_off, self.row_off, self.width, self.height]


@dataclass(frozen=True)
class VectorLabels:
    """A vector ground truth in its scene's CRS: shapes and their class ids, burnt per tile."""

    path: str
    geometries: Any  # shapely geometry array
    values: np.ndarray  # int64 class ids

    def burn(self, scene: Scene, window: Window) -> np.ndarray:
        """(h, w) int64 classes of ``window``: polygons with their id, the rest 0 (pixel centres
        inside, as GDAL rasterizes). Cost: one vectorised intersects test over the layer."""
        import shapely
        from rasterio.features import rasterize
        from rasterio.windows import bounds, transform

        box = shapely.box(*bounds(window, scene.transform))
        hit = shapely.intersects(self.geometries, box)
        shape = (int(window.height), int(window.width))
        if not hit.any():
            return np.zeros(shape, dtype=np.int64)
        pairs = zip(self.geometries[hit], self.values[hit].tolist())
        return rasterize(pairs, out_shape=shape, transform=transform(window, scene.transform), fill=0,
                         dtype="int32").astype(np.int64)


class SceneTiles:
    """Map-style dataset: a :class:`PixelBox` tile -> ``image`` float32 (C, h, w), ``mask`` int64
    (h, w) with labels, ``core`` int64 (4,) (the scored part; the whole tile when none) and
    ``box`` int64 (5,) (scene, col, row, width, height). Reads go through
    :func:`geoalps.inputs.scene.read_window`; nothing is resampled. Picklable for DataLoader
    workers (scenes and label records only, no open files)."""

    def __init__(self, scenes: Sequence[Scene], labels: Sequence[Scene | VectorLabels] | None = None) -> None:
        self.scenes = list(scenes)
        self.labels = None if labels is None else list(labels)

    def __getitem__(self, box: PixelBox) -> dict[str, np.ndarray]:
        scene = self.scenes[box.scene_index]
        sample = {
            "image": read_window(scene, box.window).astype(np.float32),
            "core": np.asarray(box.core or (0, 0, box.width, box.height), dtype=np.int64),
            "box": np.asarray(box.as_list(), dtype=np.int64),
        }
        if self.labels is not None:
            label = self.labels[box.scene_index]
            if isinstance(label, VectorLabels):
                sample["mask"] = label.burn(scene, box.window)
            else:
                sample["mask"] = read_window(label, box.window)[0].astype(np.int64)
        return sample


@dataclass
class TrainingData:
    """Scenes, their labels and the dataset that reads both as tiles."""

    dataset: SceneTiles
    scenes: list[Scene]
    labels: list[LabelInfo]
    labelled_windows: list[Window]
    n_classes: int
    label_nodata: int | None
    ignore_value: int | None
    colours: dict[int, tuple[int, int, int]]

    @property
    def class_names(self) -> list[str] | None:
        """Names from the first label raster that names every class, else None."""
        for info in self.labels:
            if len(info.names) >= self.n_classes:
                return list(info.names[: self.n_classes])
        return None


def open_training_data(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike] | None = None,
    label_column: str | None = None,
    ignore_value: int | None = None,
) -> TrainingData:
    """Check scenes and labels pair up, then build the tile dataset that reads both.

    Args:
        images: scenes as ``geoalps label`` takes them (:func:`geoalps.inputs.sources.scene_sources`):
            rasters, folders (their image files, sorted), glob patterns (``'scenes/*.tif'``,
            sorted) and STAC items (``.json``: one scene per item, all its data assets); all must
            have the same band count (each keeps its own grid).
        labels: what :func:`pair_labels` pairs with the scenes: one label source per scene, in
            order (glob patterns expanded), or one folder paired by name. Class rasters on the
            image grid, or vector layers (class from ``label_column``, background 0). None:
            images only (MIM).
        label_column: attribute holding class ids in vector labels.
        ignore_value: a class raster value to skip besides its nodata.

    Returns:
        TrainingData; ``dataset`` yields ``image`` (float32) and, with labels, ``mask`` (int64).

    Cost: one decimated read per scene (``open_scene``'s), plus a full read of each label raster
    (class counts) or each vector layer; a STAC item's JSON and asset headers once.
    """
    from geoalps.inputs.sources import scene_sources

    if not images:
        raise OptionError("no --images given")
    scenes = [open_north_up(s.path, name=s.name, shown=s.shown) for s in scene_sources(images)]
    for scene in scenes[1:]:
        if scene.count != scenes[0].count:
            raise InputError(
                f"{scene.shown}: {scene.count} bands, but {scenes[0].shown} has {scenes[0].count}; "
                "all scenes of one model need the same bands"
            )
    full = [Window(0, 0, s.width, s.height) for s in scenes]
    if labels is None:
        return TrainingData(SceneTiles(scenes), scenes, [], full, 0, None, None, {})

    labels = pair_labels(scenes, labels)
    kinds = {is_vector(p) for p in labels}
    if len(kinds) > 1:
        raise InputError("mix of raster and vector labels; give one kind")
    infos: list[LabelInfo] = []
    windows: list[Window] = []
    sources: list[Scene | VectorLabels] = []
    if kinds == {True}:
        for scene, path in zip(scenes, labels):
            info, frame = read_vector_label_info(str(path), label_column)
            windows.append(_labelled_window(scene, frame.crs, tuple(frame.total_bounds), str(path)))
            infos.append(info)
            sources.append(_vector_labels(str(path), frame, label_column, scene))
        nodata = None
    else:
        for scene, path in zip(scenes, labels):
            label = open_north_up(path, what="label")
            check_same_grid(scene, label)
            infos.append(read_label_info(label, ignore_value))
            sources.append(label)
        windows = full
        nodatas = {i.nodata for i in infos}
        if len(nodatas) > 1:
            raise InputError(f"label rasters disagree on nodata ({sorted(map(str, nodatas))}); give them one nodata value")
        nodata = nodatas.pop()
    n_classes = max(i.n_classes for i in infos)
    present = {k for i in infos for k, c in enumerate(i.pixel_counts) if c}
    if len(present) == 1 and kinds == {False}:
        raise InputError(
            f"{labels[0]}: labels hold a single class ({present.pop()}) outside nodata ({nodata}); if background is "
            "declared nodata, clear it (gdal_edit.py -unsetnodata) so it trains as a class"
        )
    colours: dict[int, tuple[int, int, int]] = {}
    for info in infos:
        for k, v in info.colours.items():
            colours.setdefault(k, v)
    return TrainingData(SceneTiles(scenes, sources), scenes, infos, windows, n_classes, nodata, ignore_value, colours)


def pair_labels(scenes: Sequence[Scene], labels: Sequence[str | os.PathLike]) -> list[str]:
    """One label source per scene, in the scenes' order.

    ``labels`` is either one folder, paired by name (:func:`labels_in_folder`), or a list of
    files, URLs and glob patterns (each pattern's matches sorted), one per scene in order.

    Raises:
        InputError: a pattern matching nothing, a folder among other labels, a scene without its
            label in the folder, or as many labels as scenes not given.
    """
    from geoalps.inputs.remote import is_remote
    from geoalps.inputs.sources import expand_glob

    given = [str(p) for p in labels]
    if len(given) == 1 and not is_remote(given[0]) and os.path.isdir(given[0]):
        return labels_in_folder(scenes, Path(given[0]))
    paths: list[str] = []
    for path in given:
        if not is_remote(path) and os.path.isdir(path):
            raise InputError(f"{path}: a label folder pairs with the scenes by name; give it as the only --labels")
        paths.extend(expand_glob(path))
    if len(paths) != len(scenes):
        raise InputError(f"{len(scenes)} images but {len(paths)} label files; give one label file per image, in order, "
                         "or one folder of labels named after the images")
    return paths


def labels_in_folder(scenes: Sequence[Scene], folder: Path) -> list[str]:
    """Each scene's label in ``folder``: ``<stem>.labels.tif`` (what ``geoalps label --raster-out
    DIR/`` writes), else the one raster or vector file named ``<stem>.<suffix>`` (``stem``:
    :func:`geoalps.outputs.raster.label_raster_stem`). Other files in the folder are ignored; a scene's own file is never
    its label. Cost: one listing of the folder.

    Raises:
        InputError: a scene without its label, or with several candidates, naming both; two
            scenes of one name (they would share a label).
    """
    from geoalps.inputs.remote import is_virtual, same_location_key
    from geoalps.inputs.sources import IMAGE_SUFFIXES
    from geoalps.outputs.formats import VECTOR_SUFFIXES

    files = sorted(p for p in folder.iterdir() if p.is_file())
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES + VECTOR_SUFFIXES:
            by_stem.setdefault(p.stem, []).append(p)
    out = []
    for scene in scenes:
        stem = label_raster_stem(scene.name)  # a STAC item's name is its id
        written = folder / f"{stem}{LABEL_RASTER_SUFFIX}"
        if written.is_file():
            out.append(str(written))
            continue
        own = None if is_virtual(scene.path) else same_location_key(scene.path)
        found = [p for p in by_stem.get(stem, []) if same_location_key(p) != own]
        if not found:
            raise InputError(f"{scene.shown}: no label in {folder} (looked for {stem}.labels.tif, "
                             f"or a raster or vector file named {stem}.*)")
        if len(found) > 1:
            raise InputError(f"{scene.shown}: several labels in {folder} ({', '.join(p.name for p in found)}); "
                             "keep one")
        out.append(str(found[0]))
    for index, path in enumerate(out):
        if path in out[:index]:
            other = scenes[out.index(path)].shown
            raise InputError(f"{scenes[index].shown}: pairs with {path} as {other} does (two scenes of one name); "
                             "give the labels as a list, one per scene")
    return out


def _vector_labels(path: str, frame: Any, label_column: str | None, scene: Scene) -> VectorLabels:
    """The layer's polygons in ``scene``'s CRS with their class ids (1 without ``label_column``)."""
    frame = frame.to_crs(scene.crs_wkt)
    values = np.ones(len(frame), dtype=np.int64) if label_column is None else frame[label_column].to_numpy(np.int64)
    keep = ~(frame.geometry.isna() | frame.geometry.is_empty).to_numpy()
    return VectorLabels(path, frame.geometry.to_numpy()[keep], values[keep])


def _labelled_window(scene: Scene, crs: Any, bounds: tuple[float, float, float, float], path: str) -> Window:
    """The scene pixels covered by a vector layer's extent, snapped inward to whole pixels."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    if crs != scene.crs:
        bounds = transform_bounds(crs.to_wkt(), scene.crs_wkt, *bounds)
    window = from_bounds(*bounds, transform=scene.transform)
    col0 = max(0, math.ceil(window.col_off - 1e-6))
    row0 = max(0, math.ceil(window.row_off - 1e-6))
    col1 = min(scene.width, math.floor(window.col_off + window.width + 1e-6))
    row1 = min(scene.height, math.floor(window.row_off + window.height + 1e-6))
    if col1 <= col0 or row1 <= row0:
        raise InputError(f"{path}: vector labels do not overlap {scene.shown}")
    return Window(col0, row0, col1 - col0, row1 - row0)


# --------------------------------------------------------------------------- regions


@dataclass
class Regions:
    """Pixel boxes of the scenes training samples from (``train``) and validates on (``val``)."""

    train: list[PixelBox]
    val: list[PixelBox]

    def to_dict(self) -> dict[str, list[list[int]]]:
        """``[scene index, col, row, width, height]`` per box (recorded in checkpoints)."""
        return {"train": [b.as_list() for b in self.train], "val": [b.as_list() for b in self.val]}


def split_regions(
    data: TrainingData,
    tile_px: int,
    val_fraction: float = 0.2,
    label_fraction: float = 1.0,
    seed: int = 0,
) -> Regions:
    """Cut each labelled area into a validation strip (bottom) and a training region (the rest).

    Args:
        data: scenes and their labelled windows.
        tile_px: tile size; every region is at least this big in both directions.
        val_fraction: share of each labelled area's rows kept for validation (0: none). A scene
            too small for a tile-high strip and a tile-high training part gets no validation.
        label_fraction: share of each labelled area (training + validation) that training may
            see: that many tile-sized cells, drawn without replacement from a grid over the
            training part (at least one). Like the few labelled patches of the ALPS experiments,
            they are scattered, so a rare class has a chance to be among them.
        seed: draws the cells; the same seed gives the same cells.
    """
    if not 0 < label_fraction <= 1:
        raise OptionError(f"--label-fraction must be in (0, 1], got {label_fraction}")
    if not 0 <= val_fraction < 1:
        raise OptionError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for index, (scene, win) in enumerate(zip(data.scenes, data.labelled_windows)):
        w, h = int(win.width), int(win.height)
        if w < tile_px or h < tile_px:
            raise OptionError(f"{scene.shown}: labelled area {w}x{h} px is smaller than the {tile_px} px tile; use --tile-size")
        n_val = max(tile_px, round(h * val_fraction)) if val_fraction > 0 else 0
        if n_val and h - n_val < tile_px:
            warnings.warn(f"{scene.shown}: too small for a validation strip; all of it trains", stacklevel=2)
            n_val = 0
        h_train = h - n_val
        col0, row0 = int(win.col_off), int(win.row_off)
        if label_fraction < 1:
            rows, cols = h_train // tile_px, w // tile_px
            wanted = max(1, round(label_fraction * w * h / tile_px**2))
            if wanted > rows * cols:
                warnings.warn(f"{scene.shown}: only {rows * cols} tiles fit the training part; using all", stacklevel=2)
            if wanted * tile_px**2 > 1.5 * label_fraction * w * h:
                warnings.warn(
                    f"{scene.shown}: {label_fraction:.0%} of the labelled area is less than a tile; "
                    f"training sees {wanted * tile_px**2 / (w * h):.0%}",
                    stacklevel=2,
                )
            for cell in sorted(rng.choice(rows * cols, size=min(wanted, rows * cols), replace=False)):
                r, c = divmod(int(cell), cols)
                train.append(PixelBox(index, col0 + c * tile_px, row0 + r * tile_px, tile_px, tile_px))
        else:
            train.append(PixelBox(index, col0, row0, w, h_train))
        if n_val:
            val.append(PixelBox(index, col0, row0 + h_train, w, n_val))
    return Regions(train, val)


# --------------------------------------------------------------------------- loaders and batches


class RandomTiles:
    """Sampler of ``length`` random ``tile_px`` tiles inside ``boxes``: a box drawn with
    probability proportional to its area, then a whole-pixel offset inside it, both from
    ``generator`` (a torch.Generator: the run's seeded, resumable tile stream). Iterating again
    draws on from the generator (a DataLoader built once per run gets new tiles each epoch)."""

    def __init__(self, boxes: Sequence[PixelBox], tile_px: int, length: int, generator: Any = None) -> None:
        self.boxes = [b for b in boxes if b.width >= tile_px and b.height >= tile_px]
        if not self.boxes:
            raise OptionError(f"no training region holds a whole {tile_px} px tile; use a smaller --tile-size")
        self.tile_px, self.length, self.generator = tile_px, length, generator

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[PixelBox]:
        import torch

        areas = torch.tensor([float(b.width * b.height) for b in self.boxes])
        tile = self.tile_px
        for _ in range(self.length):
            box = self.boxes[int(torch.multinomial(areas, 1, generator=self.generator))]
            col = int(torch.randint(0, box.width - tile + 1, (1,), generator=self.generator))
            row = int(torch.randint(0, box.height - tile + 1, (1,), generator=self.generator))
            yield PixelBox(box.scene_index, box.col_off + col, box.row_off + row, tile, tile)


def train_loader(
    data: TrainingData,
    regions: Regions,
    tile_px: int,
    batch_size: int,
    steps: int,
    workers: int = 0,
    generator: Any = None,
    pin_memory: bool = False,
):
    """``steps`` batches of random tiles inside the training boxes (:class:`RandomTiles`); build
    it once per run, each iteration is an epoch (``persistent_workers`` keeps its workers)."""
    from torch.utils.data import DataLoader

    sampler = RandomTiles(regions.train, tile_px, steps * batch_size, generator)
    return DataLoader(
        data.dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )


def plan_queries(boxes: Sequence[PixelBox], tile_px: int, overlap_px: int = 0) -> list[PixelBox]:
    """The tiles of :func:`geoalps.inputs.tiles.plan_tiles` over each box (boxes at least a tile
    in both directions), each with its core: the cores partition the boxes, so scoring cores
    scores every box pixel exactly once."""
    from geoalps.inputs.tiles import plan_tiles

    queries = []
    for box in boxes:
        for t in plan_tiles(box.width, box.height, tile_px, overlap_px):
            c0, r0, c1, r1 = t.core
            queries.append(PixelBox(box.scene_index, box.col_off + t.col_off, box.row_off + t.row_off, t.width, t.height,
                                    core=(c0 - t.col_off, r0 - t.row_off, c1 - t.col_off, r1 - t.row_off)))
    return queries


def val_loader(data: TrainingData, regions: Regions, tile_px: int, batch_size: int, workers: int = 0, ranks: Any = None):
    """Tiles over the validation strips in a fixed order (:func:`plan_queries`), or None without
    validation; a data-parallel process (``ranks``, geoalps.train.distributed.Ranks) gets its share."""
    from torch.utils.data import DataLoader

    queries = plan_queries(regions.val, tile_px)
    if not queries:
        return None
    if ranks is not None and ranks.distributed:
        from geoalps.train.distributed import shard

        queries = shard(queries, ranks)
    return DataLoader(data.dataset, batch_size=batch_size, sampler=queries, num_workers=workers)


class BatchPrep:
    """Turns a batch of tiles into network input and targets on the device.

    Normalises each band with the training statistics, zeroes nodata pixels, and maps label
    nodata, the ignore value, invalid image pixels and pixels outside each tile's ``core`` (the
    overlap of validation tiles) to ``IGNORE_INDEX``.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        image_nodata: float | None,
        label_nodata: int | None = None,
        ignore_value: int | None = None,
        n_classes: int = 0,
        device: Any = "cpu",
        channels_last: bool = False,
    ) -> None:
        import torch

        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.image_nodata = image_nodata
        self.skip = [v for v in (label_nodata, ignore_value) if v is not None]
        self.n_classes = n_classes
        self.device = device
        self.channels_last = channels_last

    def __call__(self, batch: dict[str, Any]):
        """Returns (x, y, valid): float32 (B,C,H,W), int64 (B,H,W) or None, bool (B,H,W)."""
        import torch

        image = batch["image"].float()
        if self.image_nodata is not None:
            valid = (image != self.image_nodata).any(dim=1)
        else:
            valid = torch.ones(image.shape[0], *image.shape[2:], dtype=torch.bool)
        x = ((image - self.mean) / self.std) * valid.unsqueeze(1)
        y = None
        if "mask" in batch:
            y = batch["mask"].long().clone()
            for value in self.skip:
                y[y == value] = IGNORE_INDEX
            y[(y >= self.n_classes) | (y < 0)] = IGNORE_INDEX
            y[~valid] = IGNORE_INDEX
            if "core" in batch:
                for i, (c0, r0, c1, r1) in enumerate(batch["core"].tolist()):
                    outside = torch.ones(y.shape[-2:], dtype=torch.bool)
                    outside[r0:r1, c0:c1] = False
                    y[i][outside] = IGNORE_INDEX
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if y is not None:
            y = y.to(self.device, non_blocking=True)
        return x, y, valid.to(self.device)


def augment(*tensors: Any, generator: Any = None) -> tuple[Any, ...]:
    """The same random flip and quarter turn per tile for every tensor given (None passes through).

    Map imagery has no preferred orientation; tensors are (B, ..., H, W) and share B, H, W.
    """
    import torch

    present = [t for t in tensors if t is not None]
    out: list[list[Any]] = [[] for _ in present]
    for i in range(present[0].shape[0]):
        k = int(torch.randint(0, 4, (1,), generator=generator))
        flip = bool(torch.randint(0, 2, (1,), generator=generator))
        for j, t in enumerate(present):
            ti = torch.rot90(t[i], k, dims=(-2, -1))
            out[j].append(ti.flip(-1) if flip else ti)
    stacked = iter([torch.stack(parts) for parts in out])
    return tuple(None if t is None else next(stacked) for t in tensors)
