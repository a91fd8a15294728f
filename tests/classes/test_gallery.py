"""The class gallery (geoalps.classes.gallery) on small labelled synthetic scenes."""
from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image

from conftest import scene_with_objects, write_raster
from geoalps import label
from geoalps.classes.gallery import gallery_size_px, make_gallery, read_chip
from geoalps.errors import InputError, OutputError
from geoalps.inputs.scene import open_scene
from geoalps.outputs.style import class_colors

#: Band values (4 bands) of the rectangles; every rectangle is exactly one of these.
COLOURS = [(8000, 1600, 1600, 2000), (1600, 1600, 8800, 3000), (9600, 9600, 2400, 12000), (1200, 7000, 1400, 9000)]
BACKGROUND = (3600, 4800, 3200, 5600)
GRID = 5  # GRID x GRID rectangles


def constant_colour_scene(size_px: int = 400, seed: int = 0):
    """A noisy background with GRID x GRID rectangles, each exactly one of COLOURS.

    Returns the (4, H, W) uint16 array and the boxes as (r0, c0, r1, c1, colour index).
    """
    rng = np.random.default_rng(seed)
    data = np.array(BACKGROUND, dtype=np.float64)[:, None, None] + rng.normal(0, 80, (4, size_px, size_px))
    step = size_px // GRID
    boxes = []
    for i in range(GRID):
        for j in range(GRID):
            r0, c0 = 10 + i * step, 10 + j * step
            r1, c1 = r0 + 26 + 6 * ((i + j) % 3), c0 + 30 + 5 * ((i * 3 + j) % 4)
            k = (i * GRID + j) % len(COLOURS)
            data[:, r0:r1, c0:c1] = np.array(COLOURS[k], dtype=np.float64)[:, None, None]
            boxes.append((r0, c0, r1, c1, k))
    return np.clip(data, 1, 65535).astype(np.uint16), boxes


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A 4-class classical labelling of the constant-colour scene: (gpkg, scene path, boxes)."""
    folder = tmp_path_factory.mktemp("gallery")
    data, boxes = constant_colour_scene()
    scene = write_raster(folder / "boxes.tif", data)
    gpkg = folder / "o.gpkg"
    # ALPS's area threshold drops the background field (the classical engine keeps it by default),
    # so every object is one rectangle
    label(scene, gpkg, engine="classical", classes=4, max_area_frac=0.3, quiet=True)
    return gpkg, scene, boxes


def _objects(gpkg):
    return pyogrio.read_dataframe(gpkg, layer="masks")


def test_counts_and_area_shares_are_those_of_the_geopackage(labelled, tmp_path):
    gpkg, _, boxes = labelled
    before = gpkg.read_bytes()
    report = make_gallery(labels_path=gpkg, path=tmp_path / "g.png")  # the labelling output is read, not written
    assert gpkg.read_bytes() == before
    objects = _objects(gpkg)
    assert len(objects) == len(boxes)  # every rectangle is one object, nothing else
    assert report["objects"] == len(objects)
    assert report["n_classes"] == 4
    total = objects["area"].sum()
    for summary in report["classes"]:
        members = objects[objects.pseudo_class == summary["class"]]
        assert summary["count"] == len(members)
        assert summary["area_share"] == pytest.approx(members["area"].sum() / total, rel=1e-9)
        assert summary["name"] == f"class {summary['class']}"
        assert summary["color"] == "#{:02x}{:02x}{:02x}".format(*class_colors(4)[summary["class"]])
    assert sum(s["area_share"] for s in report["classes"]) == pytest.approx(1.0)


def test_signature_is_the_mean_of_the_rectangles_under_the_class(labelled, tmp_path):
    gpkg, scene, boxes = labelled
    report = make_gallery(gpkg, tmp_path / "g.png")
    objects = _objects(gpkg)
    transform = open_scene(scene).transform
    # independent: each object is one rectangle of a known colour, so a class's mean of every
    # band is the pixel-weighted mean of its rectangles' colours
    centres = [transform * ((c0 + c1) / 2, (r0 + r1) / 2) for r0, c0, r1, c1, _ in boxes]
    sums, pixels = np.zeros((4, 4)), np.zeros(4)
    for geometry, k in zip(objects.geometry, objects.pseudo_class):
        r0, c0, r1, c1, colour = next(b for b, (x, y) in zip(boxes, centres) if geometry.contains(shapely.Point(x, y)))
        n_px = (r1 - r0) * (c1 - c0)
        sums[k] += n_px * np.array(COLOURS[colour])
        pixels[k] += n_px
    for summary in report["classes"]:
        k = summary["class"]
        assert summary["signature_px"] == pixels[k]
        np.testing.assert_allclose(summary["signature"], sums[k] / pixels[k], rtol=1e-9)


def test_nearest_chips_are_the_smallest_class_distances_and_random_ones_are_seeded(labelled, tmp_path):
    gpkg, _, _ = labelled
    report = make_gallery(gpkg, tmp_path / "g.png", chips_per_class=3, random_chips=1, seed=7)
    objects = _objects(gpkg).set_index("instance_id")
    for summary in report["classes"]:
        members = objects[objects.pseudo_class == summary["class"]]
        nearest, drawn = summary["nearest_ids"], summary["random_ids"]
        assert len(nearest) == min(2, len(members))
        assert len(drawn) == min(1, len(members) - len(nearest))
        others = members.drop(index=nearest)
        assert members.loc[nearest, "class_distance"].max() <= others["class_distance"].min()
        assert set(drawn) <= set(others.index)  # random chips come from the rest of the class
        assert summary["chip_ids"] == nearest + drawn
    again = make_gallery(gpkg, tmp_path / "again.png", chips_per_class=3, random_chips=1, seed=7)
    assert [s["chip_ids"] for s in again["classes"]] == [s["chip_ids"] for s in report["classes"]]


def test_png_has_the_layout_size_and_the_class_colours(labelled, tmp_path):
    gpkg, scene, _ = labelled
    report = make_gallery(gpkg, tmp_path / "g.png", chip_px=64)
    image = Image.open(tmp_path / "g.png")
    assert image.format == "PNG"
    assert image.size == (report["width_px"], report["height_px"])
    assert image.size == gallery_size_px(4, 6, 64, (400, 400))
    assert report["width_px"] == 2 * 12 + 200 + 220 + 6 * (64 + 8)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    for rgb in class_colors(4):  # each class's swatch, in exactly the QGIS style's colour
        assert (pixels == rgb).all(axis=1).sum() >= 300, rgb
    assert report["scenes"] == {"boxes.tif": str(scene)}
    assert report["overview_scene"] == "boxes.tif"


def test_html_inlines_the_picture_and_links_nothing(labelled, tmp_path):
    gpkg, _, _ = labelled
    report = make_gallery(gpkg, tmp_path / "g.html")
    page = (tmp_path / "g.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    picture = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    assert picture.size == (report["width_px"], report["height_px"])
    for summary in report["classes"]:
        assert f"<td>{summary['count']}</td>" in page


def test_class_names_are_shown_when_the_layer_has_them(labelled, tmp_path):
    gpkg, scene, _ = labelled
    objects = _objects(gpkg)
    names = {0: "red roofs", 1: "blue <tarps>", 2: "yellow & bright", 3: "mixed"}
    objects["class_name"] = objects.pseudo_class.map(names)
    named = tmp_path / "named.gpkg"
    pyogrio.write_dataframe(objects, named, layer="masks")
    report = make_gallery(named, tmp_path / "named.html", scenes=[scene])
    assert [s["name"] for s in report["classes"]] == [names[k] for k in range(4)]
    page = (tmp_path / "named.html").read_text()
    assert "blue &lt;tarps&gt;" in page and "yellow &amp; bright" in page


def test_reads_are_one_window_a_chip_and_one_decimated_read(labelled, tmp_path, monkeypatch):
    gpkg, _, _ = labelled
    reads, frames = [], []
    real_read, real_frame = rasterio.io.DatasetReader.read, pyogrio.read_dataframe

    def spy_read(self, *args, **kwargs):
        reads.append(("window" if kwargs.get("window") is not None else "whole", kwargs.get("out_shape")))
        return real_read(self, *args, **kwargs)

    def spy_frame(*args, **kwargs):
        frames.append(kwargs)
        return real_frame(*args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy_read)
    monkeypatch.setattr(pyogrio, "read_dataframe", spy_frame)
    report = make_gallery(gpkg, tmp_path / "g.png", chips_per_class=2, random_chips=1, chip_px=48)
    assert report["chips"] == 8 < report["objects"]  # 2 a class, far fewer than the objects
    windows = [shape for kind, shape in reads if kind == "window"]
    assert len(windows) == report["chips"]
    assert all(shape == (3, 48, 48) for shape in windows)  # three view bands, resampled
    # the overview's decimated read, plus the statistics read open_scene makes
    assert [kind for kind, _ in reads].count("whole") == 2
    attributes = [f for f in frames if f.get("read_geometry") is False]
    assert len(attributes) == 1 and "instance_id" in attributes[0]["columns"]
    chip_geometries = [f for f in frames if f.get("fids") is not None and len(f["fids"]) == report["chips"]]
    assert len(chip_geometries) >= 1
    assert all(f.get("read_geometry") is False or f.get("fids") is not None for f in frames)


def test_chip_is_centred_on_the_object_and_shows_its_pixels(labelled):
    gpkg, scene_path, _ = labelled
    scene = open_scene(scene_path)
    objects = _objects(gpkg)
    middle = shapely.Point(scene.transform * (scene.width / 2, scene.height / 2))
    geometry = objects.geometry.iloc[int(np.argmin(objects.geometry.distance(middle)))]  # away from the edges
    image, outlines = read_chip(scene, geometry, chip_px=64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    ring = outlines[0]
    assert (ring.min(axis=0) + ring.max(axis=0)) / 2 == pytest.approx((32, 32), abs=1.5)
    # the centre of the chip is inside the rectangle: its colour, stretched like the scene
    x, y = geometry.centroid.x, geometry.centroid.y
    with rasterio.open(scene_path) as src:
        value = next(src.sample([(x, y)]))
    expected = [np.clip((value[b] - scene.stats.low[b]) * 255 / (scene.stats.high[b] - scene.stats.low[b]), 0, 255)
                for b in range(3)]
    np.testing.assert_allclose(image[32, 32], expected, atol=1)


def test_scene_is_found_through_the_metadata_and_a_missing_one_is_a_one_line_error(tmp_path, monkeypatch):
    data, _ = constant_colour_scene(200)
    scene = write_raster(tmp_path / "gone.tif", data)
    out = tmp_path / "out"
    out.mkdir()
    gpkg = out / "o.gpkg"
    label(scene, gpkg, engine="classical", classes=2, quiet=True)
    monkeypatch.chdir(out)  # neither beside the GeoPackage nor here: only geoalps_scenes knows
    assert make_gallery(gpkg, "first.png")["scenes"] == {"gone.tif": str(scene)}
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.move(scene, kept / "gone.tif")
    with pytest.raises(InputError) as error:
        make_gallery(gpkg, "g.png")
    assert str(error.value) == f"{gpkg}: scene gone.tif not found (give it with --scene)"
    assert not (out / "g.png").exists()
    report = make_gallery(gpkg, "g.png", scenes=[kept / "gone.tif"])
    assert report["scenes"] == {"gone.tif": str(kept / "gone.tif")}


def test_existing_output_is_refused_unless_overwrite(labelled, tmp_path):
    gpkg, _, _ = labelled
    target = tmp_path / "g.png"
    target.write_bytes(b"old")
    with pytest.raises(OutputError):
        make_gallery(gpkg, target)
    assert target.read_bytes() == b"old"
    make_gallery(gpkg, target, overwrite=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]  # no temporary files left


def test_unreadable_geopackage_is_an_input_error(tmp_path):
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(b"not a geopackage")
    with pytest.raises(InputError, match="broken.gpkg"):
        make_gallery(broken, tmp_path / "g.png")
    with pytest.raises(InputError, match="file not found"):
        make_gallery(tmp_path / "absent.gpkg", tmp_path / "g.png")


def test_chips_come_from_the_scene_that_holds_the_object(tmp_path, monkeypatch):
    a_data, _ = constant_colour_scene(200)
    a = write_raster(tmp_path / "a.tif", a_data)
    b = write_raster(tmp_path / "b.tif", scene_with_objects(160, 160, [(20, 20, 60, 70), (90, 90, 130, 140)],
                                                           bands=4, dtype="uint16"),
                     crs="EPSG:32634", transform=Affine(0.5, 0, 300000, 0, -0.5, 5000000))
    gpkg = tmp_path / "ab.gpkg"
    label([a, b], gpkg, engine="classical", classes=3, quiet=True)
    opened = []
    real_read = rasterio.io.DatasetReader.read

    def spy_read(self, *args, **kwargs):
        if kwargs.get("window") is not None:
            opened.append(self.name.rsplit("/", 1)[-1])
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy_read)
    report = make_gallery(gpkg, tmp_path / "g.png", chips_per_class=20, random_chips=0)
    objects = _objects(gpkg).set_index("instance_id")
    shown = [i for s in report["classes"] for i in s["chip_ids"]]
    assert len(shown) == len(objects)  # every object is a chip here
    assert sorted(opened) == sorted(objects.loc[shown, "scene"])
    assert report["overview_scene"] == "a.tif"
    assert set(report["scenes"]) == {"a.tif", "b.tif"}


# -- band roles (issue 23 item 3) ---------------------------------------------------------------

def _natural_colour(scene_path, out_shape) -> np.ndarray:
    """An independent natural-colour picture of a B,G,R,N scene: bands 3, 2, 1 read decimated to
    ``out_shape``, each stretched between its 2nd and 98th percentile of the valid pixels."""
    with rasterio.open(scene_path) as src:
        data = src.read(out_shape=(src.count,) + tuple(out_shape)).astype(np.float64)
        nodata = src.nodata
    valid = np.ones(out_shape, bool) if nodata is None else ~(data == nodata).all(axis=0)
    out = np.zeros(tuple(out_shape) + (3,), np.uint8)
    for channel, band in enumerate((3, 2, 1)):
        lo, hi = np.percentile(data[band - 1][valid], (2, 98))
        out[..., channel] = np.clip(np.rint((data[band - 1] - lo) * 255 / (hi - lo)), 0, 255)
    out[~valid] = 0
    return out


def _gallery_with_pictures(gpkg, path, monkeypatch):
    """make_gallery's report, its overview record and the x tick labels of its signature axes."""
    from geoalps.classes import gallery

    seen = {}
    overview = gallery._overview
    monkeypatch.setattr(gallery, "_overview", lambda *a, **k: seen.setdefault("overview", overview(*a, **k)))
    write = gallery._write
    monkeypatch.setattr(gallery, "_write", lambda figure, *a: (seen.setdefault("figure", figure), write(figure, *a)))
    report = make_gallery(gpkg, path)
    signatures = [ax for ax in seen["figure"].axes if ax.lines and not ax.images]  # chips hold images
    ticks = [[t.get_text() for t in ax.get_xticklabels()] for ax in signatures]
    return report, seen["overview"], ticks


