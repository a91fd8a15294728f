"""Real GeoTIFFs a user would throw at geoalps (../shared/realdata): readable scenes label, broken
ones fail with one line naming the file, and polygons land on the imagery."""
from __future__ import annotations

import pytest
import rasterio
import shapely

from geoalps import label
from geoalps.errors import GeoAlpsError

READABLE = [
    ("satellite/landsat7_rgb_byte.tif", {}),
    ("satellite/webmercator_cog_jpeg.tif", {}),
    ("satellite/world_rgb_wgs84.tif", {}),
    ("aerial/aerial_rgb_030m_1.tif", {}),
    ("aerial/aerial_rgb_015m_2.tif", {}),
    ("aerial/neon_osbs_029_rgb.tif", {}),
    ("aerial/neon_sjer_477_rgb.tif", {}),
    ("multispectral/spacenet4_atlanta_rgbn.tif", {"bands": "nrg"}),
    ("multispectral/spacenet2_lasvegas_wv3_rgbn.tif", {}),
    ("multispectral/landsat8_sr_b1-b7_u16.tif", {"bands": "landsat8-rgb"}),
    ("edge_cases/utmsmall_nad27.tif", {}),
    ("edge_cases/rgbsmall_wgs84.tif", {}),
    ("edge_cases/uint16_single_band.tif", {}),
    ("edge_cases/float32_single_band.tif", {}),
    ("edge_cases/float32_laea_nodata.tif", {"min_area_px": 2, "max_area_frac": 1.0}),
    ("edge_cases/sheared_geotransform.tif", {"min_area_px": 4}),
    ("edge_cases/rotated_no_crs.tif", {"allow_pixel_coords": True, "min_area_px": 2}),
]

BROKEN = [
    ("edge_cases/all_nodata_u16_4band.tif", "every pixel is nodata"),
    ("edge_cases/corrupt_jpeg.tif", "corrupt"),
    ("edge_cases/corrupted_tags.tif", ""),
    ("edge_cases/huge_claimed_size_dos.tif", ""),
    ("edge_cases/rotated_no_crs.tif", "no CRS"),
]


@pytest.mark.parametrize("name,options", READABLE, ids=[n for n, _ in READABLE])
def test_readable_scenes_label_and_land_on_the_imagery(realdata, tmp_path, name, options):
    path = realdata / name
    options = {"engine": "classical", "classes": 4, "quiet": True, **options}
    gdf = label(path, tmp_path / "out.gpkg", raster_out=tmp_path / "out.tif", **options).gdf
    assert len(gdf) > 0
    with rasterio.open(path) as src, rasterio.open(tmp_path / "out.tif") as out:
        assert out.transform == src.transform and out.shape == src.shape
        if src.crs is not None:
            assert gdf.crs == src.crs and out.crs == src.crs
        footprint = shapely.Polygon([src.transform @ xy for xy in
                                     ((0, 0), (src.width, 0), (src.width, src.height), (0, src.height))])
        labels = out.read(1)
    # polygons lie on the scene and the raster burns the same area the polygons cover
    assert shapely.covers(footprint.buffer(1e-6 * footprint.length), gdf.geometry.values).all()
    pixel_area = abs(src.transform.determinant)
    assert (labels != 255).sum() == pytest.approx(gdf["area"].sum() / pixel_area, rel=0.02)


@pytest.mark.parametrize("name,fragment", BROKEN, ids=[n for n, _ in BROKEN])
def test_broken_files_fail_cleanly(realdata, tmp_path, name, fragment):
    out = tmp_path / "out.gpkg"
    with pytest.raises(GeoAlpsError) as err:
        label(realdata / name, out, raster_out=tmp_path / "out.tif", engine="classical", quiet=True)
    message = str(err.value)
    assert message.startswith(str(realdata / name) + ": ") and fragment in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_aerial_buildings_are_found(realdata, tmp_path):
    """Masks match real objects: most building pixels of the aerial tile are inside one polygon."""
    path = realdata / "aerial/aerial_rgb_030m_1.tif"
    label(path, None, engine="classical", classes=6, quiet=True, raster_out=tmp_path / "l.tif")
    with rasterio.open(str(path).replace(".tif", ".buildings.tif")) as b, rasterio.open(tmp_path / "l.tif") as l:
        buildings, labels = b.read(1) > 0, l.read(1)
    assert buildings.any()
    assert (labels[buildings] != 255).mean() > 0.5
