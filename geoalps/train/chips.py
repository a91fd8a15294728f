"""Pseudo-labels out: image chips, class masks and COCO instance annotations other frameworks load.

``export_chips(labels, scenes, folder)`` cuts each scene into square chips on its own grid (the
tile rule of :mod:`geoalps.inputs.tiles`, no overlap; the last row and column shifted back to
end at the scene edge) and writes, per chip:

    images/<scene>_r<row>_c<col>.tif   the scene's pixels (GeoTIFF: CRS, transform, nodata kept)
    masks/<scene>_r<row>_c<col>.tif    uint16 class mask on the same grid: 0 = no object,
                                       k + 1 = class k (the layer's class_id, else pseudo_class)

and for the whole set ``annotations/instances_train.json`` and ``instances_val.json`` (COCO
instance segmentation: one annotation per object clipped to the chip, in chip pixels; category
id k + 1 named after the class; polygons, or an uncompressed RLE for objects with holes) and
``splits/train.txt`` / ``val.txt`` (chip names, mmseg's split files). The split is spatial: chips
are grouped in blocks of ``block_chips`` x ``block_chips`` and whole blocks go to validation,
drawn with ``seed``, so neighbouring chips do not leak between the two.

Cost: every scene pixel is read once and written once; the label layer is read once.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geoalps.errors import InputError, OptionError, OutputError

#: Mask value of pixels outside every object.
BACKGROUND = 0


@dataclass(frozen=True)
class ChipOptions:
    """How chips are cut and split: ``chip_size_px`` square chips (>= 64), ``val_fraction`` of
    the blocks of ``block_chips`` x ``block_chips`` chips held out, drawn with ``seed``."""

    chip_size_px: int = 256
    val_fraction: float = 0.2
    block_chips: int = 4
    seed: int = 0

    def validated(self) -> "ChipOptions":
        from geoalps.options import TILE_SIZE_MIN_PX

        if self.chip_size_px < TILE_SIZE_MIN_PX:
            raise OptionError(f"--chip-size must be at least {TILE_SIZE_MIN_PX} px")
        if not 0 <= self.val_fraction < 1:
            raise OptionError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.block_chips < 1:
            raise OptionError("--block-chips must be at least 1")
        if not 0 <= self.seed < 2**32:
            raise OptionError(f"--seed must be between 0 and {2**32 - 1}")
        return self


def export_chips(labels: str | os.PathLike, scenes: Sequence[str | os.PathLike], output: str | os.PathLike,
                 options: ChipOptions | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the chips, masks, COCO files and split lists of ``scenes`` and ``labels`` to ``output``.

    Returns a summary: chips per split, annotations per split, classes.

    Raises:
        InputError: unreadable labels, no class field, a scene that is not georeferenced.
        OutputError: ``output`` exists (without ``overwrite``) or holds an input.
    """
    from geoalps.outputs.vector import read_layer
    from geoalps.train.data import open_north_up

    options = (options or ChipOptions()).validated()
    output = Path(output)
    _check_output_folder(output, [labels, *scenes], overwrite)
    try:
        frame = read_layer(labels)
    except Exception as exc:  # noqa: BLE001 - pyogrio/GDAL raise several unrelated types
        raise InputError(f"{labels}: not a readable label layer ({exc.__class__.__name__})") from None
    field = "class_id" if "class_id" in frame.columns else "pseudo_class" if "pseudo_class" in frame.columns else None
    if field is None:
        raise InputError(f"{labels}: no class_id or pseudo_class column (a layer from 'geoalps label' or 'predict')")
    if frame.crs is None:
        raise InputError(f"{labels}: label layer has no CRS")
    n_classes = int(frame[field].max()) + 1 if len(frame) else 0
    names = _class_names(frame, field, n_classes)
    grids = [open_north_up(s) for s in scenes]
    folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for sub in ("images", "masks", "annotations", "splits"):
            (folder / sub).mkdir()
        coco = {split: _coco_header(names) for split in ("train", "val")}
        splits: dict[str, list[str]] = {"train": [], "val": []}
        for grid in grids:
            _write_scene_chips(grid, _objects_of(frame, grid, field), folder, options, coco, splits)
        for split in ("train", "val"):
            (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco[split]))
            (folder / "splits" / f"{split}.txt").write_text("".join(f"{n}\n" for n in splits[split]))
        if output.exists():
            shutil.rmtree(output)
        folder.rename(output)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return {"chips": {k: len(v) for k, v in splits.items()},
            "annotations": {k: len(v["annotations"]) for k, v in coco.items()}, "classes": names}


