"""STAC items as scenes: each item's chosen assets become one multi-band VRT.

A STAC item (or an item collection: one scene per item) names one file per band, often at
different resolutions (Sentinel-2: 10 m and 20 m). The chosen assets are stacked into a VRT
whose grid is the finest asset's; each coarser band is resampled (nearest) onto it window by
window as GDAL reads, so nothing is downloaded whole and the rest of the pipeline still sees one
path with N bands. The VRT is XML held in memory (GDAL opens the XML itself), so it pickles to
dask workers, which read the assets themselves. Band descriptions are the ``eo:bands`` common
names (``red``, ``nir``, ...), which the spectral features use.

An item fetched over http(s) is someone else's data: its asset hrefs may only be http(s) URLs or
references relative to the item's URL (resolved against it); a local path, a ``file://`` URL, a GDAL
virtual path (``/vsicurl/...``, ``/vsizip/...``) or another scheme in it is refused, so a remote
item cannot make geoalps read local files or hosts through GDAL's back doors. A local item may
point anywhere its author's machine can.

Cost: one JSON read per item file and one header read per asset.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from geoalps.errors import InputError, OptionError
from geoalps.inputs.http import fetch_bytes
from geoalps.inputs.remote import display_name, gdal_env, gdal_path, is_http, is_url

#: Media types of assets taken when ``--assets`` is not given.
_RASTER_MEDIA = ("image/tiff", "image/jp2", "application/x-hdf")
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class StacScene:
    """One STAC item as a scene: the VRT XML to open, its name and how messages name it."""

    vrt_xml: str
    name: str
    shown: str
    band_names: tuple[str, ...]


def is_stac(location: str | os.PathLike) -> bool:
    """A STAC item or item collection file / URL (a ``.json`` or ``.geojson`` name)."""
    text = str(location).split("?", 1)[0].lower()
    return text.endswith((".json", ".geojson"))


def stac_scenes(location: str | os.PathLike, assets: str | None = None) -> list[StacScene]:
    """Every item of the STAC file or URL ``location`` as a :class:`StacScene`, with the bands
    ``assets`` names (asset keys or ``eo:bands`` common names, comma-separated).

    Raises:
        InputError: unreadable or not a STAC item / item collection; an asset missing or not
            on a common CRS.
        OptionError: ``--assets`` names something no asset has.
    """
    import pystac

    location = str(location)
    shown = display_name(location)
    data = _read_json(location, shown)
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Feature":
            items = [pystac.Item.from_dict(data)]
        elif kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data, preserve_dict=True).items)
        else:
            raise InputError(f"{shown}: not a STAC item or item collection (type {kind!r})")
    except (pystac.STACError, pystac.errors.STACTypeError, KeyError, TypeError, ValueError) as exc:
        missing = "" if isinstance(data, dict) and "stac_version" in data else "; it has no stac_version"
        raise InputError(f"{shown}: not a valid STAC item ({' '.join(str(exc).split())}){missing}") from None
    if not items:
        raise InputError(f"{shown}: the item collection holds no items")
    base = location if not is_url(location) else location.split("?", 1)[0]
    out = []
    for item in items:
        item_shown = shown if len(items) == 1 else f"{shown}#{item.id}"
        out.append(_item_scene(item, base, item_shown, assets))
    return out


def _read_json(location: str, shown: str) -> object:
    """The JSON at a local path or http(s) URL (fetched with the user's GDAL HTTP settings and
    retries: :mod:`geoalps.inputs.http`)."""
    if not is_url(location):
        try:
            with open(location, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise InputError(f"{shown}: file not found") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{shown}: not a readable STAC JSON file ({' '.join(str(exc).split())})") from None
    if not is_http(location):
        raise InputError(f"{shown}: STAC files are read from local paths or http(s) URLs")
    data = fetch_bytes(location, shown)
    try:
        return json.loads(data)
    except ValueError:
        raise InputError(f"{shown}: not JSON") from None


def _asset_bands(asset) -> list[dict]:
    """The asset's band list (STAC 1.0 ``eo:bands`` or 1.1 ``bands``)."""
    fields = asset.extra_fields
    bands = fields.get("eo:bands") or fields.get("bands") or []
    return [b for b in bands if isinstance(b, dict)]


def _common_name(band: dict) -> str | None:
    return band.get("common_name") or band.get("eo:common_name")


def _default_keys(item) -> list[str]:
    keys = []
    for key, asset in item.assets.items():
        roles = asset.roles or ["data"]
        media = (asset.media_type or "").lower()
        if "data" in roles and (not media or media.startswith(_RASTER_MEDIA)):
            keys.append(key)
    return keys


def _choose(item, assets: str | None, shown: str) -> list[tuple[str, int | None, str]]:
    """(asset key, band index in the asset or None for all its bands, band name) per choice."""
    if not assets:
        keys = _default_keys(item)
        if not keys:
            raise OptionError(f"{shown}: no data asset found; name the bands with --assets (e.g. red,green,blue,nir)")
        return [(k, None, k) for k in keys]
    chosen = []
    for wanted in (w.strip() for w in assets.split(",")):
        if not wanted:
            continue
        if wanted in item.assets:
            chosen.append((wanted, None, wanted))
            continue
        match = [(key, i) for key, asset in item.assets.items()
                 for i, band in enumerate(_asset_bands(asset)) if _common_name(band) == wanted]
        if not match:
            known = sorted(set(item.assets) | {_common_name(b) for a in item.assets.values()
                                               for b in _asset_bands(a) if _common_name(b)})
            raise OptionError(f"{shown}: --assets {wanted!r} is neither an asset key nor an eo:bands common "
                              f"name of item {item.id} (it has {', '.join(known)})")
        key, index = match[0]
        single = len(_asset_bands(item.assets[key])) <= 1
        chosen.append((key, None if single else index, wanted))
    return chosen