def _assert_natural_colour_and_named_axes(report, overview, ticks, scene_path, names):
    assert report["bands"] == [3, 2, 1]
    assert report["band_labels"] == names
    picture = overview.scene_image
    expected = _natural_colour(scene_path, picture.shape[:2])
    assert np.abs(picture.astype(int) - expected.astype(int)).max() <= 1  # rounding of the stretch
    assert ticks and all(t == names for t in ticks)  # every class's signature axis


def test_zion_like_gallery_is_natural_colour_with_named_bands(tmp_path, monkeypatch):
    """A B,G,R,N file whose descriptions say so: the overview is red, green, blue = bands 3, 2, 1
    and the signature axes read blue, green, red, nir."""
    data, _ = constant_colour_scene(200)
    scene = write_raster(tmp_path / "bgrn.tif", data)
    with rasterio.open(scene, "r+") as dst:
        for band, text in enumerate(("blue (B2)", "green (B3)", "red (B4)", "nir (B5)"), start=1):
            dst.set_band_description(band, text)
    gpkg = tmp_path / "o.gpkg"
    label(scene, gpkg, engine="classical", classes=3, quiet=True)
    report, overview, ticks = _gallery_with_pictures(gpkg, tmp_path / "g.png", monkeypatch)
    _assert_natural_colour_and_named_axes(report, overview, ticks, scene, ["blue", "green", "red", "nir"])


