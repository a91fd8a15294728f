"""Output formats by extension (geoalps.outputs.formats): every format holds the GeoPackage's rows
and attributes, the scenes record and a QGIS style; unknown extensions fail before any work;
writes are atomic, sidecars included; the commands that read outputs read every format."""
from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from conftest import REPO, write_raster
from geoalps import label
from geoalps.classes.gallery import make_gallery
from geoalps.classes.naming import name_classes
from geoalps.errors import OutputError
from geoalps.evaluation import evaluate_pseudo_labels
from geoalps.outputs import vector
from geoalps.outputs.formats import SHAPEFILE_FIELDS, metadata_sidecar, output_format, style_sidecar
from geoalps.outputs.vector import SCENES_METADATA, layer_metadata, read_layer

FAST = dict(engine="classical", quiet=True, tile_size_px=128, overlap_px=16, classes=4)
OTHER_FORMATS = ("parquet", "fgb", "geojson", "json", "shp")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 240 x 200 px window of the shipped RGB scene (real regions, several tiles)."""
    import rasterio

    folder = tmp_path_factory.mktemp("formats")
    with rasterio.open(REPO / "sample_data" / "scene_rgb_u8.tif") as src:
        window = rasterio.windows.Window(200, 150, 240, 200)
        data, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    return write_raster(folder / "crop.tif", data, transform=transform, crs=crs)


@pytest.fixture(scope="module")
def outputs(scene, tmp_path_factory):
    """The same run written as every format (GeoPackage first): {extension: path}."""
    folder = tmp_path_factory.mktemp("formats_out")
    written = {}
    for ext in ("gpkg", *OTHER_FORMATS):
        written[ext] = folder / f"objects_{ext}.{ext}"  # own stems: each gets its own .qml
        label(scene, written[ext], **FAST)
    return written


def _sorted(frame):
    return frame.sort_values("instance_id").reset_index(drop=True)


@pytest.mark.parametrize("ext", OTHER_FORMATS)
def test_every_format_reads_back_the_geopackage_rows(outputs, ext):
    reference = _sorted(read_layer(outputs["gpkg"]))
    frame = _sorted(read_layer(outputs[ext]))
    assert len(reference) > 10
    assert list(frame.columns) == list(reference.columns)
    attributes = [c for c in reference.columns if c != "geometry"]
    assert frame[attributes].equals(reference[attributes]), ext
    assert frame.crs == reference.crs
    # Same polygons vertex for vertex (Shapefile stores rings clockwise: compare normalised).
    assert shapely.equals_exact(shapely.normalize(frame.geometry.values),
                                shapely.normalize(reference.geometry.values), 0).all()
    assert set(frame.geometry.geom_type) == {"MultiPolygon"}
    # The scenes record travels with every format.
    assert json.loads(layer_metadata(outputs[ext])[SCENES_METADATA]) == json.loads(
        layer_metadata(outputs["gpkg"])[SCENES_METADATA])


@pytest.mark.parametrize("ext", OTHER_FORMATS)
def test_plain_geopandas_reads_every_format(outputs, ext):
    """No geoalps needed to read an output: geopandas (pyogrio / pyarrow) opens it as is."""
    path = outputs[ext]
    frame = gpd.read_parquet(path) if ext == "parquet" else gpd.read_file(path)
    reference = read_layer(outputs["gpkg"])
    assert len(frame) == len(reference)
    expected = [SHAPEFILE_FIELDS.get(c, c) if ext == "shp" else c for c in reference.columns]
    assert list(frame.columns) == expected
    assert frame.crs == reference.crs
    assert np.isclose(frame.geometry.area.sum(), reference.geometry.area.sum())


def test_style_is_in_the_geopackage_or_a_qml_beside_the_file(outputs):
    assert not style_sidecar(outputs["gpkg"]).exists()
    styles = pyogrio.read_dataframe(outputs["gpkg"], layer="layer_styles", read_geometry=False)
    assert styles["f_table_name"].tolist() == ["masks"]
    for ext in OTHER_FORMATS:
        qml = style_sidecar(outputs[ext]).read_text()
        field = "pseudo_cls" if ext == "shp" else "pseudo_class"  # the field as the file names it
        assert f'attr="{field}"' in qml and qml.count("<category ") == 4
    # Metadata where the format has none: a JSON sidecar; GeoParquet/FlatGeobuf hold their own.
    assert metadata_sidecar(outputs["geojson"]).is_file() and metadata_sidecar(outputs["shp"]).is_file()
    assert not metadata_sidecar(outputs["parquet"]).exists() and not metadata_sidecar(outputs["fgb"]).exists()
    assert SCENES_METADATA in pyogrio.read_info(outputs["fgb"])["layer_metadata"]


def test_shapefile_names_are_fitted_the_same_way_every_time():
    assert all(len(short) <= 10 for short in SHAPEFILE_FIELDS.values())
    assert len(set(SHAPEFILE_FIELDS.values())) == len(SHAPEFILE_FIELDS)
    shp = output_format("x.shp")
    for long, short in SHAPEFILE_FIELDS.items():
        assert shp.stored(long) == short and shp.canonical(short) == long
    assert shp.stored("class_name") == "class_name"


def test_commands_that_read_outputs_take_every_format(outputs, scene, tmp_path):
    """gallery, naming and evaluation on non-GeoPackage outputs give what they give on the GeoPackage."""
    summary = {}
    for ext in ("gpkg", "parquet", "shp"):
        made = make_gallery(str(outputs[ext]), str(tmp_path / f"g_{ext}.png"))
        summary[ext] = [(c["count"], round(c["area_share"], 9)) for c in made["classes"]]
    assert summary["parquet"] == summary["gpkg"] == summary["shp"]
    for ext in ("gpkg", "fgb"):
        name_classes(outputs[ext], tmp_path / f"named_{ext}.parquet", names="0=a,1=b,2=a")
    a, b = (_sorted(read_layer(tmp_path / f"named_{e}.parquet")) for e in ("gpkg", "fgb"))
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert sorted(set(a["class_name"])) == ["a", "b", "class 3"]
    # evaluation of each output against a truth raster made from the GeoPackage itself: perfect
    truth = tmp_path / "truth.tif"
    label(scene, tmp_path / "for_truth.gpkg", raster_out=truth, **FAST)
    scores = {ext: evaluate_pseudo_labels(outputs[ext], truth) for ext in ("gpkg", "geojson", "shp", "parquet")}
    for ext, result in scores.items():
        assert result["valid_pixels"] == scores["gpkg"]["valid_pixels"] > 10_000, ext
        assert result["pixel_accuracy"] == 1.0 and result["unpredicted_pixels"] == 0, ext


def test_unknown_extension_is_an_error_before_any_work(scene, tmp_path, monkeypatch):
    import geoalps.labelling.run as run

    monkeypatch.setattr(run, "_pass1", lambda *a, **k: pytest.fail("tiles ran"))
    for name in ("x.txt", "noextension"):
        with pytest.raises(OutputError, match=rf"{name}: unknown output format .*\.gpkg, \.parquet"):
            label(scene, tmp_path / name, **FAST)
    assert not list(tmp_path.iterdir())


def test_cli_unknown_extension_is_one_line(scene, tmp_path):
    done = subprocess.run([sys.executable, "-m", "geoalps", "label", str(scene), "-o", str(tmp_path / "x.txt"),
                           "--engine", "classical", "-q"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown output format (.txt)" in lines[0], done.stderr


def test_style_sidecar_clash_with_the_label_raster_is_refused(scene, tmp_path):
    with pytest.raises(OutputError, match="would be the label raster's style"):
        label(scene, tmp_path / "out.fgb", raster_out=tmp_path / "out.tif", **FAST)


@pytest.mark.parametrize("ext", ("shp", "parquet", "fgb", "gpkg"))
def test_a_failed_write_leaves_no_file_and_no_sidecar(scene, tmp_path, monkeypatch, ext):
    """A failure after some batches went out (here in the third batch) leaves nothing behind."""
    monkeypatch.setattr(vector, "BATCH_ROWS", 5)
    calls = {"n": 0}
    real = vector.with_ids

    def failing(frame, first_id):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(frame, first_id)

    monkeypatch.setattr(vector, "with_ids", failing)
    many = gpd.GeoDataFrame({"pseudo_class": np.arange(30, dtype=np.int32)},
                            geometry=[shapely.box(i, 0, i + 1, 1) for i in range(30)], crs="EPSG:32633")
    with pytest.raises(OSError, match="disk full"):
        vector.write_output((many.iloc[i:i + 5] for i in range(0, 30, 5)), tmp_path / f"out.{ext}", many.crs.to_wkt(),
                            style=vector.LayerStyle(3), metadata={SCENES_METADATA: "{}"})
    assert calls["n"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", ("parquet", "fgb", "shp"))
def test_streamed_in_small_batches_gives_the_same_file(monkeypatch, tmp_path, ext):
    """Frames are written as they come; many small batches give the rows of one big one."""
    many = gpd.GeoDataFrame({"pseudo_class": np.arange(50, dtype=np.int32) % 7, "scene": "s"},
                            geometry=[shapely.box(i, 0, i + 1, 1 + i % 3) for i in range(50)], crs="EPSG:32633")
    vector.write_output([many], tmp_path / f"one.{ext}", many.crs.to_wkt())
    vector.write_output((many.iloc[i:i + 3] for i in range(0, 50, 3)), tmp_path / f"many.{ext}", many.crs.to_wkt())
    one, parts = (_sorted(read_layer(tmp_path / f"{n}.{ext}")) for n in ("one", "many"))
    assert one.drop(columns="geometry").equals(parts.drop(columns="geometry"))
    assert one["instance_id"].tolist() == list(range(1, 51))
    assert shapely.equals(one.geometry.values, parts.geometry.values).all()
    # batched reads give the rows in file order, batch by batch
    batches = list(vector.read_layer_batches(tmp_path / f"many.{ext}", batch_rows=7))
    assert [len(b) for b in batches] == [7] * 7 + [1]


def test_empty_output_has_the_full_schema_in_every_format(tmp_path):
    """(Not GeoJSON: a feature collection with no features has no fields to declare.)"""
    for ext in ("gpkg", "parquet", "fgb", "shp"):
        vector.write_output([], tmp_path / f"empty.{ext}", "EPSG:32633")
        frame = read_layer(tmp_path / f"empty.{ext}")
        assert len(frame) == 0
        assert list(frame.columns)[:2] == ["instance_id", "pseudo_class"] and "area" in frame.columns, ext


def test_parquet_reads_by_bbox_and_fids(outputs):
    reference = read_layer(outputs["gpkg"])
    x0, y0, x1, y1 = reference.total_bounds
    box = (x0, y0, x0 + 0.4 * (x1 - x0), y0 + 0.4 * (y1 - y0))
    expected = sorted(reference[reference.intersects(shapely.box(*box))]["instance_id"])
    got = read_layer(outputs["parquet"], bbox=box, columns=["instance_id"])
    assert sorted(got["instance_id"]) == expected and 0 < len(expected) < len(reference)
    picked = read_layer(outputs["parquet"], fids=[5, 2], fid_as_index=True, columns=["instance_id"])
    assert picked.index.tolist() == [5, 2] and picked["instance_id"].tolist() == [6, 3]
