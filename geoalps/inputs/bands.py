"""Multispectral bands: what each band is (its role), and the three 8-bit channels a mask engine sees.

Band roles ('red', 'nir', ...) are decided here, once per scene (:func:`scene_band_roles`, from
``--band-names``, else the band descriptions, else GDAL's colour interpretation) and carried by
the :class:`~geoalps.inputs.scene.Scene` record: the engine's default view, the spectral indices
and the class gallery all use them. Nothing guesses a band order: unknown roles stay unknown.

The stretch uses the scene-level statistics from :mod:`geoalps.inputs.scene`, never per-tile ones, so
neighbouring tiles look alike and no seams appear in appearance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from geoalps.errors import OptionError

if TYPE_CHECKING:
    from geoalps.inputs.scene import BandStats

#: The names ``--band-names`` takes, one a band; ``other`` for a band of none of these kinds.
BAND_NAME_VOCABULARY = ("coastal", "blue", "green", "red", "rededge", "nir", "swir1", "swir2", "pan", "other")
#: Band description (lower case) -> role, for names that are not a vocabulary word or its start
#: (STAC eo:bands common names, single letters of R,G,B,N files).
_DESCRIPTION_ALIASES = {"r": "red", "g": "green", "b": "blue", "n": "nir", "near-infrared": "nir",
                        "near infrared": "nir", "nir08": "nir", "nir09": "nir", "red edge": "rededge",
                        "red-edge": "rededge", "swir16": "swir1", "swir22": "swir2", "panchromatic": "pan"}
_COLORINTERP_ROLES = {"red": "red", "green": "green", "blue": "blue"}


@dataclass(frozen=True)
class BandRoles:
    """What each band of a scene is: ``names`` holds one role a band (a word of
    :data:`BAND_NAME_VOCABULARY`, or None when unknown); ``source`` says where they came from
    (``--band-names``, ``descriptions``, ``colour interpretation``, or ``unknown``);
    ``descriptions`` are the file's own band descriptions, for display."""

    names: tuple[str | None, ...] = ()
    source: str = "unknown"
    descriptions: tuple[str | None, ...] = ()

    @property
    def known(self) -> bool:
        return any(name not in (None, "other") for name in self.names)

    def band(self, role: str) -> int | None:
        """1-based number of the first band with ``role``; None when no band has it."""
        return next((i + 1 for i, name in enumerate(self.names) if name == role), None)

    def natural_colour(self) -> tuple[int, int, int] | None:
        """(red, green, blue) band numbers when all three are known, else None."""
        bands = tuple(self.band(role) for role in ("red", "green", "blue"))
        return bands if None not in bands else None  # type: ignore[return-value]

    def labels(self, count: int) -> list[str]:
        """A label a band, for axes: its role, else its description, else "band N"."""
        out = []
        for i in range(count):
            role = self.names[i] if i < len(self.names) else None
            text = self.descriptions[i] if i < len(self.descriptions) else None
            out.append(role if role not in (None, "other") else (text or f"band {i + 1}"))
        return out


def parse_band_names(text: str, count: int, shown: str) -> tuple[str, ...]:
    """``--band-names blue,green,red,nir`` for a scene of ``count`` bands: one vocabulary word a
    band. Raises OptionError naming the file otherwise."""
    names = tuple(part.strip().lower() for part in str(text).split(","))
    unknown = [n for n in names if n not in BAND_NAME_VOCABULARY]
    if unknown:
        raise OptionError(f"{shown}: --band-names: unknown band name {unknown[0]!r} "
                          f"(use {', '.join(BAND_NAME_VOCABULARY)})")
    if len(names) != count:
        raise OptionError(f"{shown}: --band-names gives {len(names)} name{'s' if len(names) != 1 else ''} "
                          f"but the file has {count} band{'s' if count != 1 else ''} (one name a band)")
    return names


def role_of_description(description: str | None) -> str | None:
    """The role a band description names ('red', 'NIR (B5)', 'R', 'Red edge 1', 'swir16'); None
    for descriptions that name no colour ('SR_B1', 'B4': band numbers differ between sensors)."""
    text = (description or "").strip().lower()
    if not text:
        return None
    if text in _DESCRIPTION_ALIASES:
        return _DESCRIPTION_ALIASES[text]
    for alias, role in _DESCRIPTION_ALIASES.items():
        if len(alias) > 1 and text.startswith(alias):
            return role
    # longest words first: 'rededge' before 'red'
    for word in sorted(BAND_NAME_VOCABULARY, key=len, reverse=True):
        if word != "other" and text.startswith(word):
            return word
    return None


