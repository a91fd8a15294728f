import numpy as np
import pytest

from geoalps.inputs.bands import resolve_bands, stretch_to_uint8
from geoalps.errors import GeoAlpsError
from geoalps.inputs.scene import BandStats


def test_defaults_and_presets():
    assert resolve_bands(None, 4, "x.tif") == (1, 2, 3)
    assert resolve_bands(None, 1, "x.tif") == (1, 1, 1)
    assert resolve_bands("4,3,2", 13, "x.tif") == (4, 3, 2)
    assert resolve_bands("sentinel2-nrg", 13, "x.tif") == (8, 4, 3)
    assert resolve_bands("2", 3, "x.tif") == (2, 2, 2)


@pytest.mark.parametrize("spec,message", [("5,3,2", "band 5 does not exist (the scene has 4 bands"),
                                           ("0,1,2", "band 0 does not exist"),
                                           ("red", "neither a list"), ("1,2", "1 or 3 band numbers")])
def test_bad_band_specs_name_the_file(spec, message):
    with pytest.raises(GeoAlpsError, match="^scene.tif: ") as err:
        resolve_bands(spec, 4, "scene.tif")
    assert message in str(err.value)


def test_stretch_uses_scene_statistics_not_tile_ones():
    stats = BandStats(low=(100.0, 0.0), high=(1100.0, 10.0), valid_fraction=1.0)
    dark_tile = np.full((2, 4, 4), 100, dtype=np.uint16)
    bright_tile = np.full((2, 4, 4), 1100, dtype=np.uint16)
    bright_tile[0, 0, 0] = 100
    valid = np.ones((4, 4), bool)
    dark = stretch_to_uint8(dark_tile, valid, (1, 1, 1), stats)
    bright = stretch_to_uint8(bright_tile, valid, (1, 1, 1), stats)
    # the same value maps to the same 8-bit value whatever the rest of its tile holds
    assert dark[0, 0, 0] == bright[0, 0, 0] == 0
    assert bright[1, 1, 0] == 255
    valid[2, 2] = False
    assert (stretch_to_uint8(bright_tile, valid, (1, 1, 1), stats)[2, 2] == 0).all()


# -- band roles (issue 23 item 3) ---------------------------------------------------------------

@pytest.mark.parametrize("descriptions, expected", [
    (("blue (B2)", "green (B3)", "red (B4)", "nir (B5)"), ("blue", "green", "red", "nir")),  # the Zion file
    (("R", "G", "B", "N"), ("red", "green", "blue", "nir")),  # SpaceNet-2 WorldView-3
    (("coastal", "blue", "green", "red", "rededge", "nir08", "swir16", "swir22"),  # STAC eo:bands names
     ("coastal", "blue", "green", "red", "rededge", "nir", "swir1", "swir2")),
    (("Red edge 1", "Near-infrared", "Panchromatic"), ("rededge", "nir", "pan")),
    (("SR_B1", "SR_B2", "B4", None), (None, None, None, None)),  # band numbers differ between sensors
])
def test_roles_from_band_descriptions(descriptions, expected):
    from geoalps.inputs.bands import scene_band_roles

    roles = scene_band_roles(len(descriptions), descriptions, ["gray"] + ["undefined"] * (len(descriptions) - 1))
    assert roles.names == expected
    assert roles.source == ("descriptions" if any(expected) else "unknown")


def _write(path, count, dtype="uint8", descriptions=(), colorinterp=None, **profile):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=count, dtype=dtype,
                       crs="EPSG:32633", transform=rasterio.Affine(1, 0, 0, 0, -1, 16), **profile) as dst:
        dst.write(np.arange(count * 256, dtype=dtype).reshape(count, 16, 16) % 200 + 1)
        for band, text in enumerate(descriptions, start=1):
            dst.set_band_description(band, text)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path


def test_rgb_colour_interpretation_gives_the_view(tmp_path):
    """A plain 3-band uint8 GeoTIFF (GDAL: PHOTOMETRIC=RGB) is red, green, blue; a file whose
    colour interpretation says blue, green, red is viewed as bands 3, 2, 1."""
    from rasterio.enums import ColorInterp

    from geoalps.inputs.scene import open_scene

    plain = open_scene(_write(tmp_path / "rgb.tif", 3, photometric="RGB"))
    assert plain.band_roles.names == ("red", "green", "blue")
    assert plain.band_roles.source == "colour interpretation"
    assert resolve_bands(None, 3, "rgb.tif", plain.band_roles) == (1, 2, 3)
    bgr = open_scene(_write(tmp_path / "bgr.tif", 3, colorinterp=[ColorInterp.blue, ColorInterp.green,
                                                                  ColorInterp.red]))
    assert bgr.band_roles.names == ("blue", "green", "red")
    assert resolve_bands(None, 3, "bgr.tif", bgr.band_roles) == (3, 2, 1)
    assert resolve_bands("rgb", 3, "bgr.tif", bgr.band_roles) == (1, 2, 3)  # --bands wins


def test_descriptions_win_over_colour_interpretation_and_band_names_over_both(tmp_path):
    from geoalps.inputs.scene import open_scene

    path = _write(tmp_path / "s.tif", 3, descriptions=("blue", "green", "red"), photometric="RGB")
    assert open_scene(path).band_roles.names == ("blue", "green", "red")
    named = open_scene(path, band_names=" Red,GREEN,other ")
    assert named.band_roles.names == ("red", "green", "other") and named.band_roles.source == "--band-names"
    assert resolve_bands(None, 3, "s.tif", named.band_roles) == (1, 2, 3)  # no blue: today's fallback


@pytest.mark.parametrize("names, message", [
    ("blue,green,red", "s.tif: --band-names gives 3 names but the file has 4 bands (one name a band)"),
    ("blue,green,red,nir,swir1", "s.tif: --band-names gives 5 names but the file has 4 bands"),
    ("blue,green,red,infrared", "s.tif: --band-names: unknown band name 'infrared' (use coastal, blue, green, "
                                "red, rededge, nir, swir1, swir2, pan, other)"),
])
def test_bad_band_names_name_the_file(tmp_path, names, message):
    from geoalps.errors import OptionError
    from geoalps.inputs.scene import open_scene

    path = _write(tmp_path / "s.tif", 4, dtype="uint16")
    with pytest.raises(OptionError) as err:
        open_scene(path, band_names=names)
    assert str(err.value).startswith(f"{path}: ") and message.split(": ", 1)[1] in str(err.value)
    assert "\n" not in str(err.value)