def _item_scene(item, base: str, shown: str, assets: str | None) -> StacScene:
    import rasterio
    from rasterio.errors import RasterioIOError

    from geoalps.inputs.scene import _gdal_reason, _remote_problem

    sources = []  # (gdal path, band numbers, names, header)
    for key, index, name in _choose(item, assets, shown):
        href = item.assets[key].href
        if is_url(base):
            href = _remote_href(base, href, shown, key)
        else:
            if href.startswith("file://"):
                href = href[len("file://"):]
            if not is_url(href) and not os.path.isabs(href):
                href = _join(base, href)
        path = gdal_path(href)
        try:
            with gdal_env(), rasterio.open(path) as src:
                header = (src.width, src.height, src.transform, src.crs, src.dtypes[0], src.count, src.nodata)
        except RasterioIOError as exc:
            reason = _gdal_reason(exc)
            problem = _remote_problem(reason) or f"cannot open ({reason})"
            raise InputError(f"{shown}: asset {key!r} ({display_name(href)}): {problem}") from None
        count = header[5]
        numbers = [index + 1] if index is not None else list(range(1, count + 1))
        if index is not None and index >= count:
            raise InputError(f"{shown}: asset {key!r} has {count} band(s), eo:bands says more")
        band_info = _asset_bands(item.assets[key])
        names = []
        for number in numbers:
            info = band_info[number - 1] if number - 1 < len(band_info) else {}
            names.append(name if index is not None or count == 1 else (_common_name(info) or f"{key}_{number}"))
        if count == 1 and band_info and _common_name(band_info[0]):
            names = [_common_name(band_info[0])]
        sources.append((path, numbers, names, header))
    return StacScene(_vrt_xml(sources, shown), item.id, shown,
                     tuple(n for s in sources for n in s[2]))


def _remote_href(base: str, href: str, shown: str, key: str) -> str:
    """The http(s) URL an asset of the item at URL ``base`` is read from: ``href`` itself when it
    is an http(s) URL, else ``href`` resolved against ``base`` when it is a relative reference.

    Raises:
        InputError: anything else (local path, ``file://``, GDAL virtual path, another scheme),
            naming the asset.
    """
    from urllib.parse import urljoin, urlsplit

    text = href.strip()
    scheme = urlsplit(text).scheme.lower() if "://" in text or ":" in text.split("/", 1)[0] else ""
    relative = not scheme and not text.startswith(("/", "\\"))  # "/x": a local path to GDAL
    resolved = urljoin(base, text) if relative else text
    if not is_http(resolved) or (not relative and scheme not in ("http", "https")):
        raise InputError(f"{shown}: asset {key!r} ({display_name(href)}): an item read over http(s) may only point at "
                         "http(s) URLs or paths relative to the item, not local files or GDAL virtual paths; refused")
    return resolved


def _join(base: str, href: str) -> str:
    if is_url(base):
        from urllib.parse import urljoin

        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def _vrt_xml(sources, shown: str) -> str:
    """A VRT on the finest asset grid with one band per chosen asset band."""
    crss = {s[3][3].to_wkt() if s[3][3] else None for s in sources}
    if len(crss) != 1 or None in crss:
        raise InputError(f"{shown}: the chosen assets are not all in one CRS; choose assets of one CRS")
    finest = min(sources, key=lambda s: abs(s[3][2].a) * abs(s[3][2].e))
    width, height, grid = finest[3][0], finest[3][1], finest[3][2]
    if grid.b or grid.d:
        raise InputError(f"{shown}: rotated asset grids are not supported")
    dtype = np.result_type(*[np.dtype(s[3][4]) for s in sources]).name
    if dtype not in _GDAL_TYPES:
        raise InputError(f"{shown}: assets of types {', '.join(sorted({s[3][4] for s in sources}))} cannot share a band type")
    nodatas = {s[3][6] for s in sources}
    nodata = nodatas.pop() if len(nodatas) == 1 else None
    (crs_wkt,) = crss
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"<SRS>{escape(crs_wkt)}</SRS>",
             f"<GeoTransform>{grid.c!r}, {grid.a!r}, 0, {grid.f!r}, 0, {grid.e!r}</GeoTransform>"]
    band = 0
    for path, numbers, names, (w, h, transform, _, _, _, src_nodata) in sources:
        # where this asset's pixels fall on the finest grid (fractions allowed)
        x_off = (transform.c - grid.c) / grid.a
        y_off = (transform.f - grid.f) / grid.e
        x_size = w * transform.a / grid.a
        y_size = h * transform.e / grid.e
        for number, name in zip(numbers, names):
            band += 1
            lines.append(f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{band}">')
            lines.append(f"<Description>{escape(name)}</Description>")
            if nodata is not None:
                lines.append(f"<NoDataValue>{nodata!r}</NoDataValue>")
            lines.append('<ComplexSource resampling="nearest">')
            lines.append(f'<SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>')
            lines.append(f"<SourceBand>{number}</SourceBand>")
            lines.append(f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>')
            lines.append(f'<DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}"/>')
            if src_nodata is not None:
                lines.append(f"<NODATA>{src_nodata!r}</NODATA>")
            lines.append("</ComplexSource>")
            lines.append("</VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "".join(lines)