def test_band_names_recorded_by_label_name_the_gallery_bands(tmp_path, monkeypatch):
    """A file without descriptions labelled with --band-names: the gallery takes the roles the
    run recorded in the layer metadata."""
    data, _ = constant_colour_scene(200)
    scene = write_raster(tmp_path / "plain.tif", data)
    gpkg = tmp_path / "o.gpkg"
    label(scene, gpkg, engine="classical", classes=3, quiet=True, band_names="blue,green,red,nir")
    report, overview, ticks = _gallery_with_pictures(gpkg, tmp_path / "g.png", monkeypatch)
    _assert_natural_colour_and_named_axes(report, overview, ticks, scene, ["blue", "green", "red", "nir"])


def test_unknown_bands_are_numbered(labelled, tmp_path, monkeypatch):
    gpkg, _, _ = labelled  # 4 bands, no descriptions, gray/undefined colour interpretation
    report, _, ticks = _gallery_with_pictures(gpkg, tmp_path / "g.png", monkeypatch)
    assert report["bands"] == [1, 2, 3]
    assert report["band_labels"] == ["band 1", "band 2", "band 3", "band 4"]
    assert ticks and all(t == ["1", "2", "3", "4"] for t in ticks)


def test_zion_gallery_is_natural_colour_with_named_bands(realdata, tmp_path, monkeypatch):
    """The Landsat-8 Zion file (B2 blue, B3 green, B4 red, B5 NIR, described so), a 300 px
    square of it labelled: natural colour from bands 3, 2, 1, axes named by the descriptions."""
    scene = realdata / "multispectral" / "landsat8_zion_bgrn_u16.tif"
    crop = tmp_path / "zion_crop.tif"
    with rasterio.open(scene) as src:
        window = rasterio.windows.Window(400, 500, 300, 300)
        profile = {**src.profile, "width": 300, "height": 300, "transform": src.window_transform(window)}
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    gpkg = tmp_path / "zion.gpkg"
    label(crop, gpkg, engine="classical", classes=6, quiet=True)
    report, overview, ticks = _gallery_with_pictures(gpkg, tmp_path / "zion.png", monkeypatch)
    _assert_natural_colour_and_named_axes(report, overview, ticks, crop, ["blue", "green", "red", "nir"])


