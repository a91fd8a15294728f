"""The class gallery (issue 12): one picture that says what each pseudo-class looks like.

For every pseudo-class of a labelling output (layer ``masks``): its colour (the same as the QGIS
style, :func:`geoalps.outputs.style.output_class_colours`), object count, share of the total object area,
the mean signature of all bands of the scene, and a row of example chips (the image under the
object with its outline): the objects nearest the class centre (smallest ``class_distance``) and a
few drawn at random. Above them an overview of the scene coloured by class.

    >>> from geoalps.classes.gallery import make_gallery
    >>> report = make_gallery("labels.gpkg", "labels.classes.png")
    >>> [(c["class"], c["count"], round(c["area_share"], 3)) for c in report["classes"]]

What is read, whatever the size of the output:

1. the attributes of every object, without geometries (one pass over the table);
2. the geometries of the chosen chip objects only (``fids=``);
3. per chip, one windowed read of the three view bands around the object (padded square,
   resampled to ``chip_px``);
4. for the overview scene (the first scene of the file): one decimated read of all bands (at most
   :data:`OVERVIEW_PX` on the long side) and the polygons of that scene rasterized onto that grid,
   in batches of :data:`GEOMETRY_BATCH` geometries, smaller polygons on top. The class signatures
   are the means of the decimated pixels under each class, so they come from the overview scene.

Opening a scene (:func:`geoalps.inputs.scene.open_scene`, for the stretch statistics) costs one
more decimated read per scene used.
"""
from __future__ import annotations

import base64
import html as html_lib
import io
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from geoalps.errors import InputError, OptionError
from geoalps.files import atomic_path, check_writable
from geoalps.inputs.bands import BAND_NAME_VOCABULARY, BandRoles, resolve_bands, stretch_to_uint8
from geoalps.inputs.crs import same_crs
from geoalps.inputs.remote import is_remote
from geoalps.inputs.scene import STATS_READ_PX, BandStats, Scene, open_dataset, open_scene, read_pixels, valid_pixels
from geoalps.outputs.style import output_class_colours
from geoalps.outputs.vector import BAND_ROLES_METADATA, SCENES_METADATA, layer_info, layer_metadata, read_layer

#: Longest side, in pixels, of the decimated read behind the overview and the signatures.
OVERVIEW_PX = STATS_READ_PX
#: Geometries read (and rasterized) at a time for the overview.
GEOMETRY_BATCH = 5_000
#: Weight of the class colour where the overview is blended over the image.
OVERVIEW_BLEND = 0.45

# Layout of the picture, in pixels at DPI (see gallery_size_px).
DPI = 100
_MARGIN = 12
_HEADER_H = 44
_INFO_W = 200
_SIG_W = 220
_CHIP_GAP = 8
_CAPTION_H = 16
_ROW_GAP = 10
_OVERVIEW_MAX_H = 440
_MIN_WIDTH = 640


@dataclass
class _Chip:
    """One example: the image under an object (chip_px square, uint8 RGB) and its outline(s)."""

    instance_id: int
    kind: str  # "nearest" or "random"
    image: np.ndarray
    outlines: list[np.ndarray]  # (n, 2) arrays of (col, row) in chip pixels
    class_distance: float | None


@dataclass
class _Overview:
    scene_image: np.ndarray  # (h, w, 3) uint8, the stretched view bands
    image: np.ndarray  # (h, w, 3) uint8, class colours blended over scene_image
    signatures: list[list[float] | None]
    signature_px: list[int]


# ---------------------------------------------------------------------------------------------
# Public entry point


