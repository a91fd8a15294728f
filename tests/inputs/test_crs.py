"""One CRS comparison and one unit rule for the package (geoalps.inputs.crs)."""
import pytest
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS

from geoalps.errors import OptionError
from geoalps.inputs.crs import metres_per_unit, pixel_size_m, same_crs
from geoalps.objects.coverage import tolerance_px

UTM = CRS.from_epsg(32633).to_wkt()
FEET = CRS.from_epsg(2263).to_wkt()  # NAD83 / New York Long Island (ftUS)
WGS84 = CRS.from_epsg(4326).to_wkt()


def test_same_crs_across_representations():
    assert same_crs(UTM, "EPSG:32633") and same_crs(ProjCRS.from_epsg(32633), CRS.from_epsg(32633))
    assert not same_crs(UTM, WGS84)
    assert same_crs(None, None) and not same_crs(None, UTM) and not same_crs(UTM, None)


def test_units_and_pixel_size_in_metres():
    assert metres_per_unit(UTM) == 1.0
    assert metres_per_unit(FEET) == pytest.approx(0.3048006, rel=1e-6)
    assert metres_per_unit(WGS84) is None and metres_per_unit(None) is None
    assert pixel_size_m(UTM, (0.5, 0, 0, 0, -0.5, 0), 10, 10) == 0.5
    assert pixel_size_m(FEET, (2.0, 0, 0, 0, -2.0, 0), 10, 10) == pytest.approx(0.6096012, rel=1e-6)
    # degrees: metres at the grid's central latitude (60 N: about half a degree of longitude)
    at_60n = pixel_size_m(WGS84, (0.001, 0, 10.0, 0, -0.001, 60.005), 10, 10)
    assert at_60n == pytest.approx(0.001 * 111_320 * 0.5 ** 0.5, rel=1e-3)
    assert pixel_size_m(None, (1, 0, 0, 0, -1, 0), 10, 10) is None


def test_simplify_in_metres_on_a_feet_crs():
    # 2 m on 2 ft pixels: 2 / 0.3048 ft = 6.56 ft = 3.28 px
    got = tolerance_px(2.0, "m", Affine(2.0, 0, 0, 0, -2.0, 0), FEET, "s.tif")
    assert got == pytest.approx(2.0 / 0.3048006 / 2.0, rel=1e-6)
    with pytest.raises(OptionError, match="s.tif: --simplify 2m needs a projected CRS"):
        tolerance_px(2.0, "m", Affine(0.001, 0, 0, 0, -0.001, 0), WGS84, "s.tif")