@pytest.mark.parametrize("failing", ["overview", "chips"])
def test_a_scene_read_failure_names_the_scene_as_shown_never_its_secret(labelled, tmp_path, monkeypatch, failing):
    """The gallery reads a scene given as a signed URL (a server on 127.0.0.1); when its pixels
    cannot be read (the overview's decimated read, or a chip's), the error is the raster door's
    one line naming the URL with its query redacted, not the URL with its token."""
    from rasterio.errors import RasterioIOError

    import geoalps.inputs.scene as scene_module
    from http_server import RangeServer

    gpkg, scene, _ = labelled
    secret = "sig=deadbeef42"
    real_read = scene_module._read
    overview_px = gallery_size_px.__globals__["OVERVIEW_PX"]

    def failing_read(src, window, indexes, boundless, fill_value, out_shape=None, resampling=None):
        is_overview = window is None and out_shape is not None and max(out_shape[1:]) <= overview_px
        if out_shape is not None and (is_overview if failing == "overview" else window is not None):
            raise RasterioIOError("simulated: block read failed")
        return real_read(src, window, indexes, boundless, fill_value, out_shape, resampling)

    monkeypatch.setattr(scene_module, "_read", failing_read)
    with RangeServer(scene.parent, tokens={scene.name: secret}) as server:
        url = f"{server.url}/{scene.name}?{secret}"
        with pytest.raises(InputError) as caught:
            make_gallery(gpkg, tmp_path / f"{failing}.png", scenes=[url], chips_per_class=1, random_chips=0)
    message = str(caught.value)
    assert "deadbeef42" not in message and "\n" not in message
    assert message.startswith(f"{server.url}/{scene.name}?***: cannot read pixels"), message
    assert not (tmp_path / f"{failing}.png").exists()


def test_a_scene_given_as_a_signed_url_is_read_and_its_secret_is_nowhere(labelled, tmp_path):
    """--scene with a signed URL (a server on 127.0.0.1 that wants the token): the gallery reads it,
    and neither the report nor the HTML holds the token."""
    from http_server import RangeServer

    gpkg, scene, _ = labelled
    secret = "sig=deadbeef42"
    with RangeServer(scene.parent, tokens={scene.name: secret}) as server:
        url = f"{server.url}/{scene.name}?{secret}"
        report = make_gallery(gpkg, tmp_path / "g.html", scenes=[url], chips_per_class=1, random_chips=0)
    assert report["chips"] > 0 and report["scenes"] == {scene.name: f"{server.url}/{scene.name}?***"}
    assert "deadbeef42" not in (tmp_path / "g.html").read_text()