def make_gallery(
    labels_path: str | os.PathLike,
    path: str | os.PathLike,
    *,
    scenes: list[str | os.PathLike] | None = None,
    chips_per_class: int = 6,
    random_chips: int = 2,
    chip_px: int = 96,
    seed: int = 0,
    html: bool | None = None,
    bands: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the class gallery of a labelling output as a PNG (or an HTML page) and describe it.

    Parameters
    ----------
    labels_path : path
        The labelling output the gallery shows (read, never written): a GeoPackage written by
        ``geoalps label`` (layer ``masks``; ``pseudo_class``, or ``class_id`` as ``predict``
        writes it), or the same layer in another output format.
    path : path
        Where to write the gallery; ``.html`` gives a page with the picture inlined (base64),
        anything else a PNG. Written atomically.
    scenes : list of paths, optional
        Where the scenes are, matched by file name against the layer's ``scene`` column. Without
        them (or for names not among them) the GeoPackage's ``geoalps_scenes`` metadata is used,
        then the GeoPackage's folder, then the current folder.
    chips_per_class : int
        Example chips per class, of which ``random_chips`` are drawn at random (seeded) and the
        others are the objects with the smallest ``class_distance``.
    chip_px : int
        Side of a chip in the picture, in pixels.
    seed : int
        Seed of the random chips (class ``c`` uses ``seed + c``, so one class's draw does not
        change when another class grows).
    html : bool, optional
        Force HTML (True) or PNG (False); None decides by the extension of ``path``.
    bands : str, optional
        The three bands of the view, as ``geoalps label --bands`` takes them; default: the red,
        green and blue bands by the roles the labelling run recorded (``geoalps_band_roles``) or
        the scene's band descriptions / colour interpretation, else bands 1,2,3.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    dict
        ``classes``: one dict a class (``class``, ``name``, ``color``, ``count``, ``area_share``,
        ``signature``: mean of every band in scene units or None, ``signature_px``, ``chip_ids``,
        ``nearest_ids``, ``random_ids``); ``objects``, ``n_classes``, ``scenes`` (name -> path of
        the scenes read, a URL with its query redacted), ``overview_scene`` (the one behind the overview and the signatures),
        ``bands`` (the view's red, green, blue band numbers), ``band_labels`` (the signature axis:
        each band's role, description or "band N"), ``chips``, ``width_px``, ``height_px``, ``path``, ``seconds``.

    Raises
    ------
    InputError
        The GeoPackage is unreadable or lacks the fields, or a scene cannot be found.
    OutputError
        ``path`` exists (without ``overwrite``) or its folder cannot be written.

    Notes
    -----
    Cost does not grow with the scene: one decimated read, one window read a chip. It grows
    with the objects only through the attribute table and the overview's rasterization (at most
    :data:`GEOMETRY_BATCH` geometries in memory at a time). Objects smaller than a decimated
    pixel do not reach the overview grid, so they add nothing to the signatures.
    """
    started = time.perf_counter()
    _check_options(chips_per_class, random_chips, chip_px)
    as_html = str(path).lower().endswith((".html", ".htm")) if html is None else bool(html)
    check_writable(path, overwrite)
    gpkg = str(labels_path)
    objects, class_field, crs_wkt = read_objects(gpkg)
    n_classes = int(objects[class_field].max()) + 1
    summaries = class_summaries(objects, class_field, n_classes)
    picks = choose_chips(objects, class_field, n_classes, chips_per_class, random_chips, seed)

    first_scene = str(objects.at[objects["instance_id"].idxmin(), "scene"])  # label's first scene
    chip_scenes = {str(objects.at[fid, "scene"]) for kinds in picks.values() for fids in kinds.values() for fid in fids}
    needed = [first_scene] + sorted(chip_scenes - {first_scene})
    found = {name: find_scene(gpkg, name, scenes) for name in needed}
    scene_paths = {name: path if is_remote(path) else os.path.abspath(path) for name, path in found.items()}
    recorded_roles = _recorded_band_roles(gpkg)
    opened = {name: _with_recorded_roles(open_scene(p, allow_pixel_coords=True), recorded_roles.get(name))
              for name, p in scene_paths.items()}
    view = resolve_bands(bands, opened[first_scene].count, opened[first_scene].shown, opened[first_scene].band_roles)

    overview = _overview(gpkg, opened[first_scene], objects, class_field, n_classes, crs_wkt, view)
    chips = _read_chips(gpkg, objects, picks, opened, crs_wkt, chip_px, bands)
    for summary, signature, n_px in zip(summaries, overview.signatures, overview.signature_px):
        summary["signature"], summary["signature_px"] = signature, n_px
        summary["nearest_ids"] = [int(objects.at[f, "instance_id"]) for f in picks[summary["class"]]["nearest"]]
        summary["random_ids"] = [int(objects.at[f, "instance_id"]) for f in picks[summary["class"]]["random"]]
        summary["chip_ids"] = summary["nearest_ids"] + summary["random_ids"]

    width, height = gallery_size_px(n_classes, chips_per_class, chip_px, overview.image.shape[:2])
    figure = _draw(gpkg, summaries, chips, overview, opened[first_scene], view, chip_px, chips_per_class,
                   (width, height))
    report = {
        "path": str(path), "objects": len(objects), "n_classes": n_classes, "classes": summaries,
        # as messages name them: a signed URL's token never reaches the report (or the HTML)
        "scenes": {name: scene.shown for name, scene in opened.items()}, "overview_scene": first_scene,
        "bands": list(view),
        "band_labels": opened[first_scene].band_roles.labels(opened[first_scene].count),
        "chips": sum(len(c) for c in chips.values()), "width_px": width, "height_px": height,
    }
    _write(figure, path, as_html, report, overwrite)
    report["seconds"] = time.perf_counter() - started
    return report


def _check_options(chips_per_class: int, random_chips: int, chip_px: int) -> None:
    if chips_per_class < 0 or random_chips < 0:
        raise OptionError(f"chips per class ({chips_per_class}) and random chips ({random_chips}) must be >= 0")
    if random_chips > chips_per_class:
        raise OptionError(f"random chips ({random_chips}) cannot exceed chips per class ({chips_per_class})")
    if chip_px < 16:
        raise OptionError(f"chip size must be at least 16 px, got {chip_px}")


# ---------------------------------------------------------------------------------------------
# The table: attributes, per-class figures, chip choice


def read_objects(gpkg: str):
    """Every object's attributes, without geometries, indexed by GeoPackage fid.

    Returns ``(frame, class_field, crs_wkt)``; ``class_field`` is ``pseudo_class`` (label) or
    ``class_id`` (predict).
    """
    if not Path(gpkg).exists():
        raise InputError(f"{gpkg}: file not found")
    info = layer_info(gpkg)
    fields = set(info["fields"])
    class_field = next((f for f in ("pseudo_class", "class_id") if f in fields), None)
    missing = [f for f in ("instance_id", "scene") if f not in fields]
    if class_field is None or missing:
        absent = missing + ([] if class_field else ["pseudo_class"])
        raise InputError(f"{gpkg}: lacks field(s) {', '.join(absent)}; not a geoalps output")
    wanted = ["instance_id", class_field, "scene"] + [f for f in ("area", "area_px", "class_distance", "score",
                                                                   "class_name", "class_id")
                                                    if f in fields and f != class_field]
    frame = read_layer(gpkg, columns=wanted, read_geometry=False, fid_as_index=True)
    frame = frame[frame[class_field].notna() & (frame[class_field] >= 0)]
    if not len(frame):
        raise InputError(f"{gpkg}: has no classified objects; nothing to show")
    frame[class_field] = frame[class_field].astype(np.int64)
    if "area" not in frame.columns:
        frame["area"] = frame["area_px"] if "area_px" in frame.columns else 1.0
    return frame, class_field, info["crs"]


def class_summaries(objects, class_field: str, n_classes: int) -> list[dict]:
    """Per class ``0..n_classes-1``: name, colour, object count and share of the total area."""
    colours = class_colours(objects, class_field, n_classes)
    counts = objects.groupby(class_field).size().reindex(range(n_classes), fill_value=0)
    areas = objects.groupby(class_field)["area"].sum().reindex(range(n_classes), fill_value=0.0)
    total_area = float(areas.sum())
    names = _class_names(objects, class_field)
    return [
        {"class": k, "name": names.get(k, f"class {k}"), "color": "#{:02x}{:02x}{:02x}".format(*colours[k]),
         "count": int(counts[k]), "area_share": float(areas[k]) / total_area if total_area > 0 else 0.0}
        for k in range(n_classes)
    ]


def class_colours(objects, class_field: str, n_classes: int) -> list[tuple[int, int, int]]:
    """Each class's colour as the layer's QGIS style shows it (:func:`output_class_colours`): a
    pseudo-class of a named output (``class_id`` beside ``pseudo_class``, ``geoalps classes
    name``) has its named class's colour, that of the lowest pseudo-class of the class in the
    layer; otherwise its own."""
    if class_field != "pseudo_class" or "class_id" not in objects.columns:
        return output_class_colours(n_classes)
    named = objects[objects["class_id"].notna()]
    class_of = named.groupby("pseudo_class")["class_id"].first()
    first_of_class = named.groupby("class_id")["pseudo_class"].min()
    firsts = [int(first_of_class[class_of[k]]) if k in class_of.index else k for k in range(n_classes)]
    return output_class_colours(n_classes, firsts)


def _class_names(objects, class_field: str) -> dict[int, str]:
    """The most common non-empty ``class_name`` of each class, where the layer has names."""
    if "class_name" not in objects.columns:
        return {}
    named = objects[objects["class_name"].notna() & (objects["class_name"].astype(str) != "")]
    return {int(k): str(group.mode().iloc[0]) for k, group in named.groupby(class_field)["class_name"]}


def choose_chips(objects, class_field: str, n_classes: int, chips_per_class: int, random_chips: int,
                 seed: int) -> dict[int, dict[str, list[int]]]:
    """Per class the fids of its example objects: ``nearest`` (smallest ``class_distance``, ties
    by instance_id; highest score where there is no distance) and ``random`` (from the rest)."""
    picks: dict[int, dict[str, list[int]]] = {}
    for k in range(n_classes):
        members = objects[objects[class_field] == k]
        if "class_distance" in members.columns:
            ranked = members.sort_values(["class_distance", "instance_id"], kind="stable")
        elif "score" in members.columns:
            ranked = members.sort_values(["score", "instance_id"], ascending=[False, True], kind="stable")
        else:
            ranked = members.sort_values("instance_id")
        n_nearest = min(len(ranked), chips_per_class - random_chips)
        nearest = ranked.index[:n_nearest].tolist()
        rest = ranked.index[n_nearest:]
        n_random = min(len(rest), random_chips)
        rng = np.random.default_rng(seed + k)
        drawn = sorted(rng.choice(len(rest), size=n_random, replace=False).tolist()) if n_random else []
        picks[k] = {"nearest": [int(f) for f in nearest], "random": [int(rest[i]) for i in drawn]}
    return picks


# ---------------------------------------------------------------------------------------------
# Scenes


def find_scene(gpkg: str, name: str, scenes: list[str | os.PathLike] | None = None) -> str:
    """The path of the scene file ``name``: from ``scenes`` (by file name), else the GeoPackage's
    ``geoalps_scenes`` metadata, else beside the GeoPackage, else in the current folder. A URL
    or GDAL virtual path (given, or recorded by the labelling run) is taken as it is: whether it
    answers shows when it is opened."""
    for given in scenes or []:  # a name is a file name, or a path's end when scenes shared one
        if is_remote(given):
            if _remote_file_name(str(given)) == name:
                return str(given)
            continue
        if (Path(given).name == name or Path(os.path.abspath(given)).as_posix().endswith(f"/{name}")) \
                and Path(given).exists():
            return str(given)
    recorded = _recorded_scenes(gpkg).get(name)
    if recorded and is_remote(recorded):
        return recorded
    candidates = ([Path(recorded)] if recorded else []) + [Path(gpkg).parent / name, Path.cwd() / name]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise InputError(f"{gpkg}: scene {name} not found (give it with --scene)")


def _remote_file_name(location: str) -> str:
    """The file name at the end of a URL's or virtual path's path (query string left out)."""
    from urllib.parse import urlparse

    return Path(urlparse(location).path if "://" in location else location).name


def _recorded_scenes(gpkg: str) -> dict[str, str]:
    """``geoalps_scenes`` from the GeoPackage's dataset metadata; {} when absent or malformed."""
    try:
        metadata = layer_metadata(gpkg)
        recorded = json.loads(metadata.get(SCENES_METADATA, "{}"))
    except (ValueError, TypeError, OSError, InputError):
        return {}
    return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


def _recorded_band_roles(gpkg: str) -> dict[str, list]:
    """``geoalps_band_roles`` from the layer metadata (the roles the labelling run used); {} when
    absent or malformed."""
    try:
        recorded = json.loads(layer_metadata(gpkg).get(BAND_ROLES_METADATA, "{}"))
    except (ValueError, TypeError, OSError, InputError):
        return {}
    return {str(k): v for k, v in recorded.items() if isinstance(v, list)} if isinstance(recorded, dict) else {}


def _with_recorded_roles(scene: Scene, recorded: list | None) -> Scene:
    """``scene`` with the band roles its labelling run recorded, when they fit it (one known
    vocabulary word or null a band); else the roles from the scene's own header."""
    if not recorded or len(recorded) != scene.count:
        return scene
    names = tuple(n if isinstance(n, str) and n in BAND_NAME_VOCABULARY else None for n in recorded)
    if not any(names):
        return scene
    return replace(scene, band_roles=BandRoles(names, "recorded", scene.band_roles.descriptions))


def _view_stats(stats: BandStats, view: tuple[int, int, int]) -> BandStats:
    """The stretch limits of the three view bands only (chips read just those bands)."""
    return BandStats(low=tuple(stats.low[b - 1] for b in view), high=tuple(stats.high[b - 1] for b in view),
                     valid_fraction=stats.valid_fraction)


def to_scene_crs(geometries, layer_crs: str | None, scene: Scene):
    """GeoSeries in the scene's CRS (the layer is in the first scene's CRS)."""
    if layer_crs is None or scene.crs_wkt is None or len(geometries) == 0:
        return geometries
    if same_crs(layer_crs, scene.crs_wkt):
        return geometries
    return geometries.set_crs(layer_crs, allow_override=True).to_crs(scene.crs_wkt)


# ---------------------------------------------------------------------------------------------
# Overview and signatures: one decimated read


def _overview(gpkg: str, scene: Scene, objects, class_field: str, n_classes: int, layer_crs: str | None,
              view: tuple[int, int, int]) -> _Overview:
    """The scene decimated to at most OVERVIEW_PX, class colours blended in, and per class the
    mean of every band under its polygons (in scene units)."""
    from affine import Affine

    scale = min(1.0, OVERVIEW_PX / max(scene.width, scene.height))
    out_h, out_w = max(1, round(scene.height * scale)), max(1, round(scene.width * scale))
    with open_dataset(scene.path, shown=scene.shown) as src:
        data = read_pixels(src, shown=scene.shown, out_shape=(scene.count, out_h, out_w))
    grid = scene.transform * Affine.scale(scene.width / out_w, scene.height / out_h)
    classes = _rasterize_classes(gpkg, objects[objects["scene"] == scene.name], class_field, layer_crs, scene,
                                 grid, (out_h, out_w))
    valid = valid_pixels(data, scene.nodata)
    signatures: list[list[float] | None] = []
    signature_px: list[int] = []
    for k in range(n_classes):
        under = (classes == k) & valid
        n_px = int(under.sum())
        signature_px.append(n_px)
        signatures.append([float(v) for v in data[:, under].astype(np.float64).mean(axis=1)] if n_px else None)
    scene_image = stretch_to_uint8(data, valid, view, scene.stats)
    image = scene_image.astype(np.float32)
    palette = np.array(class_colours(objects, class_field, n_classes), dtype=np.float32)
    coloured = classes >= 0
    image[coloured] = (1 - OVERVIEW_BLEND) * image[coloured] + OVERVIEW_BLEND * palette[classes[coloured]]
    return _Overview(scene_image, np.rint(image).astype(np.uint8), signatures, signature_px)


def _rasterize_classes(gpkg: str, members, class_field: str, layer_crs: str | None, scene: Scene, grid,
                       shape: tuple[int, int]) -> np.ndarray:
    """Class id per pixel of the decimated grid (-1 outside every polygon). Geometries are read
    largest first, GEOMETRY_BATCH at a time, so smaller polygons end up on top."""
    import shapely
    from rasterio.features import rasterize

    classes = np.full(shape, -1, dtype=np.int32)
    ordered = members.sort_values(["area", "instance_id"], ascending=[False, True], kind="stable")
    # On a coarser grid, vertices closer than a quarter of its pixel do not change the burn but
    # cost most of rasterize's time (pixel-traced outlines have a vertex every pixel).
    decimated_px = min(abs(grid.a), abs(grid.e))
    tolerance = decimated_px / 4 if decimated_px > max(scene.res) * 1.5 else 0.0
    for start in range(0, len(ordered), GEOMETRY_BATCH):
        fids = ordered.index[start:start + GEOMETRY_BATCH]
        batch = read_layer(gpkg, columns=[], fids=np.asarray(fids), fid_as_index=True)
        geometries = to_scene_crs(batch.geometry.reindex(fids), layer_crs, scene).to_numpy()
        if tolerance:
            geometries = shapely.simplify(geometries, tolerance, preserve_topology=False)
        values = ordered.loc[fids, class_field].to_numpy()
        shapes = ((g, int(v)) for g, v in zip(geometries, values) if g is not None and not g.is_empty)
        burned = rasterize(shapes, out_shape=shape, transform=grid, fill=-1, dtype="int32")
        classes = np.where(burned >= 0, burned, classes)
    return classes


# ---------------------------------------------------------------------------------------------
# Chips: one window read each


def _read_chips(gpkg: str, objects, picks, opened: dict[str, Scene], layer_crs: str | None, chip_px: int,
                bands: str | None) -> dict[int, list[_Chip]]:
    order = [(k, kind, fid) for k, kinds in picks.items() for kind in ("nearest", "random") for fid in kinds[kind]]
    chips: dict[int, list[_Chip]] = {k: [] for k in picks}
    if not order:
        return chips
    fids = np.array([fid for _, _, fid in order])
    geometries = read_layer(gpkg, columns=[], fids=fids, fid_as_index=True).geometry
    by_scene: dict[str, list] = {}
    for k, kind, fid in order:
        by_scene.setdefault(str(objects.at[fid, "scene"]), []).append((k, kind, fid))
    for name, items in by_scene.items():
        scene = opened[name]
        view = resolve_bands(bands, scene.count, scene.shown, scene.band_roles)
        stats = _view_stats(scene.stats, view)
        shapes = to_scene_crs(geometries.loc[[fid for _, _, fid in items]], layer_crs, scene)
        with open_dataset(scene.path, shown=scene.shown) as src:
            for (k, kind, fid), geometry in zip(items, shapes):
                distance = objects.at[fid, "class_distance"] if "class_distance" in objects.columns else None
                image, outlines = _chip(src, scene, geometry, view, stats, chip_px)
                chips[k].append(_Chip(int(objects.at[fid, "instance_id"]), kind, image, outlines,
                                      None if distance is None else float(distance)))
    return chips


def read_chip(scene: Scene, geometry, *, chip_px: int = 96, bands: str | None = None
              ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One object's chip as the gallery shows it: ``(image, outlines)``.

    ``image`` is (chip_px, chip_px, 3) uint8, the view bands with the scene's stretch, of a
    square around the object padded by 40% (slid onto the scene near its edges); ``outlines``
    are the polygon's rings as (n, 2) arrays of (col, row) in chip pixels. ``geometry`` is in the
    scene's CRS. One windowed read.
    """
    view = resolve_bands(bands, scene.count, scene.shown, scene.band_roles)
    with open_dataset(scene.path, shown=scene.shown) as src:
        return _chip(src, scene, geometry, view, _view_stats(scene.stats, view), chip_px)


def _chip(src, scene: Scene, geometry, view: tuple[int, int, int], stats: BandStats,
          chip_px: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The object's padded square neighbourhood as a (chip_px, chip_px, 3) uint8 view and its
    outline rings in chip pixels; one read of the three view bands."""
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    inverse = ~scene.transform
    minx, miny, maxx, maxy = geometry.bounds
    cols, rows = zip(*(inverse * (x, y) for x, y in ((minx, miny), (maxx, maxy))))
    c0, c1, r0, r1 = min(cols), max(cols), min(rows), max(rows)
    side = max(16, math.ceil(max(c1 - c0, r1 - r0) * 1.4 + 8))
    col_off = math.floor((c0 + c1) / 2 - side / 2)
    row_off = math.floor((r0 + r1) / 2 - side / 2)
    # Near an edge, slide the square onto the scene (the object stays inside it) rather than pad.
    if side <= scene.width:
        col_off = min(max(col_off, 0), scene.width - side)
    if side <= scene.height:
        row_off = min(max(row_off, 0), scene.height - side)
    window = Window(col_off, row_off, side, side)
    fill = scene.nodata if scene.nodata is not None and not math.isnan(scene.nodata) else 0
    resampling = Resampling.nearest if side <= chip_px else Resampling.average
    # boundless only where the square passes the scene's edges (read_pixels decides); a read
    # failure is the raster door's one line, naming the scene as shown (never a signed URL).
    data = read_pixels(src, window, shown=scene.shown, indexes=list(view), boundless=True, fill_value=fill,
                       out_shape=(3, chip_px, chip_px), resampling=resampling)
    valid = valid_pixels(data, scene.nodata) & _inside_mask(col_off, row_off, side, chip_px, scene)
    image = stretch_to_uint8(data, valid, (1, 2, 3), stats)
    to_chip = Affine.scale(chip_px / side) * Affine.translation(-col_off, -row_off) * inverse
    outlines = []
    for polygon in getattr(geometry, "geoms", [geometry]):
        for ring in [polygon.exterior, *polygon.interiors]:
            xy = np.asarray(ring.coords)[:, :2]
            outlines.append(np.array([to_chip * (x, y) for x, y in xy]))
    return image, outlines


def _inside_mask(col_off: int, row_off: int, side: int, chip_px: int, scene: Scene) -> np.ndarray:
    """Chip pixels whose centre falls on the scene (boundless reads fill the rest)."""
    centres = col_off + (np.arange(chip_px) + 0.5) * side / chip_px
    rows = row_off + (np.arange(chip_px) + 0.5) * side / chip_px
    return ((rows >= 0) & (rows < scene.height))[:, None] & ((centres >= 0) & (centres < scene.width))[None, :]


# ---------------------------------------------------------------------------------------------
# The picture


def gallery_size_px(n_classes: int, chips_per_class: int, chip_px: int,
                    overview_shape: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the gallery picture in pixels.

    Width: margins, the class column (_INFO_W), the signature column (_SIG_W) and
    ``chips_per_class`` chips of ``chip_px`` with gaps, at least _MIN_WIDTH. Height: the header,
    the overview (the scene and the class map side by side, the scene's aspect, at most
    _OVERVIEW_MAX_H high) and one row a class (a chip and its caption).
    """
    width = max(_MIN_WIDTH, 2 * _MARGIN + _INFO_W + _SIG_W + chips_per_class * (chip_px + _CHIP_GAP))
    _, ov_h = _overview_box(width, overview_shape)
    height = _HEADER_H + ov_h + _ROW_GAP + n_classes * _row_height(chip_px) + _MARGIN
    return width, height


def _row_height(chip_px: int) -> int:
    return max(chip_px, 80) + _CAPTION_H + _ROW_GAP


def _overview_box(width: int, overview_shape: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of each of the two overview panels."""
    h, w = overview_shape
    box_w = (width - 2 * _MARGIN - _CHIP_GAP) // 2
    box_h = min(_OVERVIEW_MAX_H, round(box_w * h / w))
    return min(box_w, round(box_h * w / h)), box_h


def _draw(gpkg: str, summaries: list[dict], chips: dict[int, list[_Chip]], overview: _Overview, scene: Scene,
          view: tuple[int, int, int], chip_px: int, chips_per_class: int, size: tuple[int, int]):
    """The figure, laid out in pixels (axes placed by absolute rectangles, so the size is exact)."""
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    width, height = size
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")

    def axes(left: float, top: float, w: float, h: float):
        """Axes at pixel rectangle (left, top, w, h), measured from the top-left corner."""
        return figure.add_axes((left / width, 1 - (top + h) / height, w / width, h / height))

    total = sum(s["count"] for s in summaries)
    figure.text(_MARGIN / width, 1 - 14 / height, f"{Path(gpkg).name}: {total} objects in "
                f"{len(summaries)} classes", fontsize=12, weight="bold", va="top")
    figure.text(_MARGIN / width, 1 - 30 / height, f"overview and signatures (mean of each band under the "
                f"class, scene units) from {scene.name} ({scene.width} x {scene.height} px, {scene.count} "
                "bands); chips: nearest the class centre (d = class_distance), then random", fontsize=7.5,
                va="top", color="#444444")
    ov_w, ov_h = _overview_box(width, overview.image.shape[:2])
    labels = scene.band_roles.labels(scene.count)
    shown_bands = ", ".join(labels[b - 1] for b in view) + f" = bands {', '.join(map(str, view))}" \
        if scene.band_roles.known else f"bands {view}"
    for side, (picture, label) in enumerate(((overview.scene_image, f"{scene.name}, {shown_bands}"),
                                             (overview.image, "pseudo-classes"))):
        left = width / 2 + (_CHIP_GAP / 2 if side else -_CHIP_GAP / 2 - ov_w)
        ax = axes(left, _HEADER_H, ov_w, ov_h)
        ax.imshow(picture, interpolation="antialiased", aspect="auto")
        ax.set_axis_off()
        figure.text((left + 4) / width, 1 - (_HEADER_H + 4) / height, label, fontsize=7, va="top",
                    color="white", bbox={"facecolor": "black", "alpha": 0.55, "pad": 2, "edgecolor": "none"})

    known = [v for s in summaries if s["signature"] for v in s["signature"]]
    y_range = (min(known), max(known)) if known else (0.0, 1.0)
    pad = (y_range[1] - y_range[0]) * 0.08 or 1.0
    y_limits = (y_range[0] - pad, y_range[1] + pad)
    row_h = _row_height(chip_px)
    for index, summary in enumerate(summaries):
        top = _HEADER_H + ov_h + _ROW_GAP + index * row_h
        rgb = tuple(int(summary["color"][i:i + 2], 16) / 255 for i in (1, 3, 5))
        info = axes(_MARGIN, top, _INFO_W - 8, row_h - _ROW_GAP)
        info.set_axis_off()
        info.set_xlim(0, 1)
        info.set_ylim(1, 0)
        info.add_patch(Rectangle((0, 0.02), 0.22, 0.42, facecolor=rgb, edgecolor="none"))
        info.text(0.26, 0.05, summary["name"], fontsize=11, weight="bold", va="top")
        share = f"{summary['area_share'] * 100:.1f}% of object area"
        info.text(0, 0.55, f"{summary['count']} objects\n{share}", fontsize=8, va="top")
        _draw_signature(axes(_MARGIN + _INFO_W + 28, top + 4, _SIG_W - 36, row_h - _ROW_GAP - 22), summary,
                        rgb, y_limits, scene.band_roles.labels(scene.count))
        for position, chip in enumerate(chips.get(summary["class"], [])[:chips_per_class]):
            left = _MARGIN + _INFO_W + _SIG_W + position * (chip_px + _CHIP_GAP)
            ax = axes(left, top, chip_px, chip_px)
            ax.imshow(chip.image, interpolation="nearest", extent=(0, chip_px, chip_px, 0))
            for ring in chip.outlines:
                ax.plot(ring[:, 0], ring[:, 1], color=rgb, linewidth=1.4,
                        path_effects=[patheffects.withStroke(linewidth=2.6, foreground="black")])
            ax.set_xlim(0, chip_px)
            ax.set_ylim(chip_px, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            caption = (f"#{chip.instance_id} d={chip.class_distance:.3g}"
                       if chip.kind == "nearest" and chip.class_distance is not None
                       else f"#{chip.instance_id} {chip.kind}")
            figure.text((left + chip_px / 2) / width, 1 - (top + chip_px + 2) / height, caption, fontsize=6.5,
                        ha="center", va="top", style="italic" if chip.kind == "random" else "normal")
    return figure


def _draw_signature(ax, summary: dict, rgb, y_limits: tuple[float, float], band_labels: list[str]) -> None:
    """One class's signature; the x axis names the bands (``band_labels``: role, description or
    "band N")."""
    signature = summary["signature"]
    ax.set_ylim(*y_limits)
    ax.tick_params(labelsize=6, length=2, pad=1)
    if signature is None:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "no pixels on the\noverview grid", transform=ax.transAxes, ha="center",
                va="center", fontsize=7, color="#777777")
        return
    bands = np.arange(1, len(signature) + 1)
    ax.plot(bands, signature, color=rgb, marker="o", markersize=3, linewidth=1.6,
            markeredgecolor="black", markeredgewidth=0.4)
    ax.set_xticks(bands, [label.removeprefix("band ") for label in band_labels],
                  fontsize=6 if len(bands) <= 5 else 5, rotation=0 if len(bands) <= 5 else 35)
    ax.set_xlim(0.6, len(signature) + 0.4)
    if all(label.startswith("band ") for label in band_labels):
        ax.set_xlabel("band", fontsize=6, labelpad=1)
    ax.grid(alpha=0.3, linewidth=0.5)


# ---------------------------------------------------------------------------------------------
# Writing


def _write(figure, path, as_html: bool, report: dict, overwrite: bool) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    png = buffer.getvalue()
    data = _html_page(png, report).encode("utf-8") if as_html else png
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)


def _html_page(png: bytes, report: dict) -> str:
    """A self-contained page: the class table as text (searchable) and the picture inlined."""
    esc = html_lib.escape
    rows = "".join(
        f"<tr><td><span style=\"display:inline-block;width:1.2em;height:1.2em;background:{c['color']}\">"
        f"</span></td><td>{c['class']}</td><td>{esc(c['name'])}</td><td>{c['count']}</td>"
        f"<td>{c['area_share'] * 100:.1f}%</td>"
        f"<td>{', '.join(str(i) for i in c['chip_ids'])}</td></tr>"
        for c in report["classes"]
    )
    image = base64.b64encode(png).decode("ascii")
    title = esc(f"geoalps classes: {report['objects']} objects, {report['n_classes']} classes")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + title + "</title>"
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        f"<h1>{title}</h1><p>overview and signatures from {esc(report['overview_scene'])}</p>"
        "<table><tr><th></th><th>class</th><th>name</th><th>objects</th><th>area share</th>"
        f"<th>chip instance_ids</th></tr>{rows}</table>"
        f"<p><img alt=\"class gallery\" width=\"{report['width_px']}\" height=\"{report['height_px']}\" "
        f"src=\"data:image/png;base64,{image}\"></p></body></html>\n"
    )