def _check_output_folder(output: Path, inputs: Sequence[Any], overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: exists and is not a folder")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputError(f"{output}: exists and is not empty (use --overwrite to replace it)")
    resolved = output.resolve()
    for path in inputs:
        if resolved == Path(path).resolve() or resolved in Path(path).resolve().parents:
            raise OutputError(f"{output}: holds the input {path}; write the chips elsewhere")
    if not output.parent.exists():
        raise OutputError(f"{output}: parent folder does not exist")


def _class_names(frame: Any, field: str, n_classes: int) -> list[str]:
    names = [f"pseudo {k}" if field == "pseudo_class" else f"class {k}" for k in range(n_classes)]
    if "class_name" in frame.columns and field == "class_id":
        for k, name in zip(frame[field], frame["class_name"]):
            if isinstance(name, str) and name:
                names[int(k)] = name
    return names


def _objects_of(frame: Any, grid: Any, field: str) -> Any:
    """The layer's objects of one scene (its ``scene`` column when present), in the scene CRS."""
    from rasterio.crs import CRS

    if "scene" in frame.columns and frame["scene"].notna().any():
        frame = frame[frame["scene"] == Path(grid.path).name]
    frame = frame[[field, "geometry"]].rename(columns={field: "class"})
    return frame.to_crs(CRS.from_wkt(grid.crs_wkt)) if len(frame) else frame


def _coco_header(names: list[str]) -> dict[str, Any]:
    return {"info": {"description": "pseudo-labels from geoalps export-chips"},
            "images": [], "annotations": [],
            "categories": [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(names)]}


def _write_scene_chips(grid: Any, objects: Any, folder: Path, options: ChipOptions, coco: dict, splits: dict) -> None:
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    from geoalps.inputs.scene import open_raster, read_window
    from geoalps.inputs.tiles import plan_tiles

    tiles = plan_tiles(grid.width, grid.height, options.chip_size_px, 0)
    val_blocks = _val_blocks(tiles, options)
    stem = Path(grid.path).stem
    geoms = objects.geometry.to_numpy() if len(objects) else np.zeros(0, dtype=object)
    classes = objects["class"].to_numpy().astype(np.int64) if len(objects) else np.zeros(0, np.int64)
    tree = shapely.STRtree(geoms)
    profile = {"dtype": grid.dtype, "count": grid.count, "nodata": grid.nodata}
    descriptions = grid.band_roles.descriptions
    for tile in tiles:
        name = f"{stem}_r{tile.row}_c{tile.col}"
        split = "val" if (tile.row // options.block_chips, tile.col // options.block_chips) in val_blocks else "train"
        transform = tile.transform(grid.transform)
        w, h = tile.width, tile.height
        meta = dict(driver="GTiff", width=w, height=h, crs=grid.crs_wkt, transform=transform, **profile)
        with open_raster(folder / "images" / f"{name}.tif", "w", **meta) as dst:
            dst.write(read_window(grid, tile.window))
            if any(descriptions):
                dst.descriptions = descriptions
        # objects in chip pixels, clipped to the chip
        inverse = ~transform
        hits = tree.query(shapely.box(*tile.envelope(grid.transform)), predicate="intersects")
        pieces = []
        for i in hits:
            local = shapely.transform(geoms[i], lambda xy: np.column_stack(inverse * (xy[:, 0], xy[:, 1])))
            local = shapely.make_valid(shapely.clip_by_rect(local, 0, 0, w, h))
            local = _polygons_only(local)
            if local is not None and local.area > 0:
                pieces.append((local, int(classes[i])))
        identity = Affine.identity()
        mask = (rasterize([(g, k + 1) for g, k in pieces], out_shape=(h, w), transform=identity, fill=BACKGROUND,
                          dtype="uint16") if pieces else np.full((h, w), BACKGROUND, np.uint16))
        with open_raster(folder / "masks" / f"{name}.tif", "w", driver="GTiff", width=w, height=h, count=1,
                         dtype="uint16", crs=grid.crs_wkt, transform=transform) as dst:
            dst.write(mask, 1)
        image_id = len(coco["train"]["images"]) + len(coco["val"]["images"]) + 1
        coco[split]["images"].append({"id": image_id, "file_name": f"images/{name}.tif", "width": w, "height": h,
                                      "mask_file": f"masks/{name}.tif"})
        for geom, k in pieces:
            coco[split]["annotations"].append(_annotation(geom, k, image_id, w, h, coco))
        splits[split].append(name)


def _polygons_only(geom: Any) -> Any:
    """The polygonal part of a clipped geometry (lines and points from touching edges dropped)."""
    import shapely

    parts = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and g.area > 0]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _annotation(geom: Any, k: int, image_id: int, w: int, h: int, coco: dict) -> dict[str, Any]:
    """One COCO annotation in chip pixels: polygons (x, y pairs), or an uncompressed RLE when the
    object has holes (COCO polygons cannot carry them); area in pixels."""
    import shapely
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    parts = list(shapely.get_parts(geom))
    minx, miny, maxx, maxy = geom.bounds
    ann = {"id": sum(len(c["annotations"]) for c in coco.values()) + 1, "image_id": image_id, "category_id": k + 1,
           "iscrowd": 0, "bbox": [minx, miny, maxx - minx, maxy - miny]}
    if any(len(p.interiors) for p in parts):
        pixels = rasterize([geom], out_shape=(h, w), transform=Affine.identity(), fill=0, dtype="uint8")
        ann["segmentation"] = {"size": [h, w], "counts": _rle_counts(pixels)}
        ann["area"] = float(pixels.sum())
    else:
        ann["segmentation"] = [np.asarray(p.exterior.coords[:-1]).round(3).ravel().tolist() for p in parts]
        ann["area"] = float(geom.area)
    return ann


def _rle_counts(pixels: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of the column-major flattened mask, starting with zeros."""
    flat = pixels.ravel(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return [int(c) for c in counts]


def _val_blocks(tiles: list, options: ChipOptions) -> set[tuple[int, int]]:
    """Blocks of ``block_chips`` x ``block_chips`` chips held out for validation, drawn with the seed."""
    blocks = sorted({(t.row // options.block_chips, t.col // options.block_chips) for t in tiles})
    if options.val_fraction <= 0 or len(blocks) < 2:
        return set()
    n_val = min(len(blocks) - 1, max(1, math.floor(options.val_fraction * len(blocks) + 0.5)))
    chosen = np.random.default_rng(options.seed).choice(len(blocks), size=n_val, replace=False)
    return {blocks[int(i)] for i in chosen}
