"""The geoalps command as users run it: exit codes, one-line errors, no partial outputs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from conftest import REPO, scene_with_objects, write_raster
from geoalps.errors import InputError, ModelError, OptionError, OutputError, ResumeError


def run(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "geoalps", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def _error_line(result, exit_code: int):
    """The one error line, after checking the exit code of the error's kind (geoalps.errors)."""
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("geoalps: error: ")
    return lines[-1]


@pytest.fixture
def scene(tmp_path):
    return write_raster(tmp_path / "scene.tif", scene_with_objects(200, 220, [(30, 40, 80, 100), (120, 120, 170, 190)], bands=4))


def test_label_writes_gpkg_and_raster_and_says_which_engine(scene, tmp_path):
    out = tmp_path / "out.gpkg"
    result = run("label", scene, "-o", out, "--engine", "auto", "--classes", "3", "--raster-out", tmp_path / "l.tif",
                 "--bands", "4,3,2", env={"PATH": "/usr/bin:/bin", "GEOALPS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "engine classical (no SAM checkpoint found)" in result.stderr
    gdf = pyogrio.read_dataframe(out, layer="masks")
    assert len(gdf) >= 2 and gdf.crs.to_epsg() == 32633
    assert (tmp_path / "l.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.qml", "l.tif", "out.gpkg", "scene.tif"]


def test_a_scene_in_pixel_coordinates_labels_without_rasterio_warnings(tmp_path):
    """--allow-pixel-coords asks for pixel coordinates: reading the chip, its band names and
    writing the label raster must not print rasterio's NotGeoreferencedWarning at the user
    (pytest's own warning filters do not reach this subprocess)."""
    data = scene_with_objects(96, 96, [(10, 10, 50, 60)], bands=3)
    chip = write_raster(tmp_path / "chip.tif", data, crs=None, transform=rasterio.Affine.identity())
    result = run("label", chip, "-o", tmp_path / "out.gpkg", "--raster-out", tmp_path / "out.tif",
                 "--allow-pixel-coords", "--workers", "1", "--classes", "2", "--engine", "classical")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    with rasterio.open(tmp_path / "out.tif") as src:  # the raster is on the chip's pixel grid
        assert src.crs is None and src.transform == rasterio.Affine.identity() and src.shape == (96, 96)


def test_progress_lines_for_the_qgis_plugin(scene, tmp_path):
    result = run("label", scene, "-o", tmp_path / "p.gpkg", "--engine", "classical", "--classes", "2",
                 "--progress-lines", "--tile-size", "128", "--overlap", "32")
    assert result.returncode == 0, result.stderr
    percents = [float(l.split()[1]) for l in result.stderr.splitlines() if l.startswith("geoalps-progress: ")]
    assert len(percents) >= 5 and percents == sorted(percents) and percents[-1] == 100.0


@pytest.mark.parametrize("make,args,fragment,code", [
    (lambda p: p.write_text("hello"), [], "not a raster", InputError.exit_code),
    (None, ["--bands", "7,3,2"], "band 7 does not exist (the scene has 4 bands", OptionError.exit_code),
    (None, ["--band-names", "blue,green,red"], "--band-names gives 3 names but the file has 4 bands",
     OptionError.exit_code),
    (None, ["--band-names", "blue,green,red,infrared"], "--band-names: unknown band name 'infrared' (use coastal, "
     "blue, green, red, rededge, nir, swir1, swir2, pan, other)", OptionError.exit_code),
    (lambda p: write_raster(p, np.ones((3, 40, 40), np.uint8), crs=None,
                            transform=rasterio.Affine.identity()), [], "--allow-pixel-coords", InputError.exit_code),
    (lambda p: write_raster(p, np.zeros((4, 40, 40), np.uint16), nodata=0), [], "every pixel is nodata",
     InputError.exit_code),
])
def test_bad_input_one_line_error_and_no_output(scene, tmp_path, make, args, fragment, code):
    target = scene
    if make is not None:
        target = tmp_path / "bad.tif"
        make(target)
    out = tmp_path / "never.gpkg"
    result = run("label", target, "-o", out, "--engine", "classical", "--raster-out", tmp_path / "never.tif", *args)
    line = _error_line(result, code)
    assert str(target) in line and fragment in line
    assert not out.exists() and not (tmp_path / "never.tif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_truncated_file(scene, tmp_path):
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(scene.read_bytes()[: scene.stat().st_size // 3])
    line = _error_line(run("label", truncated, "-o", tmp_path / "x.gpkg", "--engine", "classical"), InputError.exit_code)
    assert "cut.tif" in line


def test_overwrite_is_needed_to_replace(scene, tmp_path):
    out = tmp_path / "o.gpkg"
    assert run("label", scene, "-o", out, "--engine", "classical", "-q").returncode == 0
    line = _error_line(run("label", scene, "-o", out, "--engine", "classical", "-q"), OutputError.exit_code)
    assert "exists" in line and "--overwrite" in line
    assert run("label", scene, "-o", out, "--engine", "classical", "-q", "--overwrite").returncode == 0


def test_sam_engine_without_checkpoint_is_a_clear_error(scene, tmp_path):
    line = _error_line(run("label", scene, "-o", tmp_path / "o.gpkg", "--engine", "sam",
                           env={"PATH": "/usr/bin:/bin", "GEOALPS_CACHE": str(tmp_path / "c")}), ModelError.exit_code)
    assert "needs a SAM checkpoint" in line
    line = _error_line(run("label", scene, "-o", tmp_path / "o.gpkg", "--checkpoint", tmp_path / "nope.pth"),
                       ModelError.exit_code)
    assert "nope.pth" in line and "not found" in line


def test_readme_main_command_labels_the_sample_scene(tmp_path):
    """The README's first command, minus the install: the shipped sample scene, default options."""
    readme = (REPO / "README.md").read_text().splitlines()[0]
    assert ".venv/bin/geoalps label sample_data/scene_rgbn_u16.tif" in readme
    result = run("label", REPO / "sample_data/scene_rgbn_u16.tif", "-o", tmp_path / "sample_labels.gpkg",
                 "--raster-out", tmp_path / "sample_labels.tif", "--overwrite", "-q",
                 env={"PATH": "/usr/bin:/bin", "GEOALPS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    gdf = pyogrio.read_dataframe(tmp_path / "sample_labels.gpkg", layer="masks")
    assert len(gdf) > 200 and gdf.pseudo_class.nunique() == 10
    with rasterio.open(REPO / "sample_data/scene_rgbn_u16.tif") as src:
        assert gdf.crs == src.crs
        assert gdf.total_bounds[0] >= src.bounds.left and gdf.total_bounds[2] <= src.bounds.right
    # the ground truth's buildings are found: most building pixels are covered by some polygon
    with rasterio.open(REPO / "sample_data/scene_rgbn_u16.gt.tif") as gt, rasterio.open(tmp_path / "sample_labels.tif") as lab:
        truth, labels = gt.read(1), lab.read(1)
    assert (labels[truth == 1] != 255).mean() > 0.8


def test_unexpected_errors_are_one_line_too(scene, tmp_path, monkeypatch):
    """A bug deep inside (simulated) still gives one error line and a non-zero exit, no traceback."""
    from click.testing import CliRunner

    import geoalps.labelling.run
    from geoalps.cli import main

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(geoalps.labelling.run, "label", broken)
    monkeypatch.delenv("GEOALPS_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["label", str(scene), "-o", str(tmp_path / "o.gpkg")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoalps: error: internal error ZeroDivisionError: division by zero")


def _classical_run(out, *args):
    return run("label", REPO / "sample_data/scene_rgb_u8.tif", "-o", out, "--engine", "classical", "--classes", "3",
               "--workers", "1", "-q", *args)


def test_classical_scale_reaches_the_engine(tmp_path):
    """--classical-scale is the classical engine's region size: ten times larger gives far fewer
    polygons on the shipped RGB scene (312 vs 146 when written); not giving it is 200."""
    counts = {}
    for scale in ("200", "2000"):
        out = tmp_path / f"s{scale}.gpkg"
        result = _classical_run(out, "--classical-scale", scale)
        assert result.returncode == 0, result.stderr
        counts[scale] = len(pyogrio.read_dataframe(out, layer="masks"))
    default = tmp_path / "default.gpkg"
    assert _classical_run(default).returncode == 0
    assert len(pyogrio.read_dataframe(default, layer="masks")) == counts["200"]  # 200 is the default
    assert counts["2000"] < 0.7 * counts["200"], counts


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_classical_scale_must_be_positive(tmp_path, value):
    out = tmp_path / "never.gpkg"
    line = _error_line(_classical_run(out, f"--classical-scale={value}"), OptionError.exit_code)
    assert line.startswith("geoalps: error: --classical-scale must be a positive number")
    assert not out.exists() and not Path(f"{out}.geoalps-work").exists()


def test_classical_scale_not_a_number_is_a_usage_error(tmp_path):
    result = _classical_run(tmp_path / "never.gpkg", "--classical-scale", "big")
    assert result.returncode == OptionError.exit_code and "Traceback" not in result.stderr
    assert "Invalid value for '--classical-scale': 'big' is not a valid float" in result.stderr


def test_resume_with_another_classical_scale_is_refused(tmp_path):
    out = tmp_path / "o.gpkg"
    work = Path(f"{out}.geoalps-work")
    assert _classical_run(out, "--classical-scale", "500", "--keep-work").returncode == 0
    out.unlink()  # as after an interruption: the work folder of finished tiles, no output
    line = _error_line(_classical_run(out, "--classical-scale", "800", "--resume"), ResumeError.exit_code)
    assert "with other settings (classical_scale)" in line
    assert not out.exists() and len(list((work / "tiles").glob("*.npz"))) == 1
    resumed = run("label", REPO / "sample_data/scene_rgb_u8.tif", "-o", out, "--engine", "classical", "--classes",
                  "3", "--workers", "1", "--classical-scale", "500", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 of 1 tiles already done" in resumed.stderr


def test_classical_split_reaches_the_engine(tmp_path):
    """--classical-split is on by default (the default run equals --classical-split) and cuts some
    of the shipped RGB scene's land-cover-sized regions that --no-classical-split keeps whole: more
    polygons, a different coverage of the same area (the cut itself is tested in
    tests/engines/test_classical.py)."""
    frames = {}
    for name, args in (("default", ()), ("off", ("--no-classical-split",)), ("on", ("--classical-split",))):
        out = tmp_path / f"{name}.gpkg"
        result = _classical_run(out, *args)
        assert result.returncode == 0, result.stderr
        frames[name] = pyogrio.read_dataframe(out, layer="masks")
    assert frames["default"].geometry.to_wkb().tolist() == frames["on"].geometry.to_wkb().tolist()
    assert len(frames["on"]) > len(frames["off"]), (len(frames["on"]), len(frames["off"]))
    covered_on, covered_off = frames["on"].geometry.union_all().area, frames["off"].geometry.union_all().area
    assert covered_on >= 0.95 * covered_off  # cut, not dropped
