"""STAC items written by the tests: one single-band COG per band, the 10 m bands (blue, green,
red) and a 20 m band (nir) whose pixels cover 2 x 2 of the 10 m grid, as Sentinel-2 publishes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

GRID_10M = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)
BANDS_10M = ("blue", "green", "red")


def write_cog(path: Path, band: np.ndarray, transform: Affine, nodata=0) -> Path:
    with rasterio.open(path, "w", driver="COG", width=band.shape[1], height=band.shape[0], count=1,
                       dtype=band.dtype.name, crs="EPSG:32633", transform=transform, nodata=nodata,
                       blocksize=128) as dst:
        dst.write(band, 1)
    return path


def write_item(folder: Path, data: np.ndarray, item_id: str = "S2X_TEST", href_base: str = "") -> tuple[Path, np.ndarray]:
    """``data`` (4, H, W) uint16 as blue, green, red at 10 m and nir at 20 m (every second pixel
    of band 4, so H and W must be even); returns the item file and the stack of the four bands
    on the 10 m grid (red, green, blue, nir order as ``--assets red,green,blue,nir`` asks)."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = data.shape[1:]
    nir_20m = data[3, ::2, ::2]
    assets = {}
    for index, name in enumerate(BANDS_10M):
        key = f"B0{index + 2}"  # B02 blue, B03 green, B04 red
        write_cog(folder / f"{item_id}_{key}.tif", data[index], GRID_10M)
        assets[key] = _asset(href_base + f"{item_id}_{key}.tif", name, 10)
    write_cog(folder / f"{item_id}_B8A.tif", nir_20m, GRID_10M * Affine.scale(2))
    assets["B8A"] = _asset(href_base + f"{item_id}_B8A.tif", "nir", 20)
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    x0, y1 = GRID_10M.c, GRID_10M.f
    x1, y0 = x0 + 10 * width, y1 - 10 * height
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "bbox": [x0, y0, x1, y1], "properties": {"datetime": "2024-06-01T10:00:00Z"},
        "links": [], "assets": assets,
    }
    path = folder / f"{item_id}.json"
    path.write_text(json.dumps(item))
    stacked = np.stack([data[2], data[1], data[0], np.repeat(np.repeat(nir_20m, 2, 0), 2, 1)])
    return path, stacked


def _asset(href: str, common_name: str, gsd: int) -> dict:
    return {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"],
            "gsd": gsd, "eo:bands": [{"name": href.rsplit("_", 1)[-1][:-4], "common_name": common_name}]}
