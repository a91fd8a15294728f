"""Band roles in a labelling run (issue 23 item 3): the engine's view and the spectral indices
follow what the bands are (descriptions, --band-names), never a guessed band order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import write_raster
from geoalps import label
from geoalps.errors import ResumeError
from geoalps.inputs.bands import resolve_bands
from geoalps.inputs.scene import open_scene
from geoalps.inputs.tiles import plan_tiles
from geoalps.labelling.tile_work import TileTask, process_tiles
from geoalps.options import LabelOptions
from floats import assert_float32_close

#: Band values (blue, green, red, nir) of the background and of one rectangle, in file order
#: B,G,R,N as in Landsat-8 B2..B5, Sentinel-2 B2,B3,B4,B8 or PlanetScope 4-band stacks.
BACKGROUND = (1000, 1500, 1200, 4000)  # vegetation: NIR far above red
BOX = (3000, 2800, 3500, 2600)  # bare rock: red above NIR
BOX_AT = (slice(30, 70), slice(40, 90))


def bgrn_scene(path: Path, descriptions=("blue (B2)", "green (B3)", "red (B4)", "nir (B5)")) -> Path:
    """A 128 px square 4-band uint16 B,G,R,N scene of two flat regions (exact means), with
    ``descriptions`` (None: none) as the Landsat-8 Zion file has them."""
    data = np.empty((4, 128, 128), np.uint16)
    data[:] = np.array(BACKGROUND, np.uint16)[:, None, None]
    data[(slice(None),) + BOX_AT] = np.array(BOX, np.uint16)[:, None, None]
    write_raster(path, data)
    if descriptions:
        with rasterio.open(path, "r+") as dst:
            for band, text in enumerate(descriptions, start=1):
                dst.set_band_description(band, text)
    return path


def _one_tile(scene_path: Path, band_names: str | None = None):
    """(engine view, the tile's result) of the whole scene as one tile, spectral + index blocks."""
    scene = open_scene(scene_path, band_names=band_names)
    options = LabelOptions(engine="classical", max_area_frac=1.0, tile_size_px=128, overlap_px=0,
                           band_names=band_names).validated()
    view = resolve_bands(options.bands, scene.count, scene.shown, scene.band_roles)
    return view, process_tiles(TileTask(scene, tuple(plan_tiles(scene.width, scene.height, 128, 0)), options, view,
                                        ("spectral", "index")))[0]


def _nd(a: float, b: float) -> float:
    return (a - b) / (a + b)


def _by_region(result):
    """The index rows of the background object and of the rectangle (the larger is the background)."""
    assert len(result) == 2, result.area_px
    background = int(np.argmax(result.area_px))
    return result.features["index"][background], result.features["index"][1 - background]


@pytest.mark.parametrize("how", ["descriptions", "band-names"])
def test_bgrn_scene_views_bands_3_2_1_and_ndvi_uses_bands_4_and_3(tmp_path, how):
    """Zion-like B,G,R,N: the engine sees red, green, blue = bands 3, 2, 1, and NDVI is
    (band 4 - band 3) / (band 4 + band 3), NDWI (band 2 - band 4) / (band 2 + band 4), whether the
    roles come from the band descriptions or from --band-names on a file without any."""
    if how == "descriptions":
        view, result = _one_tile(bgrn_scene(tmp_path / "zion_like.tif"))
    else:
        view, result = _one_tile(bgrn_scene(tmp_path / "plain.tif", descriptions=None), "blue,green,red,nir")
    assert view == (3, 2, 1)
    background, box = _by_region(result)
    for got, (blue, green, red, nir) in ((background, BACKGROUND), (box, BOX)):
        assert_float32_close(got, [_nd(nir, red), _nd(green, nir)])
    assert background[0] > 0.5 and box[0] < 0  # NDVI from blue (band 1) would be > 0 on both


def test_a_4_band_scene_without_names_gets_role_free_ratios_and_one_warning(tmp_path, capsys):
    """No descriptions, gray/undefined colour interpretation: the view stays 1,2,3, the index
    block holds the ratios that need no roles (the spectrum's range ratio, the last band against
    the first), not NDVI, and one warning line a run (not a tile) says how to name the bands."""
    path = bgrn_scene(tmp_path / "unnamed.tif", descriptions=None)
    with rasterio.open(path) as src:  # what GDAL says of a 4-band uint16 GeoTIFF: nothing of use
        assert [c.name for c in src.colorinterp] == ["gray", "undefined", "undefined", "undefined"]
    view, result = _one_tile(path)
    assert view == (1, 2, 3)
    assert len(result) == 2 and result.features["index"].shape == (2, 2)
    background, box = _by_region(result)
    for got, values in ((background, BACKGROUND), (box, BOX)):
        assert_float32_close(got, [_nd(max(values), min(values)), _nd(values[-1], values[0])])
    assert result.features["spectral"].any()  # the band means are still there
    label(path, tmp_path / "o.gpkg", engine="classical", classes=2, tile_size_px=64, overlap_px=8, workers=1)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "band roles unknown" in line]
    assert len(warnings) == 1, warnings  # 9 tiles, one line
    assert warnings[0].startswith(f"geoalps: warning: {path}: band roles unknown")
    assert "--band-names blue,green,red,nir" in warnings[0]


