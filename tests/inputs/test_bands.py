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
