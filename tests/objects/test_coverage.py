"""Polygons of a disjoint engine form a clean coverage (geoalps.objects.coverage): neighbours share
their edges vertex for vertex, inside tiles and across seams, with and without --simplify, and
cover exactly the label raster's pixels."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio import features
from skimage import measure

from conftest import REPO, write_raster
from geoalps import label
from geoalps.errors import OptionError
from geoalps.objects.coverage import (drop_inner_collinear, node_pixel_edges, resolve_overlaps, simplify_coverage,
                                      to_map, tolerance_px)
from geoalps.options import auto_workers, parse_simplify

#: Four regions: a wide one on top, two below it meeting halfway (a T-junction on the top one's
#: straight bottom edge), and a ring around a hole filled by the fourth.
REGIONS = np.array([
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
    [2, 2, 2, 3, 3, 3, 3, 3],
    [2, 2, 2, 3, 4, 4, 3, 3],
    [2, 2, 2, 3, 4, 4, 3, 3],
    [2, 2, 2, 3, 3, 3, 3, 3],
], dtype=np.int32)


def polygonised(labels: np.ndarray) -> np.ndarray:
    """GDAL's polygons of each region, in pixel coordinates (corners only: no junction vertices)."""
    shapes = {int(v): shapely.geometry.shape(g) for g, v in features.shapes(labels, connectivity=4)}
    return np.array([shapes[k] for k in sorted(shapes)], dtype=object)


def burnt(geometries, shape, values=None) -> np.ndarray:
    values = np.arange(1, len(geometries) + 1) if values is None else values
    return features.rasterize(zip(geometries, values.tolist()), out_shape=shape, fill=0, dtype="int32")


def test_gdal_polygons_have_t_junctions_and_noding_removes_them():
    polygons = polygonised(REGIONS)
    assert not shapely.coverage_is_valid(polygons)  # the problem: region 1 lacks the vertex (3, 2)
    noded = node_pixel_edges(polygons)
    assert shapely.coverage_is_valid(noded)
    assert shapely.equals(noded, polygons).all()
    lean = drop_inner_collinear(noded)
    assert shapely.coverage_is_valid(lean) and shapely.equals(lean, polygons).all()
    vertices = [int(shapely.get_num_coordinates(g).sum()) for g in (polygons, lean, noded)]
    assert vertices[0] < vertices[1] < vertices[2]
    assert (3.0, 2.0) in set(map(tuple, shapely.get_coordinates(lean[0])))  # the junction, on region 1
    assert np.array_equal(burnt(lean, REGIONS.shape), REGIONS)


def test_one_affine_at_the_end_gives_identical_floats_for_a_shared_corner():
    transform = Affine(0.1, 0, 612345.67, 0, -0.1, 5123456.78)
    left, right = shapely.box(0, 0, 3, 3), shapely.box(3, 0, 6, 3)
    a, b = to_map(node_pixel_edges(np.array([left, right], dtype=object)), transform)
    shared = set(map(tuple, shapely.get_coordinates(a))) & set(map(tuple, shapely.get_coordinates(b)))
    assert len(shared) == 4  # x = 3, rows 0..3: bit-identical floats on both sides
    assert shapely.coverage_is_valid(np.array([a, b], dtype=object))


def test_overlaps_go_to_the_smaller_object_as_in_the_label_raster():
    big, small, other = shapely.box(0, 0, 6, 6), shapely.box(4, 4, 8, 8), shapely.box(6, 0, 9, 4)
    resolved = resolve_overlaps(np.array([big, small, other], dtype=object))
    assert resolved[1].equals(small) and resolved[2].equals(other)
    assert resolved[0].equals(big.difference(small))
    assert shapely.coverage_is_valid(node_pixel_edges(resolved))
    raster = np.zeros((10, 10), np.int32)
    for value, g in sorted(enumerate([big, small, other], 1), key=lambda x: -x[1].area):
        raster = np.where(burnt([g], raster.shape) > 0, value, raster)  # small ones on top
    assert np.array_equal(burnt(resolved, raster.shape), raster)