def scene_band_roles(count: int, descriptions: Sequence[str | None], colorinterp: Sequence[str] = (),
                     band_names: str | None = None, shown: str = "") -> BandRoles:
    """The roles of a scene's bands: ``band_names`` (``--band-names``) when given, else the band
    descriptions when any names a colour, else GDAL's colour interpretation (red/green/blue;
    rasterio ``ColorInterp`` names), else unknown. Costs nothing beyond the header already read."""
    descriptions = tuple(descriptions)[:count]
    if band_names:
        return BandRoles(parse_band_names(band_names, count, shown), "--band-names", descriptions)
    from_descriptions = tuple(role_of_description(d) for d in descriptions)
    if any(from_descriptions):
        return BandRoles(from_descriptions, "descriptions", descriptions)
    from_colours = tuple(_COLORINTERP_ROLES.get(str(getattr(c, "name", c)).lower()) for c in tuple(colorinterp)[:count])
    if any(from_colours):
        return BandRoles(from_colours, "colour interpretation", descriptions)
    return BandRoles((None,) * count, "unknown", descriptions)


def band_names_hint(shown: str, count: int, view: tuple[int, int, int]) -> str:
    """The one line saying a scene's band roles are unknown (the engine sees ``view``) and how to
    name them."""
    example = ",".join(("blue", "green", "red", "nir", "swir1", "swir2", "other", "other")[:count])
    return (f"{shown}: band roles unknown (neither band descriptions nor colour interpretation name a colour): the engine sees "
            f"bands {','.join(map(str, view))} as red, green, blue and the indices are role-free ratios, not NDVI; name the "
            f"bands with --band-names, one a band, e.g. --band-names {example} "
            f"(names: {', '.join(BAND_NAME_VOCABULARY)})")


#: Named band mappings (1-based band numbers, as GDAL counts them).
BAND_PRESETS: dict[str, tuple[int, int, int]] = {
    "rgb": (1, 2, 3),  # R,G,B[,NIR] band order (aerial, WorldView RGBN, most orthophotos)
    "bgr": (3, 2, 1),
    "nrg": (4, 1, 2),  # false colour for R,G,B,NIR files: vegetation turns red
    "sentinel2-rgb": (4, 3, 2),  # B1..B12 order: B4 red, B3 green, B2 blue
    "sentinel2-nrg": (8, 4, 3),
    "landsat8-rgb": (4, 3, 2),  # bands 1-7 of Landsat-8 OLI
    "landsat8-nrg": (5, 4, 3),
}


def resolve_bands(spec: str | None, band_count: int, path: str,
                  roles: BandRoles | None = None) -> tuple[int, int, int]:
    """Turn ``--bands`` (``"4,3,2"``, a preset name, or None) into three 1-based band numbers.

    None picks the red, green and blue bands of ``roles`` when all three are known, else
    bands 1,2,3 for scenes of three or more bands, the single band repeated for one band, and
    (1, 2, 1) for two bands.
    """
    if spec is None or spec == "auto":
        natural = roles.natural_colour() if roles is not None else None
        if natural is not None and max(natural) <= band_count:
            return natural
        if band_count >= 3:
            return BAND_PRESETS["rgb"]
        return (1, 1, 1) if band_count == 1 else (1, 2, 1)
    key = spec.strip().lower()
    if key in BAND_PRESETS:
        bands = BAND_PRESETS[key]
    else:
        try:
            bands = tuple(int(part) for part in key.split(","))
        except ValueError:
            raise OptionError(
                f"{path}: --bands {spec!r} is neither a list like 4,3,2 nor a preset "
                f"({', '.join(BAND_PRESETS)})"
            ) from None
        if len(bands) == 1:
            bands = bands * 3
        if len(bands) != 3:
            raise OptionError(f"{path}: --bands needs 1 or 3 band numbers, got {spec!r}")
    for band in bands:
        if not 1 <= band <= band_count:
            raise OptionError(
                f"{path}: band {band} does not exist (the scene has {band_count} "
                f"band{'s' if band_count != 1 else ''}; bands are numbered from 1)"
            )
    return bands  # type: ignore[return-value]


def stretch_to_uint8(
    data: np.ndarray, valid: np.ndarray, bands: tuple[int, int, int], stats: BandStats
) -> np.ndarray:
    """(bands, H, W) scene values -> (H, W, 3) uint8 with the scene's percentile stretch.

    Invalid pixels become 0. Costs one float32 copy of three bands of the tile.
    """
    out = np.zeros(data.shape[1:] + (3,), dtype=np.uint8)
    for channel, band in enumerate(bands):
        lo, hi = stats.low[band - 1], stats.high[band - 1]
        values = np.where(valid, data[band - 1], lo).astype(np.float64)  # nodata may be -3.4e38
        scaled = ((values - lo) * (255.0 / (hi - lo))).astype(np.float32)
        np.clip(scaled, 0, 255, out=scaled)
        scaled = np.nan_to_num(scaled, nan=0.0)
        out[..., channel] = np.rint(scaled).astype(np.uint8)
    out[~valid] = 0
    return out
