"""Naming splits a class the examples call by several names, object by object, by the objects'
mean band values read back from the scene (geoalps.classes.object_means)."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import from_origin

from geoalps import label
from http_server import RangeServer
from geoalps.classes.naming import name_classes
from geoalps.classes.object_means import object_band_means
from geoalps.errors import InputError

#: Four squares (20 x 20 px) on a grey ground: two reddish, two bluish, in uint16.
SQUARES = {"red_a": ((8, 8), (2000, 300, 250)), "red_b": ((8, 36), (1900, 320, 260)),
           "blue_a": ((36, 8), (250, 300, 2000)), "blue_b": ((36, 36), (270, 310, 1900))}


@pytest.fixture(scope="module")
def one_class(tmp_path_factory):
    """A labelling output of the squares scene with one pseudo-class (K = 1), so every object is in
    the one class the examples below call by two names."""
    folder = tmp_path_factory.mktemp("split")
    scene = folder / "squares.tif"
    data = np.full((3, 64, 64), 900, dtype=np.uint16)
    for (row, col), values in SQUARES.values():
        for band, value in enumerate(values):
            data[band, row:row + 20, col:col + 20] = value
    data[:, 60:, :] = 0  # a nodata strip: not counted in any object's mean
    profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint16", crs="EPSG:32633",
                   transform=from_origin(500000, 4000064, 1, 1), nodata=0)
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)
    label(scene, folder / "out.gpkg", classes=1, engine="classical", quiet=True)
    return folder, scene, data


def _object_at(objects, row: int, col: int):
    x, y = 500000 + col + 0.5, 4000064 - row - 0.5
    hit = objects[objects.geometry.contains(shapely.Point(x, y))]
    assert len(hit) == 1, (row, col)
    return hit.iloc[0]


def _examples(folder, objects) -> None:
    import geopandas as gpd

    points = [_object_at(objects, 18, 18).geometry.representative_point(),
              _object_at(objects, 46, 18).geometry.representative_point()]
    gpd.GeoDataFrame({"name": ["red", "blue"]}, geometry=points, crs=objects.crs).to_file(folder / "ex.gpkg")


def test_object_means_are_the_pixels_under_each_object(one_class, tmp_path):
    folder, scene, data = one_class
    objects = pyogrio.read_dataframe(folder / "out.gpkg", layer="masks")
    means = object_band_means(folder / "out.gpkg")
    with rasterio.open(scene) as src:
        transform = src.transform
    valid = (data != 0).any(axis=0)
    for _, obj in objects.iterrows():
        inside = rasterize([obj.geometry], out_shape=(64, 64), transform=transform).astype(bool) & valid
        expected = data[:, inside].astype(np.float64).mean(axis=1)
        assert means.pixels[obj["instance_id"]] == inside.sum()
        np.testing.assert_allclose(means.means[obj["instance_id"]], expected, rtol=1e-9)
    # The same objects in another CRS (the scene given by hand: the copy has no recorded scenes)
    # are burnt back on the scene's grid: the same means.
    moved = tmp_path / "moved.gpkg"
    objects.to_crs("EPSG:4326").to_file(moved, layer="masks")
    again = object_band_means(moved, scenes=[scene])
    ids = objects["instance_id"].to_numpy()
    np.testing.assert_array_equal(again.pixels[ids], means.pixels[ids])
    np.testing.assert_allclose(again.means[ids], means.means[ids], rtol=1e-9)


def test_a_class_called_by_two_names_is_split_by_object_spectra(one_class, monkeypatch):
    folder, scene, _ = one_class
    objects = pyogrio.read_dataframe(folder / "out.gpkg", layer="masks")
    assert set(objects["pseudo_class"]) == {0}
    _examples(folder, objects)

    report = name_classes(folder / "out.gpkg", folder / "named.gpkg", examples=folder / "ex.gpkg")
    named = pyogrio.read_dataframe(folder / "named.gpkg", layer="masks")
    by_square = {key: named.loc[named["instance_id"] == _object_at(objects, r + 10, c + 10)["instance_id"]].iloc[0]
                 for key, ((r, c), _) in SQUARES.items()}
    # The examples stand on red_a and blue_a; red_b and blue_b, never shown, follow their colour.
    assert [by_square[k]["class_name"] for k in ("red_a", "red_b", "blue_a", "blue_b")] == ["red", "red", "blue", "blue"]
    assert 0 in report.conflicts and set(report.split[0]) == {"red", "blue"}
    assert sum(report.split[0].values()) == len(objects)
    assert set(report.output_names) == {"red", "blue"}
    assert named.groupby("class_name")["class_id"].nunique().max() == 1
    assert named.groupby("class_id")["class_name"].nunique().max() == 1
    assert set(named["class_id"]) == {0, 1}

    import geoalps.classes.naming as naming

    monkeypatch.setattr(naming, "DISTANCE_CHUNK", 2)  # the distances in chunks of 2 objects: the same split
    chunked = name_classes(folder / "out.gpkg", folder / "chunked.gpkg", examples=folder / "ex.gpkg")
    assert chunked.object_names == report.object_names and chunked.split == report.split

    whole = name_classes(folder / "out.gpkg", folder / "whole.gpkg", examples=folder / "ex.gpkg", split=False)
    kept = pyogrio.read_dataframe(folder / "whole.gpkg", layer="masks")
    assert not whole.object_names and set(kept["class_name"]) == {whole.names.name_of(0)}


def test_a_missing_scene_is_one_line_naming_the_output(one_class, tmp_path):
    folder, scene, _ = one_class
    objects = pyogrio.read_dataframe(folder / "out.gpkg", layer="masks")
    moved = tmp_path / "elsewhere.gpkg"
    objects.to_file(moved, layer="masks")  # no recorded scenes, and none beside it
    _examples(tmp_path, objects)
    with pytest.raises(InputError, match=r"elsewhere\.gpkg: scene squares\.tif not found"):
        name_classes(moved, tmp_path / "n.gpkg", examples=tmp_path / "ex.gpkg")
    assert not (tmp_path / "n.gpkg").exists()
    report = name_classes(moved, tmp_path / "n.gpkg", examples=tmp_path / "ex.gpkg", scenes=[scene])
    assert set(report.split[0]) == {"red", "blue"}


def test_a_scene_labelled_over_http_is_read_back_from_its_url(one_class, tmp_path):
    """The output records the scene's URL; the split reads the objects' means from it (a server on
    127.0.0.1), as naming from a local file does."""
    folder, scene, _ = one_class
    with RangeServer(folder) as server:
        url = f"{server.url}/squares.tif"
        label(url, tmp_path / "remote.gpkg", classes=1, engine="classical", quiet=True)
        objects = pyogrio.read_dataframe(tmp_path / "remote.gpkg", layer="masks")
        _examples(tmp_path, objects)
        report = name_classes(tmp_path / "remote.gpkg", tmp_path / "named.gpkg", examples=tmp_path / "ex.gpkg")
        local = object_band_means(folder / "out.gpkg")
        remote = object_band_means(tmp_path / "remote.gpkg")
    ids = objects["instance_id"].to_numpy()
    np.testing.assert_allclose(remote.means[ids], local.means[ids], rtol=1e-9)
    assert set(report.split[0]) == {"red", "blue"}
