#!/usr/bin/env python
"""A bank of synthetic scenes with ground truth, for choosing and reporting labelling defaults (issue 25).

Deterministic: every draw comes from ``numpy.random.default_rng`` seeded from ``--seed`` and the
scene's index, and GDAL writes no timestamps, so the same seed gives byte-identical files.

    python benchmarks/scene_bank/make_bank.py [--out benchmarks/scene_bank/out] [--seed 25]

Writes ``<name>.tif`` (the image) and ``<name>.gt.tif`` (uint8 truth on the same grid: classes
1..C, 0 = nodata / ignore, ``CLASS_NAMES`` tag indexed by id) for each of the written scenes of
:data:`SCENES` and the drawn ones of :data:`DRAWN`, and ``bank.json`` listing them: name, image and truth paths (relative to the
folder), number of true classes, pixel size in m, band count, band order, dtype, whether band
descriptions are set, nodata value, CRS, size and the scene's half ("selection" or "report"), split
once by the fixed :data:`SPLIT_SEED` (half and half; the drawn scenes by :data:`DRAWN_SPLIT_SEED`),
whatever ``--seed`` is.

What varies: pixel size 0.1-30 m; 3-13 bands in RGB, BGR, R,G,B,N, B,G,R,N, 6-7-band
Landsat-like, 8-band WorldView-like and 10/12/13-band Sentinel-2-like orders, with and without
band descriptions; uint8 (gamma-stretched), uint16 (reflectance x 10000) and float32 (reflectance
0-1); 3-12 classes of very unequal area. Layouts: warped Voronoi cells, smooth random patches,
field parcels, with rivers, roads as thin lines, ponds, and objects (buildings of several roof
materials, tree crowns) of many sizes. Each class has a plausible reflectance spectrum
(vegetation bright in NIR, water dark in NIR and SWIR, ...), varied region by region, with
texture at three spatial scales, crown shading and cast shadows at fine pixel sizes, a sensor
blur, an illumination gradient, haze (stronger at short wavelengths), sensor noise, and in some
scenes nodata areas (swath edge or a masked blob) with a nodata value. Cost: about ten seconds for
the whole bank (about 125 MB).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.draw import disk, polygon as draw_polygon

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"
SEED = 25
#: The selection / report split is drawn once with this seed, independent of --seed.
SPLIT_SEED = 2025
#: Metres per degree of latitude, for the pixel size of the EPSG:4326 scene.
M_PER_DEG = 111_320.0

# ----------------------------------------------------------------------------------------------
# Sensors: band order as common names (STAC eo:bands), centre wavelengths in nm.
WAVELENGTH_NM = {
    "coastal": 443, "blue": 490, "green": 560, "yellow": 605, "red": 665, "rededge1": 705,
    "rededge2": 740, "rededge3": 783, "nir": 842, "nir08": 865, "nir09": 945, "cirrus": 1375,
    "swir16": 1610, "swir22": 2190,
}
SENSORS = {
    "RGB": ("red", "green", "blue"),
    "BGR": ("blue", "green", "red"),
    "RGBN": ("red", "green", "blue", "nir"),
    "BGRN": ("blue", "green", "red", "nir"),
    "L6": ("blue", "green", "red", "nir", "swir16", "swir22"),
    "L7": ("coastal", "blue", "green", "red", "nir", "swir16", "swir22"),
    "WV8": ("coastal", "blue", "green", "yellow", "red", "rededge1", "nir", "nir09"),
    "S2-10": ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"),
    "S2-12": ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
              "swir16", "swir22"),
    "S2-13": ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
              "cirrus", "swir16", "swir22"),
}

# Reflectance (0-1) at anchor wavelengths, interpolated to each band (typical library spectra,
# simplified). Several spectra for one class are alternatives drawn region by region.
_W = (443, 490, 560, 665, 705, 740, 783, 842, 945, 1610, 2190)
MATERIALS = {
    "forest": (0.025, 0.03, 0.065, 0.03, 0.09, 0.24, 0.31, 0.34, 0.33, 0.17, 0.075),
    "conifer": (0.02, 0.025, 0.045, 0.022, 0.06, 0.16, 0.21, 0.23, 0.22, 0.11, 0.045),
    "grass": (0.04, 0.045, 0.09, 0.06, 0.11, 0.24, 0.29, 0.31, 0.30, 0.25, 0.14),
    "crop": (0.03, 0.035, 0.10, 0.04, 0.13, 0.32, 0.41, 0.45, 0.43, 0.22, 0.10),
    "soil": (0.07, 0.09, 0.13, 0.18, 0.20, 0.22, 0.235, 0.25, 0.27, 0.33, 0.28),
    "sand": (0.15, 0.18, 0.24, 0.30, 0.32, 0.33, 0.34, 0.35, 0.36, 0.42, 0.36),
    "shrub": (0.045, 0.055, 0.085, 0.095, 0.13, 0.18, 0.21, 0.23, 0.24, 0.29, 0.21),
    "wetland": (0.03, 0.035, 0.06, 0.04, 0.07, 0.13, 0.16, 0.18, 0.16, 0.08, 0.04),
    "water": (0.07, 0.065, 0.05, 0.03, 0.025, 0.02, 0.018, 0.015, 0.01, 0.005, 0.003),
    "river": (0.08, 0.085, 0.10, 0.08, 0.07, 0.05, 0.045, 0.04, 0.03, 0.01, 0.005),
    "urban": (0.09, 0.10, 0.12, 0.13, 0.14, 0.15, 0.155, 0.16, 0.17, 0.20, 0.18),
    "asphalt": (0.06, 0.07, 0.08, 0.085, 0.09, 0.095, 0.10, 0.10, 0.11, 0.13, 0.12),
    "rock": (0.10, 0.12, 0.17, 0.25, 0.27, 0.28, 0.29, 0.30, 0.31, 0.36, 0.30),
    "snow": (0.92, 0.93, 0.92, 0.88, 0.86, 0.83, 0.80, 0.76, 0.62, 0.08, 0.06),
    "roof_red": (0.06, 0.07, 0.09, 0.21, 0.24, 0.26, 0.27, 0.28, 0.30, 0.35, 0.30),
    "roof_grey": (0.17, 0.18, 0.19, 0.20, 0.20, 0.21, 0.21, 0.215, 0.22, 0.25, 0.23),
    "roof_dark": (0.05, 0.055, 0.06, 0.065, 0.065, 0.07, 0.07, 0.07, 0.075, 0.08, 0.08),
    "roof_white": (0.45, 0.47, 0.48, 0.48, 0.48, 0.47, 0.47, 0.46, 0.45, 0.40, 0.35),
}
#: Class name -> (materials drawn per region, texture amplitudes at fine/mid/coarse scale).
CLASSES = {
    "forest": (("forest", "conifer"), (0.16, 0.10, 0.06)),
    "conifer": (("conifer",), (0.18, 0.08, 0.05)),
    "grass": (("grass",), (0.04, 0.06, 0.07)),
    "crop": (("crop",), (0.03, 0.04, 0.05)),
    "soil": (("soil",), (0.05, 0.06, 0.08)),
    "sand": (("sand",), (0.03, 0.04, 0.06)),
    "shrub": (("shrub",), (0.10, 0.08, 0.06)),
    "wetland": (("wetland",), (0.05, 0.08, 0.08)),
    "water": (("water",), (0.01, 0.02, 0.04)),
    "river": (("river",), (0.01, 0.03, 0.03)),
    "urban": (("urban", "roof_red", "roof_grey", "asphalt"), (0.18, 0.10, 0.05)),
    "road": (("asphalt",), (0.03, 0.02, 0.02)),
    "rock": (("rock",), (0.08, 0.10, 0.10)),
    "snow": (("snow",), (0.02, 0.03, 0.05)),
    "building": (("roof_red", "roof_grey", "roof_dark", "roof_white"), (0.04, 0.02, 0.01)),
    "tree": (("forest", "conifer"), (0.12, 0.04, 0.02)),
    "pavement": (("roof_grey", "urban"), (0.05, 0.03, 0.03)),
}
#: Vegetation classes: a region mixes in some soil (sparser cover), each its own share.
VEGETATION = ("forest", "conifer", "grass", "crop", "shrub", "wetland", "tree")


@dataclass(frozen=True)
class SceneSpec:
    """One scene of the bank: grid, sensor, encoding and what is drawn on it."""

    name: str
    pixel_m: float
    shape_px: tuple[int, int]
    sensor: str
    dtype: str
    named: bool
    layout: str                      # "voronoi" | "smooth" | "fields"
    base: tuple[str, ...]            # land-cover classes of the base layout
    overlays: dict = field(default_factory=dict)  # kind -> class: river, road, pond, building, tree
    epsg: int = 32633
    nodata: str | None = None        # None | "edge" | "blob"
    haze: float = 0.0                # haze reflectance at 490 nm (max)
    patch_m: float = 0.0             # typical cell / patch / parcel size, m (0: from the pixel size)


def _o(**kw) -> dict:
    return kw


#: The bank. Object sizes are in metres, so the same kinds of object cover a few pixels at 5 m and
#: hundreds at 0.1 m; classes below 10 m are land cover and lines only.
SCENES = (
    SceneSpec("a01_garden_010", 0.1, (512, 512), "RGB", "uint8", False, "smooth", ("grass", "soil"),
              _o(building="building", tree="tree", road="road"), 32633, patch_m=12),
    SceneSpec("a02_suburb_015", 0.15, (512, 640), "BGR", "uint8", True, "smooth", ("grass", "soil"),
              _o(pond="water", building="building", tree="tree", road="road"), 32632, patch_m=15),
    SceneSpec("a03_village_025", 0.25, (512, 512), "RGBN", "uint16", True, "fields", ("grass", "crop"),
              _o(building="building", tree="tree", road="road"), 32631, patch_m=40),
    SceneSpec("a04_estate_030", 0.3, (512, 512), "BGRN", "uint16", False, "smooth", ("grass", "soil", "pavement"),
              _o(building="building", tree="tree", road="road"), 32634, patch_m=25),
    SceneSpec("a05_edge_050", 0.5, (640, 768), "RGBN", "float32", True, "voronoi", ("grass", "soil", "forest"),
              _o(pond="water", building="building", tree="tree", road="road"), 32633, nodata="blob", patch_m=60),
    SceneSpec("a06_yard_020", 0.2, (384, 384), "RGB", "uint8", False, "smooth", ("grass",),
              _o(building="building", tree="tree"), 32630, patch_m=20),
    SceneSpec("a07_resort_040", 0.4, (512, 512), "WV8", "uint16", True, "smooth", ("grass", "soil", "sand"),
              _o(pond="water", building="building", tree="tree", road="road", pavement="pavement"), 32617,
              haze=0.02, patch_m=40),
    SceneSpec("a08_villa_010", 0.1, (768, 768), "RGBN", "float32", False, "smooth", ("grass", "pavement"),
              _o(pond="water", building="building", tree="tree"), 32633, patch_m=10),
    SceneSpec("m01_farm_100", 1.0, (512, 512), "RGBN", "uint16", False, "fields", ("crop", "soil", "grass"),
              _o(road="road", tree="tree", building="building"), 32633, patch_m=120),
    SceneSpec("m02_periurban_200", 2.0, (512, 512), "BGRN", "float32", True, "voronoi",
              ("forest", "grass", "crop", "soil", "urban"), _o(river="water", road="road"), 32632, patch_m=150),
    SceneSpec("m03_marsh_300", 3.0, (448, 448), "RGBN", "uint8", True, "smooth",
              ("forest", "shrub", "grass", "wetland", "water"), _o(), 32618, haze=0.04, patch_m=200),
    SceneSpec("m04_valley_500", 5.0, (512, 512), "WV8", "float32", False, "fields",
              ("crop", "soil", "grass", "forest"), _o(river="river", road="road", building="building"), 32611,
              patch_m=300),
    SceneSpec("m05_town_150", 1.5, (512, 512), "RGB", "uint8", False, "fields", ("grass", "soil", "crop"),
              _o(road="road", building="building", tree="tree"), 32633, patch_m=90),
    SceneSpec("m06_orchard_075", 0.75, (512, 512), "BGRN", "uint8", True, "fields", ("grass", "soil"),
              _o(tree="tree", building="building", road="road"), 32630, patch_m=80),
    SceneSpec("m07_canyon_400", 4.0, (512, 512), "RGBN", "uint16", False, "smooth",
              ("forest", "shrub", "rock", "sand"), _o(river="water"), 32612, nodata="edge", patch_m=250),
    SceneSpec("s01_plain_s2_10m", 10.0, (512, 512), "S2-10", "uint16", True, "fields",
              ("crop", "soil", "grass", "forest", "urban"), _o(river="water", road="road"), 32633, patch_m=500),
    SceneSpec("s02_mosaic_s2_10m", 10.0, (512, 640), "S2-12", "uint16", False, "voronoi",
              ("forest", "conifer", "grass", "crop", "soil", "shrub", "wetland", "water", "urban", "sand"),
              _o(road="road"), 32634, patch_m=400),
    SceneSpec("s03_alpine_s2_20m", 20.0, (512, 512), "S2-13", "float32", True, "smooth",
              ("forest", "conifer", "grass", "crop", "soil", "shrub", "wetland", "water", "urban", "rock", "snow",
               "sand"), _o(), 32632, nodata="edge", haze=0.03, patch_m=1200),
    SceneSpec("s04_desert_l8_30m", 30.0, (512, 512), "BGRN", "uint16", True, "smooth",
              ("forest", "shrub", "grass", "rock", "water", "urban", "crop"), _o(), 32612, nodata="edge",
              patch_m=1500),
    SceneSpec("s05_hills_l8_30m", 30.0, (384, 384), "L7", "uint16", False, "voronoi",
              ("forest", "shrub", "grass", "crop", "soil", "water"), _o(), 32613, patch_m=1200),
    SceneSpec("s06_latlon_10m", 10.0, (512, 512), "RGBN", "uint16", False, "fields",
              ("crop", "soil", "grass", "forest"), _o(road="road"), 4326, patch_m=450),
    SceneSpec("s07_small_s2_20m", 20.0, (256, 256), "S2-10", "float32", False, "smooth",
              ("forest", "grass", "soil", "water"), _o(), 32631, patch_m=800),
    SceneSpec("s08_tci_10m", 10.0, (512, 512), "BGR", "uint8", True, "voronoi",
              ("forest", "grass", "crop", "soil", "urban"), _o(), 32633, haze=0.05, patch_m=500),
    SceneSpec("s09_lake_30m", 30.0, (512, 512), "RGBN", "float32", True, "smooth", ("water", "forest", "grass"),
              _o(), 32615, nodata="blob", patch_m=2500),
    SceneSpec("s10_delta_15m", 15.0, (512, 512), "L6", "uint16", True, "voronoi",
              ("crop", "soil", "grass", "wetland", "urban", "forest", "sand"), _o(river="river", road="road"),
              32636, patch_m=600),
    SceneSpec("s11_fields_s2_10m", 10.0, (512, 768), "S2-12", "float32", True, "fields",
              ("crop", "soil", "grass", "forest", "shrub", "urban"), _o(river="water", road="road"), 32630,
              patch_m=450),
)


#: A second set of scenes whose specs are drawn at random (:func:`drawn_specs`) rather than written
#: by hand: scenes nobody shaped, with their own half-and-half split (:data:`DRAWN_SPLIT_SEED`), so
#: the 26 above keep their bytes and halves. Added 2026-12-07, after every choice made so far.
DRAW_SEED = 2612
DRAWN_SPLIT_SEED = 2026
N_DRAWN = 12
#: What a drawn scene can be; object overlays only below 3 m, as in the written scenes.
PIXEL_SIZES_M = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0)
SHAPES_PX = ((384, 384), (448, 448), (512, 512), (512, 640), (640, 512))
COVERS = ("forest", "conifer", "grass", "crop", "soil", "sand", "shrub", "wetland", "water", "urban", "rock")


def drawn_specs(n: int = N_DRAWN, seed: int = DRAW_SEED) -> tuple[SceneSpec, ...]:
    """``n`` scene specs drawn from the same ranges as the written ones, a third each below 1 m
    (1-3 base covers and objects), 1-5 m (2-5 covers) and 10-30 m (3-10 covers, Landsat and
    Sentinel-2 band orders too): pixel size, sensor, dtype, band names, layout, covers, rivers,
    roads, ponds, buildings and trees (below 3 m), haze and nodata. Named
    ``<a|m|s>NN_drawn_<size>`` (numbers after the written scenes')."""
    rng = np.random.default_rng(seed)
    specs, counts = [], {"a": 8, "m": 7, "s": 11}
    for group in ("a", "m", "s") * (n // 3):
        sizes = [p for p in PIXEL_SIZES_M if (p < 1 if group == "a" else (1 <= p < 10 if group == "m" else p >= 10))]
        px = float(rng.choice(sizes))
        counts[group] += 1
        overlays: dict[str, str] = {}
        if group == "a":
            sensor = str(rng.choice(["RGB", "BGR", "RGBN", "BGRN", "WV8"]))
            base = rng.choice(["grass", "soil", "pavement", "sand", "crop"], rng.integers(1, 4), replace=False)
            for kind, p in (("building", 0.8), ("tree", 0.8), ("road", 0.6), ("pond", 0.3), ("pavement", 0.2)):
                if rng.random() < p:
                    overlays[kind] = "water" if kind == "pond" else kind
        else:
            sensors = ["RGB", "BGR", "RGBN", "BGRN", "WV8"] + (["L6", "L7", "S2-10", "S2-12", "S2-13"] if group == "s" else [])
            sensor = str(rng.choice(sensors))
            low, high = (2, 6) if group == "m" else (3, 11)
            base = rng.choice(COVERS, rng.integers(low, high), replace=False)
            for kind, p in (("river", 0.3), ("road", 0.5), ("building", 0.4), ("tree", 0.4)):
                if rng.random() < p and (kind in ("river", "road") or px < 3):
                    overlays[kind] = "water" if kind == "river" else kind
        base = tuple(str(b) for b in base)
        for kind in ("tree", "road"):  # at least three classes
            if len(set(base) | set(overlays.values())) < 3:
                overlays[kind] = kind
        tag = f"{round(px * 100):03d}" if px < 10 else f"{px:g}m"
        specs.append(SceneSpec(
            f"{group}{counts[group]:02d}_drawn_{tag}", px, SHAPES_PX[rng.integers(len(SHAPES_PX))], sensor,
            str(rng.choice(["uint8", "uint16", "float32"])), bool(rng.random() < 0.5),
            str(rng.choice(["voronoi", "smooth", "fields"])), base, overlays,
            int(rng.choice([4326, *range(32610, 32640)])) if group == "s" else int(rng.integers(32610, 32640)),
            nodata=(None, None, None, "edge", "blob")[rng.integers(5)],
            haze=float(rng.uniform(0.01, 0.05)) if rng.random() < 0.3 else 0.0,
            patch_m=float(px * rng.uniform(40, 130))))
    return tuple(specs)


DRAWN = drawn_specs()


# ----------------------------------------------------------------------------------------------
# random fields and shapes


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian random field of unit std, correlated over about ``scale_px`` pixels.

    Coarse scales are drawn on a grid of scale/3 cells and zoomed (linear), so any scale costs
    about the same (~15 ms for 512 x 512).
    """
    h, w = shape
    step = max(1.0, scale_px / 3.0)
    small = (int(math.ceil(h / step)) + 4, int(math.ceil(w / step)) + 4)
    base = ndi.gaussian_filter(rng.standard_normal(small), 1.5 if step > 1 else scale_px / 2.0, mode="wrap")
    out = ndi.zoom(base, step, order=1, grid_mode=True, mode="grid-wrap")[:h, :w] if step > 1 else base[:h, :w]
    out = out - out.mean()
    return out / (out.std() + 1e-12)


def _line_mask(shape, points: np.ndarray, width_px: float) -> np.ndarray:
    """Pixels within width/2 of a polyline (points as (row, col), densified to 0.5 px)."""
    h, w = shape
    seg = []
    for a, b in zip(points[:-1], points[1:]):
        n = int(np.ceil(np.hypot(*(b - a)) * 2)) + 1
        seg.append(np.linspace(a, b, n))
    pts = np.rint(np.concatenate(seg)).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)]
    centre = np.zeros(shape, bool)
    centre[pts[:, 0], pts[:, 1]] = True
    if width_px <= 1.0:
        return centre
    return ndi.distance_transform_edt(~centre) <= width_px / 2.0


def _meander(rng, shape, step_px: float, wiggle: float, revert: float = 0.0) -> np.ndarray:
    """A path crossing the scene from one edge, its heading a smooth random walk (``revert``
    pulls it back to the first heading each step, so a meandering river does not coil up)."""
    h, w = shape
    side = rng.integers(4)
    if side == 0:
        p, heading = np.array([0.0, rng.uniform(0.2, 0.8) * w]), math.pi / 2
    elif side == 1:
        p, heading = np.array([rng.uniform(0.2, 0.8) * h, 0.0]), 0.0
    elif side == 2:
        p, heading = np.array([h - 1.0, rng.uniform(0.2, 0.8) * w]), -math.pi / 2
    else:
        p, heading = np.array([rng.uniform(0.2, 0.8) * h, w - 1.0]), math.pi
    heading += rng.uniform(-0.4, 0.4)
    course = heading
    pts, turn = [p.copy()], 0.0
    for _ in range(int(4 * (h + w) / step_px)):
        turn = 0.8 * turn + rng.normal(0, wiggle)
        heading += turn - revert * (heading - course)
        p = p + step_px * np.array([math.sin(heading), math.cos(heading)])
        pts.append(p.copy())
        if not (-step_px <= p[0] <= h + step_px and -step_px <= p[1] <= w + step_px):
            break
    return np.array(pts)


# ----------------------------------------------------------------------------------------------
# layouts: a region id per pixel and each region's class


def _weights(rng, n: int) -> np.ndarray:
    """Very unequal class shares (sorted large to small, a floor so every class appears)."""
    share = np.sort(rng.dirichlet(np.full(n, 0.7)))[::-1]
    share = np.maximum(share, 0.02)
    return share / share.sum()


def _voronoi(rng, shape, cell_px: float, n_classes: int):
    h, w = shape
    n = max(n_classes * 3, int(h * w / cell_px ** 2))
    seeds = np.column_stack([rng.uniform(0, h, n), rng.uniform(0, w, n)])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    amp = cell_px * 0.25
    rows += amp * smooth_field(rng, shape, cell_px / 2)
    cols += amp * smooth_field(rng, shape, cell_px / 2)
    _, region = cKDTree(seeds).query(np.column_stack([rows.ravel(), cols.ravel()]))
    region = region.reshape(shape).astype(np.int32)
    classes = rng.choice(n_classes, size=n, p=_weights(rng, n_classes))
    classes[rng.permutation(n)[:n_classes]] = np.arange(n_classes)  # every class has a cell
    return region, classes


def _smooth(rng, shape, patch_px: float, n_classes: int):
    """Argmax of one smooth field per class, biased by its share: natural blobs with rough edges."""
    bias = np.log(_weights(rng, n_classes)) * 0.9
    rough = np.stack([smooth_field(rng, shape, patch_px / 6) for _ in range(2)])
    mix = rng.normal(0, 0.25, (n_classes, 2))
    fields = np.stack([smooth_field(rng, shape, patch_px) + np.tensordot(mix[c], rough, 1)
                       for c in range(n_classes)])
    for _ in range(40):  # a class that lost everywhere is raised until it holds 0.5 % of the scene
        label = np.argmax(fields + bias[:, None, None], axis=0)
        small = np.bincount(label.ravel(), minlength=n_classes) < 0.005 * label.size
        if not small.any():
            break
        bias[small] += 0.1
    # Each connected patch is its own region (its own spectrum variant).
    region = np.zeros(shape, np.int32)
    classes, offset = [], 0
    for c in range(n_classes):
        comp, n = ndi.label(label == c)
        region[comp > 0] = comp[comp > 0] + offset - 1
        classes += [c] * n
        offset += n
    return region, np.array(classes, dtype=np.int64)


def _fields(rng, shape, parcel_px: float, n_classes: int):
    """Parcels in rotated rows of random widths; returns (region, classes, parcel edge mask)."""
    h, w = shape
    theta = rng.uniform(-0.6, 0.6)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    warp = 0.03 * parcel_px * smooth_field(rng, shape, parcel_px)
    v = rows * math.cos(theta) + cols * math.sin(theta) + warp
    u = -rows * math.sin(theta) + cols * math.cos(theta) + warp
    v0, v1, u0, u1 = v.min(), v.max(), u.min(), u.max()
    row_edges = v0 + np.cumsum(rng.uniform(0.5, 1.5, int((v1 - v0) / parcel_px * 1.5) + 3) * parcel_px) - parcel_px
    row = np.searchsorted(row_edges, v)
    region = np.zeros(shape, np.int32)
    offset = 0
    for r in np.unique(row):
        sel = row == r
        col_edges = u0 + np.cumsum(rng.uniform(0.4, 2.5, int((u1 - u0) / parcel_px * 2) + 3) * parcel_px) - parcel_px
        region[sel] = np.searchsorted(col_edges, u[sel]) + offset
        offset += len(col_edges) + 1
    _, region = np.unique(region, return_inverse=True)
    region = region.reshape(shape).astype(np.int32)
    n = int(region.max()) + 1
    classes = rng.choice(n_classes, size=n, p=_weights(rng, n_classes))
    classes[rng.permutation(n)[:n_classes]] = np.arange(n_classes)
    edges = np.zeros(shape, bool)
    edges[:-1] |= region[:-1] != region[1:]
    edges[:, :-1] |= region[:, :-1] != region[:, 1:]
    return region, classes, edges, theta


# ----------------------------------------------------------------------------------------------
# one scene


def _spectrum(material: str, bands: tuple[str, ...]) -> np.ndarray:
    return np.array([0.004 if b == "cirrus" else np.interp(WAVELENGTH_NM[b], _W, MATERIALS[material])
                     for b in bands])


def make_scene(spec: SceneSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str], float | None]:
    """(image (bands, H, W) in the spec's dtype, truth (H, W) uint8, class names, nodata value)."""
    shape = spec.shape_px
    h, w = shape
    px = spec.pixel_m
    bands = SENSORS[spec.sensor]
    patch_px = max(8.0, (spec.patch_m or 50 * px) / px)
    nb = len(spec.base)

    # Base layout: region ids and each region's base class index.
    theta = rng.uniform(-0.6, 0.6)
    edges = None
    if spec.layout == "voronoi":
        region, rclass = _voronoi(rng, shape, patch_px, nb)
    elif spec.layout == "smooth":
        region, rclass = _smooth(rng, shape, patch_px, nb)
    else:
        region, rclass, edges, theta = _fields(rng, shape, patch_px, nb)
    names = list(spec.base)
    cls = rclass[region]                                   # class index into `names`
    n_regions = int(region.max()) + 1
    shade = np.ones(shape)                                 # crown shading (multiplicative)
    objects = np.zeros(shape, bool)                        # what casts a shadow

    def class_index(name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    def new_region(where, name: str) -> None:
        """A new region of class ``name`` over ``where`` (a mask or an index tuple)."""
        nonlocal n_regions
        region[where] = n_regions
        cls[where] = class_index(name)
        n_regions += 1

    ov = spec.overlays
    if "pond" in ov:
        blob = smooth_field(rng, shape, patch_px * 0.6) > 2.0
        lab, n = ndi.label(blob)
        for i in range(1, min(n, 4) + 1):
            new_region(lab == i, ov["pond"])
    if "river" in ov:
        width = max(1.5, rng.uniform(20, 60) / px)
        new_region(_line_mask(shape, _meander(rng, shape, 4.0, 0.05, revert=0.08), width), ov["river"])
    if "pavement" in ov:
        c = rng.uniform([0.2 * h, 0.2 * w], [0.8 * h, 0.8 * w])
        new_region(draw_polygon(*_rect(c, rng.uniform(15, 30) / px, rng.uniform(10, 20) / px, theta), shape),
                   ov["pavement"])
    if "road" in ov:
        width = max(1.0, rng.uniform(5, 10) / px)
        m = np.zeros(shape, bool)
        if edges is not None:                              # farm tracks along some parcel edges
            grow = int(width / 2)  # (binary_dilation with 0 iterations would grow until nothing changes)
            lines = ndi.binary_dilation(edges, iterations=grow) if grow >= 1 else edges
            keep = smooth_field(rng, shape, patch_px * 2) > 0.3
            m |= lines & keep
        for _ in range(rng.integers(1, 3)):
            m |= _line_mask(shape, _meander(rng, shape, 8.0, 0.01), width)
        new_region(m, ov["road"])
    if "tree" in ov:
        n_trees = int(np.clip(h * w * px * px / rng.uniform(400, 1500), 5, 600))
        centres = _clustered_points(rng, shape, n_trees, patch_px)
        for (r, c) in centres:
            rad = max(1.0, math.exp(rng.uniform(math.log(1.5), math.log(7.0))) / px)
            rr, cc = disk((r, c), rad, shape=shape)
            if rr.size == 0:
                continue
            new_region((rr, cc), ov["tree"])
            d2 = ((rr - r) ** 2 + (cc - c) ** 2) / rad ** 2
            shade[rr, cc] = 1.15 - 0.45 * d2
            objects[rr, cc] = True
    if "building" in ov:
        n_buildings = int(np.clip(h * w * px * px / rng.uniform(2500, 8000), 3, 150))
        free = ~np.isin(cls, [names.index(ov[k]) for k in ("road", "river", "pond") if k in ov and ov[k] in names])
        placed = 0
        for _ in range(n_buildings * 4):
            if placed >= n_buildings:
                break
            c = rng.uniform([0, 0], [h, w])
            if not free[int(c[0]), int(c[1])]:
                continue
            size = math.exp(rng.uniform(math.log(8), math.log(40))) / px
            rr, cc = draw_polygon(*_rect(c, size, size * rng.uniform(0.4, 1.0), theta + rng.normal(0, 0.05)),
                                  shape)
            if rr.size == 0 or not free[rr, cc].mean() > 0.9:
                continue
            new_region((rr, cc), ov["building"])
            objects[rr, cc] = True
            shade[rr, cc] = 1.0
            free[rr, cc] = False
            placed += 1

    # Compact class ids 1..C in first-seen order of `names`, dropping classes with no pixel left.
    present = np.bincount(cls.ravel(), minlength=len(names)) > 0
    new_id = np.cumsum(present) * present
    truth = new_id[cls].astype(np.uint8)
    class_names = [n for n, p in zip(names, present) if p]

    # Spectra: each region draws one of its class's materials, a brightness and (vegetation) a
    # share of soil showing through.
    region_class = np.zeros(n_regions, np.int64)
    region_class[region.ravel()] = cls.ravel()
    spectra = np.zeros((n_regions, len(bands)))
    soil = _spectrum("soil", bands)
    for i in range(n_regions):
        cname = names[region_class[i]]
        mats, _ = CLASSES[cname]
        s = _spectrum(mats[rng.integers(len(mats))], bands) * math.exp(rng.normal(0, 0.07))
        if cname in VEGETATION:
            f = rng.uniform(0, 0.3)
            s = (1 - f) * s + f * soil
        spectra[i] = s
    img = spectra[region]                                   # (H, W, B)

    # Texture: brightness at three scales (per class amplitudes) and a little per-band texture.
    scales = (1.5, 6.0, 24.0)
    fine = [smooth_field(rng, shape, s) for s in scales]
    amps = np.array([CLASSES[n][1] for n in names])         # (n classes, 3)
    tex = sum(amps[cls, k] * fine[k] for k in range(3))
    img *= np.clip(1 + tex, 0.3, None)[..., None] * shade[..., None]
    band_tex = np.stack([smooth_field(rng, shape, 3.0) for _ in range(2)], axis=-1)
    img *= 1 + band_tex @ rng.normal(0, 0.015, (2, len(bands)))

    # Cast shadows at fine pixel sizes: objects shifted away from the sun darken what they cover.
    if objects.any() and px <= 2.0:
        length = int(round(rng.uniform(3, 8) / px))
        dr, dc = int(round(length * 0.6)), int(round(length * 0.8))
        shadow = np.zeros(shape, bool)
        for k in range(1, 5):
            shadow |= ndi.shift(objects.astype(np.uint8), (dr * k // 4, dc * k // 4), order=0).astype(bool)
        shadow &= ~objects
        img[shadow] *= 0.45

    # Sensor blur, illumination gradient, haze, noise.
    img = ndi.gaussian_filter(img, sigma=(0.6, 0.6, 0))
    phi = rng.uniform(0, 2 * math.pi)
    rows, cols = np.mgrid[0:h, 0:w]
    ramp = ((rows - h / 2) * math.sin(phi) + (cols - w / 2) * math.cos(phi)) / max(h, w)
    img *= (1 + rng.uniform(0.05, 0.2) * ramp)[..., None]
    if spec.haze:
        haze = spec.haze * np.clip((smooth_field(rng, shape, max(h, w) / 3) + 1.5) / 3, 0, 1)
        wl = np.array([WAVELENGTH_NM[b] for b in bands], float)
        img += haze[..., None] * (490.0 / wl) ** 2
    img += rng.normal(0, 0.004, img.shape)
    img = np.clip(img, 0.0, 1.2).transpose(2, 0, 1)

    # Nodata areas: a swath edge (straight, across one corner) or a masked blob.
    invalid = np.zeros(shape, bool)
    if spec.nodata == "edge":
        invalid = (rows + cols * rng.uniform(0.5, 1.5)) < rng.uniform(0.15, 0.3) * (h + w)
    elif spec.nodata == "blob":
        invalid = smooth_field(rng, shape, max(h, w) / 6) > 1.6
    truth[invalid] = 0

    data, nodata = _encode(img, spec.dtype, invalid, nan=spec.name.startswith("s09"))
    return data, truth, class_names, nodata


def _rect(centre, length, width, angle):
    """Rows and cols of a rotated rectangle's corners."""
    ca, sa = math.cos(angle), math.sin(angle)
    dx = np.array([-1, 1, 1, -1]) * length / 2
    dy = np.array([-1, -1, 1, 1]) * width / 2
    return centre[0] + dx * sa + dy * ca, centre[1] + dx * ca - dy * sa


def _clustered_points(rng, shape, n: int, spread_px: float) -> np.ndarray:
    """Points in clusters (groves, rows along lanes) plus scattered ones."""
    h, w = shape
    n_clusters = max(1, n // 25)
    centres = rng.uniform([0, 0], [h, w], (n_clusters, 2))
    pick = rng.integers(n_clusters, size=n)
    pts = centres[pick] + rng.normal(0, spread_px * 0.3, (n, 2))
    scattered = rng.random(n) < 0.3
    pts[scattered] = rng.uniform([0, 0], [h, w], (int(scattered.sum()), 2))
    return np.clip(pts, 0, [h - 1, w - 1])


def _encode(img: np.ndarray, dtype: str, invalid: np.ndarray, nan: bool = False):
    """Reflectance -> stored values: uint8 gamma stretch, uint16 x 10000, float32 as is."""
    if dtype == "uint8":
        data = np.clip(np.rint(255 * np.clip(img / 0.5, 0, 1) ** (1 / 1.4)), 1, 255).astype(np.uint8)
        nodata = 0.0
    elif dtype == "uint16":
        data = np.clip(np.rint(img * 10000), 1, 65535).astype(np.uint16)
        nodata = 0.0
    else:
        data = img.astype(np.float32)
        nodata = float("nan") if nan else -9999.0
    if invalid.any():
        data[:, invalid] = np.nan if nan else nodata
        return data, nodata
    return data, (nodata if dtype != "float32" or nan else None)


# ----------------------------------------------------------------------------------------------
# files


def _grid(spec: SceneSpec, rng: np.random.Generator):
    """(CRS, transform, pixel size in CRS units) at a plausible place for the zone."""
    h, w = spec.shape_px
    if spec.epsg == 4326:
        deg = spec.pixel_m / M_PER_DEG
        lon, lat = rng.uniform(5, 15), rng.uniform(44, 50)
        return CRS.from_epsg(4326), from_origin(lon, lat, deg, deg)
    x0 = round(rng.uniform(300_000, 600_000), -1)
    y0 = round(rng.uniform(4_000_000, 5_500_000), -1)
    return CRS.from_epsg(spec.epsg), from_origin(x0, y0, spec.pixel_m, spec.pixel_m)


def halves(names: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Scene name -> "selection" | "report", drawn once with ``seed`` (half and half)."""
    order = np.random.default_rng(seed).permutation(len(names))
    first = set(order[: len(names) // 2].tolist())
    return {n: ("selection" if i in first else "report") for i, n in enumerate(names)}


def bank_halves() -> dict[str, str]:
    """The half of every scene of the bank: the written scenes split by :data:`SPLIT_SEED`, the
    drawn ones by :data:`DRAWN_SPLIT_SEED`, each half and half."""
    return {**halves([s.name for s in SCENES]), **halves([s.name for s in DRAWN], DRAWN_SPLIT_SEED)}


def write_bank(out: Path, seed: int = SEED, names=None) -> list[dict]:
    """Write every scene (or those in ``names``; each the same as in the whole bank), its truth
    and bank.json into ``out``; returns bank.json's scene records."""
    out.mkdir(parents=True, exist_ok=True)
    half = bank_halves()
    records = []
    for index, spec in enumerate(SCENES + DRAWN):
        if names is not None and spec.name not in names:
            continue
        rng = np.random.default_rng([seed, index])
        crs, transform = _grid(spec, rng)
        data, truth, class_names, nodata = make_scene(spec, rng)
        bands = SENSORS[spec.sensor]
        image, gt = out / f"{spec.name}.tif", out / f"{spec.name}.gt.tif"
        profile = dict(driver="GTiff", width=spec.shape_px[1], height=spec.shape_px[0], crs=crs,
                       transform=transform, compress="deflate", tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(image, "w", count=len(bands), dtype=spec.dtype, nodata=nodata,
                           interleave="pixel" if len(bands) <= 4 else "band", **profile) as dst:
            dst.write(data)
            if spec.named:
                for i, b in enumerate(bands, start=1):
                    dst.set_band_description(i, b)
        with rasterio.open(gt, "w", count=1, dtype="uint8", nodata=0, **profile) as dst:
            dst.write(truth, 1)
            dst.update_tags(CLASS_NAMES=",".join(["nodata"] + class_names))
        records.append({
            "name": spec.name, "image": image.name, "truth": gt.name, "true_classes": len(class_names),
            "class_names": class_names, "pixel_m": spec.pixel_m, "band_count": len(bands),
            "band_order": list(bands), "sensor": spec.sensor, "dtype": spec.dtype, "band_names_set": spec.named,
            "nodata": None if nodata is None else ("nan" if math.isnan(nodata) else nodata),
            "crs": f"EPSG:{spec.epsg}", "width": spec.shape_px[1], "height": spec.shape_px[0],
            "layout": spec.layout, "half": half[spec.name],
        })
    (out / "bank.json").write_text(json.dumps({"seed": seed, "split_seed": SPLIT_SEED, "scenes": records},
                                              indent=1) + "\n")
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder [{DEFAULT_OUT}]")
    parser.add_argument("--seed", type=int, default=SEED, help=f"scene seed [{SEED}]; the split does not change")
    parser.add_argument("--scenes", default=None, help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    records = write_bank(args.out, args.seed, args.scenes.split(",") if args.scenes else None)
    for r in records:
        print(f"{r['name']:22s} {r['half']:9s} C={r['true_classes']:<2d} {r['pixel_m']:5g} m "
              f"{r['sensor']:6s} {r['dtype']:7s} {'named' if r['band_names_set'] else '-'}")
    print(f"{len(records)} scenes in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