def test_named_bands_give_no_warning(tmp_path, capsys):
    path = bgrn_scene(tmp_path / "unnamed.tif", descriptions=None)
    label(path, tmp_path / "o.gpkg", engine="classical", classes=2, workers=1, band_names="blue,green,red,nir")
    assert "band roles unknown" not in capsys.readouterr().err


def test_resume_with_other_band_names_is_refused(tmp_path):
    """--band-names changes the tiles' features and view: it is part of the work folder's fingerprint."""
    path = bgrn_scene(tmp_path / "unnamed.tif", descriptions=None)
    out = tmp_path / "o.gpkg"
    label(path, out, engine="classical", classes=2, workers=1, quiet=True, keep_work=True,
          band_names="blue,green,red,nir")
    out.unlink()  # as after an interruption: the work folder of finished tiles, no output
    with pytest.raises(ResumeError, match=r"with other settings \(.*band_names"):
        label(path, out, engine="classical", classes=2, workers=1, quiet=True, resume=True,
              band_names="red,green,blue,nir")
    label(path, out, engine="classical", classes=2, workers=1, quiet=True, resume=True,
          band_names="blue,green,red,nir")
    assert out.exists()


def test_the_outputs_record_the_band_roles(tmp_path):
    import json

    from geoalps.outputs.vector import BAND_ROLES_METADATA, layer_metadata

    path = bgrn_scene(tmp_path / "unnamed.tif", descriptions=None)
    out, raster = tmp_path / "o.gpkg", tmp_path / "o.tif"
    label(path, out, raster_out=raster, engine="classical", classes=2, workers=1, quiet=True,
          band_names="blue,green,red,other")
    recorded = json.loads(layer_metadata(out)[BAND_ROLES_METADATA])
    assert recorded == {"unnamed.tif": ["blue", "green", "red", "other"]}
    with rasterio.open(raster) as src:
        assert json.loads(src.tags()[BAND_ROLES_METADATA]) == ["blue", "green", "red", "other"]


def test_a_work_folder_from_before_the_role_free_ratios_is_not_resumed(tmp_path):
    """Tiles of a scene without band names held a zero index block before the role-free ratios:
    a work folder whose fingerprint does not name what the block holds (an older geoalps) is
    refused instead of mixing its tiles' features with new ones; the same run resumes."""
    import json

    path = bgrn_scene(tmp_path / "unnamed.tif", descriptions=None)
    out = tmp_path / "o.gpkg"
    label(path, out, engine="classical", classes=2, workers=1, quiet=True, keep_work=True)
    out.unlink()  # as after an interruption
    run_json = next(tmp_path.glob("*.geoalps-work")) / "run.json"
    current = json.loads(run_json.read_text())
    older = dict(current, settings={k: v for k, v in current["settings"].items() if k != "unknown_role_indices"})
    run_json.write_text(json.dumps(older))
    with pytest.raises(ResumeError, match=r"with other settings \(.*unknown_role_indices"):
        label(path, out, engine="classical", classes=2, workers=1, quiet=True, resume=True)
    run_json.write_text(json.dumps(current))
    label(path, out, engine="classical", classes=2, workers=1, quiet=True, resume=True)
    assert out.exists()
