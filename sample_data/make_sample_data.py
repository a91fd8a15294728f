#!/usr/bin/env python
"""Generate the synthetic sample scenes shipped in ``sample_data/``.

Deterministic: every random draw comes from ``numpy.random.default_rng`` with a
fixed seed, and GDAL writes no timestamps, so running the script twice gives
byte-identical files.

Usage::

    python sample_data/make_sample_data.py [--out DIR]

Outputs (default: the directory this script lives in):

* ``scene_rgbn_u16.tif``     4-band (red, green, blue, nir) uint16 reflectance x 10000,
                             1280 x 1280 px, 0.5 m, EPSG:32633, nodata=0
* ``scene_rgbn_u16.gt.tif``  its ground truth, uint8 classes, nodata=255
* ``scene_rgb_u8.tif``       3-band RGB uint8, 700 x 600 px, 0.3 m, EPSG:3857
* ``scene_rgb_u8.gt.tif``    its ground truth, uint8 classes, nodata=255

Only numpy, scipy, rasterio and skimage.draw are used.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

SEED = 20240611

# --------------------------------------------------------------------------
# Class table (index order == pixel value) and preview colours.
# --------------------------------------------------------------------------
CLASS_NAMES = [
    "ground",      # 0: bare / other ground: meadow, lawn, gravel yard, field margins
    "building",    # 1
    "road",        # 2: asphalt roads, pavements
    "tree",        # 3: tree crowns
    "water",       # 4: lakes, ponds, pools
    "field_crop",  # 5: agricultural parcel with a growing crop
    "field_soil",  # 6: agricultural parcel, bare/ploughed soil
]
GROUND, BUILDING, ROAD, TREE, WATER, CROP, SOIL = range(7)
GT_NODATA = 255
CLASS_COLORS = {
    GROUND: (205, 195, 140, 255),
    BUILDING: (220, 40, 40, 255),
    ROAD: (110, 110, 110, 255),
    TREE: (20, 120, 40, 255),
    WATER: (40, 90, 220, 255),
    CROP: (150, 220, 70, 255),
    SOIL: (160, 105, 55, 255),
    GT_NODATA: (0, 0, 0, 0),
}

# Reflectance x 10000, order (R, G, B, NIR).
S = {
    "meadow": (620, 880, 470, 3100),
    "dry": (1350, 1200, 950, 2300),
    "gravel": (1350, 1300, 1200, 1850),
    "asphalt": (1020, 1060, 1100, 1250),
    "pavement": (1750, 1750, 1700, 1950),
    "marking": (3800, 3800, 3700, 3900),
    "tree": (330, 580, 300, 3900),
    "conifer": (240, 430, 260, 2700),
    "water_deep": (230, 360, 430, 130),
    "water_shallow": (380, 560, 520, 330),
    "pool": (500, 1700, 2300, 350),
}
ROOFS = [
    (1950, 930, 720, 2300),    # red clay tiles
    (1700, 860, 650, 2200),    # darker clay tiles
    (1650, 1650, 1720, 2000),  # grey concrete tiles
    (650, 700, 790, 900),      # dark slate
    (3500, 3500, 3400, 3700),  # white flat roof
    (1300, 1020, 820, 1650),   # brown
]
METAL_ROOF = (2400, 2500, 2600, 2650)
CROPS = [
    (450, 820, 380, 4300),     # green cereal
    (560, 930, 420, 3700),     # maize / young crop
    (1350, 1250, 780, 3100),   # ripening grain (yellowish, still high NIR)
    (380, 700, 330, 4600),     # dense clover
]
SOILS = [
    (1500, 1150, 860, 2000),   # dry brown soil
    (950, 780, 620, 1450),     # moist dark soil
    (1750, 1420, 1080, 2250),  # light sandy soil
]

# Sun from the south-east: shadows fall towards the north-west (up-left).
SUN_DIR_XY = np.array([1.0, 1.0]) / math.sqrt(2.0)


def spec(v):
    return np.asarray(v, dtype=np.float32)


def smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise, normalised to zero mean / unit std."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    n -= n.mean()
    n /= n.std() + 1e-12
    return n


class Scene:
    """A reflectance canvas (4, H, W) + class map + height map for shadows."""

    def __init__(self, height, width, rng):
        self.h, self.w = height, width
        self.rng = rng
        self.img = np.zeros((4, height, width), np.float32)
        self.gt = np.zeros((height, width), np.uint8)
        self.hgt = np.zeros((height, width), np.float32)   # object height in shadow-px
        self.occupied = np.zeros((height, width), bool)     # blocks building/tree placement
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # ---- painting primitives -------------------------------------------
    def paint(self, mask, s, cls, tex=None, sl=None):
        """Paint spectrum ``s`` (times texture ``tex``) where ``mask``; sl = (rows, cols) window."""
        if sl is None:
            sl = (slice(0, self.h), slice(0, self.w))
        s = spec(s)
        view = self.img[:, sl[0], sl[1]]
        if tex is None:
            view[:, mask] = s[:, None]
        else:
            t = tex if np.ndim(tex) == 0 else tex[mask]
            view[:, mask] = s[:, None] * t
        if cls is not None:
            self.gt[sl[0], sl[1]][mask] = cls

    def window(self, cx, cy, rad):
        r0 = max(int(math.floor(cy - rad)) - 1, 0)
        r1 = min(int(math.ceil(cy + rad)) + 2, self.h)
        c0 = max(int(math.floor(cx - rad)) - 1, 0)
        c1 = min(int(math.ceil(cx + rad)) + 2, self.w)
        if r0 >= r1 or c0 >= c1:
            return None
        sl = (slice(r0, r1), slice(c0, c1))
        return sl, self.xx[sl], self.yy[sl]

    # ---- background ----------------------------------------------------
    def background(self):
        rng = self.rng
        low = smooth_noise(rng, (self.h, self.w), 45)
        mid = smooth_noise(rng, (self.h, self.w), 6)
        fine = smooth_noise(rng, (self.h, self.w), 1.2)
        # Mostly meadow with dry patches where the low-frequency noise is high.
        wdry = np.clip((low - 0.6) * 0.8, 0, 0.75)[None]
        base = (1 - wdry) * spec(S["meadow"])[:, None, None] + wdry * spec(S["dry"])[:, None, None]
        self.img[:] = base * (1 + 0.06 * mid + 0.015 * fine)[None]
        self.gt[:] = GROUND

    def polygon_mask(self, xs, ys):
        rr, cc = draw_polygon(np.asarray(ys, float), np.asarray(xs, float), (self.h, self.w))
        m = np.zeros((self.h, self.w), bool)
        m[rr, cc] = True
        return m

    def ground_patch(self, xs, ys, s=S["gravel"]):
        m = self.polygon_mask(xs, ys)
        tex = 1 + 0.04 * smooth_noise(self.rng, (self.h, self.w), 2)
        self.paint(m, s, GROUND, tex)
        return m

    # ---- fields --------------------------------------------------------
    def fields(self, region, lines, class_of_key, margin=2.0):
        """Split ``region`` into parcels by straight ``lines`` ((x0,y0),(x1,y1)).

        Parcel key = tuple of side-of-line booleans; ``class_of_key(key, rng)``
        returns CROP or SOIL. Pixels within ``margin`` px of a line become a
        grass strip (GROUND).
        """
        rng = self.rng
        sides, near = [], np.zeros((self.h, self.w), bool)
        for (x0, y0), (x1, y1) in lines:
            dx, dy = x1 - x0, y1 - y0
            n = math.hypot(dx, dy)
            d = ((self.xx - x0) * dy - (self.yy - y0) * dx) / n  # signed distance
            sides.append(d > 0)
            near |= np.abs(d) < margin
        key_img = np.zeros((self.h, self.w), np.int32)
        for i, s_ in enumerate(sides):
            key_img |= s_.astype(np.int32) << i
        low = smooth_noise(rng, (self.h, self.w), 25)
        fine = smooth_noise(rng, (self.h, self.w), 1.0)
        parcels = {}
        for k in np.unique(key_img[region]):
            m = region & (key_img == k) & ~near
            if not m.any():
                continue
            key = tuple(bool((k >> i) & 1) for i in range(len(lines)))
            cls = class_of_key(key, rng)
            pal = CROPS if cls == CROP else SOILS
            s = spec(pal[rng.integers(len(pal))]) * rng.uniform(0.93, 1.07)
            ang = rng.uniform(0, math.pi)
            period = rng.uniform(5.0, 9.0)
            rows = np.sin(2 * math.pi * (self.xx * math.cos(ang) + self.yy * math.sin(ang)) / period)
            amp = 0.035 if cls == CROP else 0.05
            tex = 1 + amp * rows + 0.035 * low + 0.01 * fine
            self.paint(m, s, cls, tex)
            parcels[key] = cls
        strip = region & near
        self.paint(strip, S["meadow"], GROUND, 1 + 0.02 * fine)
        return parcels

    # ---- water ---------------------------------------------------------
    def water_blob(self, cx, cy, radius, n_harm=5, amp=0.16):
        rng = self.rng
        ang = np.arctan2(self.yy - cy, self.xx - cx)
        dist = np.hypot(self.xx - cx, self.yy - cy)
        r = np.full_like(ang, radius)
        for k in range(2, 2 + n_harm):
            r += radius * amp / (k - 0.8) * rng.uniform(0.4, 1.0) * np.cos(k * ang + rng.uniform(0, 2 * math.pi))
        m = dist < r
        m = ndi.binary_opening(m, iterations=2)
        edt = ndi.distance_transform_edt(m)
        wsh = np.clip(1 - edt / 7.0, 0, 1)[m]  # shallow near the shore
        s = (1 - wsh)[None] * spec(S["water_deep"])[:, None] + wsh[None] * spec(S["water_shallow"])[:, None]
        self.img[:, m] = s * (1 + 0.01 * smooth_noise(rng, (self.h, self.w), 8)[m])[None]
        self.gt[m] = WATER
        self.occupied |= ndi.binary_dilation(m, iterations=3)
        return m

    # ---- roads ---------------------------------------------------------
    def road(self, p0, p1, width, centre_line=False, s=S["asphalt"], pavement=0):
        (x0, y0), (x1, y1) = p0, p1
        dx, dy = x1 - x0, y1 - y0
        L = math.hypot(dx, dy)
        ux, uy = dx / L, dy / L
        along = (self.xx - x0) * ux + (self.yy - y0) * uy
        across = -(self.xx - x0) * uy + (self.yy - y0) * ux
        half = width / 2.0
        inside = (along >= 0) & (along <= L)
        m = inside & (np.abs(across) <= half + pavement)
        core = inside & (np.abs(across) <= half)
        tex = 1 + 0.02 * smooth_noise(self.rng, (self.h, self.w), 1.5)
        if pavement:
            self.paint(m & ~core, S["pavement"], ROAD, tex)
        self.paint(core, s, ROAD, tex)
        if centre_line:
            dash = core & (np.abs(across) <= 0.7) & ((along % 24.0) < 12.0)
            self.paint(dash, S["marking"], ROAD)
        self.occupied |= ndi.binary_dilation(m, iterations=2)
        return m

    # ---- buildings -----------------------------------------------------
    def _rect(self, cx, cy, length, width, angle_deg):
        rad = math.hypot(length, width) / 2 + 1
        win = self.window(cx, cy, rad)
        if win is None:
            return None
        sl, xx, yy = win
        a = math.radians(angle_deg)
        ca, sa = math.cos(a), math.sin(a)
        u = (xx - cx) * ca + (yy - cy) * sa
        v = -(xx - cx) * sa + (yy - cy) * ca
        m = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
        return sl, m, v, (-sa, ca)

    def building_fits(self, wings, margin=4):
        for cx, cy, L, W, ang in wings:
            r = self._rect(cx, cy, L + 2 * margin, W + 2 * margin, ang)
            if r is None:
                return False
            sl, m, _, _ = r
            if m.sum() < (L + 2 * margin) * (W + 2 * margin) * 0.9:  # clipped by the image edge
                return False
            if (self.occupied[sl] & m).any():
                return False
        return True

    def building(self, wings, roof=None, pitched=None, height=None):
        """wings: list of (cx, cy, length, width, angle_deg) rectangles (L-shape = 2 wings)."""
        rng = self.rng
        if roof is None:
            roof = ROOFS[rng.integers(len(ROOFS))]
        if pitched is None:
            pitched = tuple(roof) != tuple(ROOFS[4])  # white roofs are flat
        if height is None:
            height = rng.uniform(5, 9)
        s = spec(roof) * rng.uniform(0.92, 1.08)
        for cx, cy, L, W, ang in wings:
            sl, m, v, nrm = self._rect(cx, cy, L, W, ang)
            tex = 1 + 0.012 * self.rng.standard_normal(m.shape).astype(np.float32)
            if pitched:
                # two roof planes: the one facing the sun is brighter
                facing = nrm[0] * SUN_DIR_XY[0] + nrm[1] * SUN_DIR_XY[1]
                tex = tex * np.where(v > 0, 0.93 + 0.17 * facing, 0.93 - 0.17 * facing)
                tex = tex * np.where(np.abs(v) < 0.8, 1.12, 1.0)  # ridge
                hh = height + (W / 2 - np.abs(v)) * 0.5
            else:
                edge = ndi.binary_erosion(m, iterations=2)
                tex = tex * np.where(m & ~edge, 1.08, 1.0)  # parapet
                hh = np.full(m.shape, height, np.float32)
            self.paint(m, s, BUILDING, tex, sl)
            hv = self.hgt[sl]
            hv[m] = np.maximum(hv[m], hh[m])
            occ = self.occupied[sl]
            occ |= ndi.binary_dilation(m, iterations=3)

    def random_buildings(self, n, zone, lrange, wrange, angles=(0.0, 90.0), l_frac=0.25, tries=4000):
        """Place up to ``n`` buildings with centres inside zone=(x0,y0,x1,y1)."""
        rng = self.rng
        x0, y0, x1, y1 = zone
        placed = 0
        for _ in range(tries):
            if placed >= n:
                break
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            L = rng.uniform(*lrange)
            W = rng.uniform(wrange[0], min(wrange[1], L))
            ang = angles[rng.integers(len(angles))] + rng.uniform(-3, 3)
            wings = [(cx, cy, L, W, ang)]
            if rng.random() < l_frac:
                # L-shape: a second wing perpendicular, attached at one end
                a = math.radians(ang)
                end = rng.choice([-1, 1])
                L2 = rng.uniform(0.8, 1.5) * W
                W2 = rng.uniform(0.6, 0.9) * W
                side = rng.choice([-1, 1])
                ox = end * (L / 2 - W2 / 2) * math.cos(a) - side * (W / 2 + L2 / 2 - 1) * math.sin(a)
                oy = end * (L / 2 - W2 / 2) * math.sin(a) + side * (W / 2 + L2 / 2 - 1) * math.cos(a)
                wings.append((cx + ox, cy + oy, L2 + 2, W2, ang + 90))
            if self.building_fits(wings):
                self.building(wings)
                placed += 1
        return placed

    # ---- trees ---------------------------------------------------------
    def tree(self, cx, cy, r, conifer=None, check=False, reserve=False):
        rng = self.rng
        win = self.window(cx, cy, r)
        if win is None:
            return False
        sl, xx, yy = win
        dx, dy = (xx - cx) / r, (yy - cy) / r
        d2 = dx * dx + dy * dy
        # slightly irregular outline
        ang = np.arctan2(dy, dx)
        wob = 1 + 0.08 * np.cos(5 * ang + rng.uniform(0, 6.3)) + 0.05 * np.cos(3 * ang + rng.uniform(0, 6.3))
        m = d2 < wob ** 2
        if check and (self.occupied[sl] & m).any():
            return False
        if conifer is None:
            conifer = rng.random() < 0.2
        s = spec(S["conifer"] if conifer else S["tree"]) * rng.uniform(0.88, 1.12)
        nz = np.sqrt(np.clip(1 - d2, 0.0, 1.0))
        shade = dx * SUN_DIR_XY[0] * 0.6 + dy * SUN_DIR_XY[1] * 0.6 + nz * 0.8
        leaf = ndi.gaussian_filter(rng.standard_normal(m.shape).astype(np.float32), 0.9)
        leaf /= leaf.std() + 1e-6
        tex = (0.55 + 0.55 * np.clip(shade, 0, 1.2)) * (1 + 0.09 * leaf)
        self.paint(m, s, TREE, tex, sl)
        hh = (0.75 * r + 2) * nz + 1
        hv = self.hgt[sl]
        hv[m] = np.maximum(hv[m], hh[m])
        if reserve:  # keep later buildings/trees off this crown
            occ = self.occupied[sl]
            occ |= ndi.binary_dilation(m, iterations=2)
        return True

    def random_trees(self, n, zone, rrange, tries=3000, cluster=None):
        rng = self.rng
        x0, y0, x1, y1 = zone
        placed = 0
        for _ in range(tries):
            if placed >= n:
                break
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            r = rng.uniform(*rrange)
            if self.tree(cx, cy, r, check=True):
                placed += 1
                if cluster and rng.random() < cluster:
                    for _ in range(rng.integers(2, 6)):
                        a = rng.uniform(0, 2 * math.pi)
                        rr = rng.uniform(*rrange)
                        dd = (r + rr) * rng.uniform(0.55, 0.9)
                        self.tree(cx + dd * math.cos(a), cy + dd * math.sin(a), rr, check=True)
        return placed

    def forest(self, mask, rrange, tries):
        rng = self.rng
        ys, xs = np.nonzero(mask)
        for _ in range(tries):
            i = rng.integers(len(xs))
            self.tree(xs[i] + rng.uniform(-0.5, 0.5), ys[i] + rng.uniform(-0.5, 0.5),
                      rng.uniform(*rrange), conifer=rng.random() < 0.45, check=True)

    # ---- finishing -----------------------------------------------------
    def cast_shadows(self, max_len=28, vis=0.42, nir=0.5):
        """Height-field ray march toward the sun (one diagonal px per unit height)."""
        H = self.hgt
        sh = np.zeros_like(self.occupied)
        for k in range(1, max_len + 1):
            shifted = np.zeros_like(H)
            shifted[:-k, :-k] = H[k:, k:]  # height of the pixel k steps toward the sun (SE)
            sh |= (shifted - k) > (H + 0.5)
        f = np.array([vis, vis, vis * 1.05, nir], np.float32)
        self.img[:, sh] *= f[:, None]
        return sh

    def finish(self, noise_step, psf_sigma=0.6):
        """Sensor PSF blur, then quantised multiplicative noise in {-2..2} * noise_step."""
        for b in range(self.img.shape[0]):
            self.img[b] = ndi.gaussian_filter(self.img[b], psf_sigma)
        k = self.rng.binomial(4, 0.5, self.img.shape).astype(np.float32) - 2.0
        self.img *= 1 + noise_step * k


# ==========================================================================
# Scene 1: 4-band uint16, 1280 x 1280, 0.5 m, EPSG:32633
# ==========================================================================
S1_W = S1_H = 1280
S1_RES = 0.5
S1_ORIGIN = (412345.5, 5123456.0)
S1_CRS = "EPSG:32633"


def s1_nodata_mask(sc):
    # Orthomosaic footprint: triangle cut off in the lower-left corner,
    # vertices (x=0, y=900), (0, 1279), (379, 1279).
    return (sc.yy - 900) > sc.xx


def build_scene1():
    rng = np.random.default_rng(SEED)
    sc = Scene(S1_H, S1_W, rng)
    sc.background()

    # --- agricultural fields, lower right (below main road, right of N-S road)
    region = (sc.xx >= 596) & (sc.yy >= 662)
    lines = [
        ((770, 660), (740, 1280)),   # L1
        ((945, 660), (990, 1280)),   # L2: crosses y=896 at x~962 and y=1024 at x~971
        ((596, 930), (1280, 1000)),  # L3: crosses x=896 at y~961 and x=1024 at y~974
        ((1130, 660), (1150, 1280)),  # L4
    ]

    def field_class(key, rng_):
        l1, l2, l3, l4 = key  # True = to the right of / below the line (depends on direction)
        col = int(not l1) + int(not l2) + int(not l4)
        row = int(l3)
        return CROP if (col + row) % 2 == 1 else SOIL

    sc.fields(region, lines, field_class)

    # farmyard (gravel) around the farmstead in the fields
    sc.ground_patch([988, 1122, 1122, 988], [918, 918, 1066, 1066])

    # --- water
    sc.water_blob(270, 800, 85)          # lake, lower left
    sc.water_blob(1165, 110, 48, amp=0.2)  # pond, upper right

    # --- roads
    sc.road((0, 640), (1280, 652), 12, centre_line=True)     # R1 main E-W
    sc.road((575, 0), (585, 1280), 10)                       # R2 N-S
    sc.road((0, 330), (580, 330), 8)                         # R3 residential E-W
    sc.road((250, 0), (250, 645), 8)                         # R4 residential N-S
    sc.road((580, 300), (1280, 285), 8)                      # R5 village E-W (east)
    sc.road((640, 1280), (1280, 1150), 9)                    # R6 diagonal farm road
    sc.road((1040, 646), (1040, 922), 8)                     # R7 farm access, crosses y=896

    # --- hand-placed buildings straddling the tile seams (stride 896, tile 1024)
    seam_buildings = [
        ("A", [(897, 255, 56, 44, 0)], ROOFS[0]),                                   # x=896
        ("B", [(1025, 345, 60, 30, 0), (1005, 385, 50, 20, 90)], ROOFS[2]),           # x=1024, L-shape
        ("G", [(900, 590, 60, 40, 0)], ROOFS[4]),                                   # x=896
        ("H", [(1020, 60, 70, 40, 92)], ROOFS[1]),                                  # x=1024
        ("C", [(435, 897, 70, 55, 0)], ROOFS[3]),                                   # y=896
        ("F", [(240, 1024, 50, 40, 0), (222, 1052, 34, 22, 90)], ROOFS[0]),          # y=1024, L-shape
        ("D", [(1030, 955, 64, 40, 3)], METAL_ROOF),                                # x=1024 (barn, overlap corner)
        ("E", [(1080, 1024, 50, 28, 0), (1064, 1046, 30, 18, 90)], ROOFS[5]),        # y=1024, L-shape
    ]
    for _, wings, roof in seam_buildings:
        sc.building(wings, roof=roof)

    # --- hand-placed trees straddling the seams (placed before the random houses,
    #     reserved so that nothing is put on top of them)
    seam_trees_x = [
        (1024, 190, 16), (896, 470, 12), (912, 489, 9), (881, 492, 10),  # x seams
        (1024, 520, 18), (1009, 540, 10),
    ]
    seam_trees_y = [(150, 896, 14), (165, 912, 9), (520, 1024, 17)]     # y seams
    seam_trees = seam_trees_x + seam_trees_y
    for cx, cy, r in seam_trees_x:
        sc.tree(cx, cy, r, conifer=False, reserve=True)
    # hedgerow along field boundary L2 (crosses y=896 and y=1024)
    for t in np.arange(0.30, 0.66, 0.022):
        x = 945 + (990 - 945) * t
        y = 660 + (1280 - 660) * t
        sc.tree(x + rng.uniform(-2, 2), y + rng.uniform(-2, 2), rng.uniform(6.5, 10.5),
                conifer=False, reserve=True)

    # --- random houses
    sc.random_buildings(30, (10, 10, 565, 630), (22, 46), (16, 30))    # NW village
    sc.random_buildings(22, (600, 10, 1270, 630), (22, 50), (16, 32))  # NE village
    sc.random_buildings(8, (370, 665, 565, 860), (22, 40), (16, 28))   # S of main road

    # --- forest patch, lower left (crosses y=1024)
    fmask = sc.polygon_mask([360, 565, 570, 480, 370], [975, 960, 1270, 1275, 1240])
    sc.forest(fmask, (7, 15), 900)
    for cx, cy, r in seam_trees_y:  # painted over whatever is there (forest edge, meadow)
        sc.tree(cx, cy, r, conifer=False)
    # --- orchard, upper right
    for gx in range(1105, 1270, 22):
        for gy in range(330, 610, 22):
            sc.tree(gx + rng.uniform(-1.5, 1.5), gy + rng.uniform(-1.5, 1.5), rng.uniform(6, 7.5),
                    conifer=False, check=True)
    # --- garden / street trees
    sc.random_trees(70, (5, 5, 570, 635), (6, 14), cluster=0.3)
    sc.random_trees(45, (595, 5, 1275, 635), (6, 16), cluster=0.3)
    sc.random_trees(18, (10, 660, 570, 960), (7, 16), cluster=0.5)
    sc.random_trees(6, (600, 1060, 1270, 1270), (8, 20), cluster=0.6)

    sc.cast_shadows()
    sc.finish(noise_step=0.005)  # at most +-1 %

    nd = s1_nodata_mask(sc)
    img = np.clip(np.rint(sc.img), 1, 10000).astype(np.uint16)
    img[:, nd] = 0
    gt = sc.gt.copy()
    gt[nd] = GT_NODATA
    objects = {"buildings": seam_buildings, "trees": seam_trees, "field_lines": lines}
    return img, gt, objects


# ==========================================================================
# Scene 2: RGB uint8, 700 x 600, 0.3 m, EPSG:3857
# ==========================================================================
S2_W, S2_H = 700, 600
S2_RES = 0.3
S2_ORIGIN = (1723456.7, 5956789.1)
S2_CRS = "EPSG:3857"


def to_u8(refl):
    """Reflectance x 10000 -> display-like 8-bit (gain 2.5, gamma 2.2)."""
    v = np.clip(refl / 10000.0 * 2.5, 0, 1) ** (1 / 2.2)
    return np.clip(np.rint(v * 255), 1, 255).astype(np.uint8)


def build_scene2():
    rng = np.random.default_rng(SEED + 1)
    sc = Scene(S2_H, S2_W, rng)
    sc.background()
    # roads (0.3 m pixels: 7 m road = ~24 px) with pavements
    sc.road((0, 402), (700, 380), 24, centre_line=True, pavement=6)
    sc.road((432, 0), (440, 392), 18, pavement=5)
    # a garden pool (water)
    pool = sc.polygon_mask([170, 214, 214, 170], [215, 215, 238, 238])
    sc.paint(ndi.binary_dilation(pool, iterations=3), S["pavement"], GROUND)
    sc.paint(pool, S["pool"], WATER, 1 + 0.02 * smooth_noise(rng, (sc.h, sc.w), 3))
    sc.occupied |= ndi.binary_dilation(pool, iterations=6)
    # hand-placed houses
    sc.building([(110, 120, 110, 70, 0), (145, 185, 70, 40, 90)], roof=ROOFS[0], height=9)
    sc.building([(300, 110, 90, 80, 2)], roof=ROOFS[4], height=10)
    sc.building([(600, 150, 120, 70, 88)], roof=ROOFS[2], height=9)
    sc.building([(150, 500, 100, 75, -3)], roof=ROOFS[1], height=9)
    sc.building([(420, 505, 140, 60, 0), (470, 545, 60, 45, 90)], roof=ROOFS[3], height=10)
    sc.building([(620, 500, 80, 60, 0)], roof=ROOFS[5], height=8)
    sc.random_buildings(3, (20, 20, 690, 360), (50, 80), (40, 60), l_frac=0.3)
    # trees
    sc.random_trees(30, (5, 5, 695, 360), (11, 28), cluster=0.3)
    sc.random_trees(14, (5, 425, 695, 595), (11, 26), cluster=0.3)
    sc.cast_shadows(max_len=40)
    sc.finish(noise_step=0.006, psf_sigma=0.7)
    img = to_u8(sc.img[:3])
    return img, sc.gt.copy()


# ==========================================================================
# Writing
# ==========================================================================
def write_image(path, img, crs, transform, nodata, descriptions, photometric):
    count, h, w = img.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=count, dtype=img.dtype.name,
        crs=crs, transform=transform, nodata=nodata,
        tiled=True, blockxsize=256, blockysize=256,
        compress="DEFLATE", predictor=2, zlevel=9, interleave="pixel",
        photometric=photometric,
    )
    if nodata is None:
        profile.pop("nodata")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)


def write_gt(path, gt, crs, transform):
    h, w = gt.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=1, dtype="uint8",
        crs=crs, transform=transform, nodata=GT_NODATA,
        tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE", zlevel=9,
        photometric="PALETTE",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(gt, 1)
        dst.write_colormap(1, CLASS_COLORS)
        dst.set_band_description(1, "class")
        dst.update_tags(CLASS_NAMES=",".join(CLASS_NAMES))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="output directory (default: next to this script)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    img1, gt1, _ = build_scene1()
    t1 = from_origin(S1_ORIGIN[0], S1_ORIGIN[1], S1_RES, S1_RES)
    write_image(os.path.join(args.out, "scene_rgbn_u16.tif"), img1, S1_CRS, t1, 0,
                ["red", "green", "blue", "nir"], "MINISBLACK")
    write_gt(os.path.join(args.out, "scene_rgbn_u16.gt.tif"), gt1, S1_CRS, t1)

    img2, gt2 = build_scene2()
    t2 = from_origin(S2_ORIGIN[0], S2_ORIGIN[1], S2_RES, S2_RES)
    write_image(os.path.join(args.out, "scene_rgb_u8.tif"), img2, S2_CRS, t2, None,
                ["red", "green", "blue"], "RGB")
    write_gt(os.path.join(args.out, "scene_rgb_u8.gt.tif"), gt2, S2_CRS, t2)
    for name in ("scene_rgbn_u16.tif", "scene_rgbn_u16.gt.tif", "scene_rgb_u8.tif", "scene_rgb_u8.gt.tif"):
        p = os.path.join(args.out, name)
        print(f"wrote {p} ({os.path.getsize(p) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