def test_simplifying_groups_separately_keeps_one_coverage():
    """Groups written in different batches are simplified with their outer boundary fixed, so
    the edges between groups stay the same on both sides."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(1, 6, (12, 12)), 4, 0), 4, 1).astype(np.int32)
    labels = measure.label(labels, background=0, connectivity=1).astype(np.int32)  # one region a value
    polygons = drop_inner_collinear(node_pixel_edges(polygonised(labels)))
    centres = shapely.get_x(shapely.centroid(polygons))
    groups = [np.flatnonzero(centres < 24), np.flatnonzero(centres >= 24)]
    out = polygons.copy()
    for g in groups:
        out[g] = simplify_coverage(polygons[g], 3.0)
    assert shapely.coverage_is_valid(out)
    assert shapely.get_num_coordinates(out).sum() < shapely.get_num_coordinates(polygons).sum()
    assert np.isclose(shapely.area(out).sum(), labels.size)  # no gap, no overlap
    assert shapely.union_all(out).equals(shapely.union_all(polygons))  # outer boundary kept


def test_simplify_syntax_and_units():
    assert parse_simplify("1.5px") == (1.5, "px") and parse_simplify("2m") == (2.0, "m")
    assert parse_simplify("2") == (2.0, "crs")
    for bad in ("-1", "0px", "2km", "fast"):
        with pytest.raises(OptionError, match="--simplify"):
            parse_simplify(bad)
    utm = rasterio.crs.CRS.from_epsg(32633).to_wkt()
    assert tolerance_px(2.0, "m", Affine(0.5, 0, 0, 0, -0.5, 0), utm, "s.tif") == 4.0
    assert tolerance_px(1.5, "px", Affine(10, 0, 0, 0, -10, 0), utm, "s.tif") == 1.5
    with pytest.raises(OptionError, match="s.tif: --simplify 2m needs a projected CRS"):
        tolerance_px(2.0, "m", Affine(0.001, 0, 0, 0, -0.001, 0), rasterio.crs.CRS.from_epsg(4326).to_wkt(), "s.tif")


def test_default_workers_follow_the_cores_for_the_classical_engine(monkeypatch):
    import geoalps.options as options

    monkeypatch.setattr(options, "available_cores", lambda: 8)
    assert auto_workers(0, "classical", 100) == 8
    assert auto_workers(0, "classical", 3) == 3  # never more processes than tiles
    assert auto_workers(0, "sam", 100) == 1  # torch threads use the cores
    assert auto_workers(2, "classical", 100) == 2


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 300 x 330 px window of the shipped RGB scene: real regions, several tiles of 128 px."""
    folder = tmp_path_factory.mktemp("coverage")
    with rasterio.open(REPO / "sample_data" / "scene_rgb_u8.tif") as src:
        window = rasterio.windows.Window(100, 150, 330, 300)
        data, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    return write_raster(folder / "crop.tif", data, transform=transform, crs=crs)


def _run(scene, out, **extra):
    label(scene, out, raster_out=out.with_suffix(".tif"), engine="classical", quiet=True, tile_size_px=128,
          overlap_px=16, classes=5, workers=1, **extra)
    frame = pyogrio.read_dataframe(out, layer="masks")
    with rasterio.open(out.with_suffix(".tif")) as src:
        raster, transform, nodata = src.read(1).astype(np.int32), src.transform, src.nodata
    return frame, np.where(raster == nodata, -1, raster), transform


def test_labelling_output_is_a_coverage_on_the_label_raster_pixels(scene, tmp_path):
    frame, raster, transform = _run(scene, tmp_path / "plain.gpkg")
    geoms = frame.geometry.values
    assert len(frame) > 60 and (frame["n_fragments"] > 1).any()  # seams were crossed and merged
    assert shapely.coverage_is_valid(geoms)
    assert np.isclose(shapely.area(geoms).sum(), shapely.area(shapely.union_all(geoms)))  # no overlap
    burnt_classes = features.rasterize(zip(geoms, frame["pseudo_class"].tolist()), out_shape=raster.shape,
                                       transform=transform, fill=-1, dtype="int32")
    assert np.array_equal(burnt_classes, raster)
    assert np.allclose(frame["area_px"] * abs(transform.determinant), frame.geometry.area, atol=1e-6)

    simple, simple_raster, _ = _run(scene, tmp_path / "simple.gpkg", simplify="2px")
    assert shapely.coverage_is_valid(simple.geometry.values)
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < shapely.get_num_coordinates(geoms).sum()
    assert np.isclose(simple.geometry.area.sum(), frame.geometry.area.sum())  # same footprint, no gaps
    assert simple["pseudo_class"].tolist() == frame["pseudo_class"].tolist()
    assert simple["instance_id"].tolist() == frame["instance_id"].tolist()


def test_simplify_is_part_of_the_resume_fingerprint(scene, tmp_path):
    from geoalps.errors import ResumeError

    out = tmp_path / "r.gpkg"
    label(scene, out, engine="classical", quiet=True, tile_size_px=128, overlap_px=16, keep_work=True, workers=1)
    with pytest.raises(ResumeError, match="simplify"):
        label(scene, out, engine="classical", quiet=True, tile_size_px=128, overlap_px=16, resume=True, overwrite=True,
              simplify="1px", workers=1)


def test_grid_point_ids_number_vertices_as_a_unique_over_rows():
    """The vertex ids of the clean-up come from one int64 code a vertex; they must be the ids a
    unique over (x, y) rows gives, for pixel grids, negative and map-sized coordinates, and for
    spans whose codes would overflow (then the rows themselves are compared)."""
    from geoalps.objects.coverage import _grid_point_ids

    rng = np.random.default_rng(7)
    for low, high in ((0, 40), (-500, 500), (399_000, 401_000), (-2**40, 2**40), (-2**62, 2**62)):
        keys = rng.integers(low, high, size=(4000, 2))
        keys[1::2] = keys[::2]  # shared vertices, as where polygons meet
        expected = np.unique(keys, axis=0, return_inverse=True)[1].ravel()
        assert np.array_equal(_grid_point_ids(keys), expected), (low, high)
