"""geoalps export (ONNX, Deepness metadata) and geoalps predict --backend onnx, on a real scene.

The model is a tiny network at its initial weights (one step at lr 1e-9): its classes vary all
over the scene (8 of 9 present), so comparing classes is strict, which a trained model predicting
one dominant class everywhere would not be.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoalps.cli import main
from geoalps.errors import ModelError

from train.train_scenes import _train_test_environment  # noqa: F401 - fixture used by name

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, realdata_root):
    from geoalps.train.export import export_onnx
    from geoalps.train.loop import TrainOptions, finetune

    folder = tmp_path_factory.mktemp("export")
    scene = realdata_root / "multispectral" / "landsat8_zion_bgrn_u16.tif"
    labels = realdata_root / "multispectral" / "landsat8_zion.nlcd8.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finetune([scene], [labels], folder / "m.pt", size="tiny",
                 options=TrainOptions(epochs=1, steps_per_epoch=1, batch_size=2, lr=1e-9, val_fraction=0, quiet=True,
                                      threads=1))
        export_onnx(folder / "m.pt", folder / "m.onnx")
    return folder / "m.pt", folder / "m.onnx", scene


@pytest.fixture(scope="module")
def realdata_root():
    from conftest import REALDATA

    if not REALDATA.is_dir():
        pytest.skip(f"shared real data not found at {REALDATA}")
    return REALDATA


def test_onnx_backend_gives_the_torch_classes_and_scores(exported, tmp_path):
    import torch

    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.data import open_north_up
    from geoalps.train.export import OnnxModel
    from geoalps.train.models import build_model
    from geoalps.train.predict import _read_batches, normalise, prediction_windows

    model_pt, model_onnx, scene = exported
    outputs = {}
    for backend, model in (("torch", model_pt), ("onnx", model_onnx)):
        out = tmp_path / f"{backend}.tif"
        result = CliRunner().invoke(main, ["predict", str(model), str(scene), "-o", str(out), "--backend", backend,
                                           "--threads", "1", "-q"])
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as src:
            outputs[backend] = src.read(1)
            assert src.crs is not None and src.transform == rasterio.open(scene).transform
    torch_classes, onnx_classes = outputs["torch"], outputs["onnx"]
    assert np.array_equal(torch_classes == 255, onnx_classes == 255)  # same nodata
    valid = torch_classes != 255
    assert len(np.unique(torch_classes[valid])) >= 5  # classes vary over the scene: a strict comparison
    assert (torch_classes[valid] == onnx_classes[valid]).mean() >= 0.999

    # the scores themselves, tile by tile (first 16 tiles of the scene)
    ckpt = load_checkpoint(model_pt)
    net = build_model(ckpt["arch"])
    net.load_state_dict(ckpt["model"])
    net.eval()
    grid = open_north_up(scene)
    windows = prediction_windows(grid.width, grid.height, 64, 16)[:16]
    _, images = next(_read_batches(grid, windows, 64, 16))
    x, _ = normalise(images, ckpt["norm"]["mean"], ckpt["norm"]["std"], grid.nodata)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    got = OnnxModel(model_onnx)(x)
    assert got.shape == expected.shape == (16, 9, 64, 64)
    assert np.abs(got - expected).max() <= 1e-3


def test_metadata_reads_as_deepness_reads_it(exported):
    import onnxruntime as ort

    from geoalps.train.checkpoint import load_checkpoint

    model_pt, model_onnx, _ = exported
    ckpt = load_checkpoint(model_pt)
    session = ort.InferenceSession(str(model_onnx), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["model_type"] == "Segmentor"
    names = [name for _, name in sorted(meta["class_names"].items(), key=lambda kv: int(kv[0]))]
    assert [int(k) for k in sorted(meta["class_names"], key=int)] == list(range(9))  # consecutive ids from 0
    assert names == ckpt["classes"]["names"]
    assert meta["tile_size"] == 64 and meta["tiles_overlap"] == 25
    # Deepness: (v / 255 - mean) / std == geoalps: (v - mean') / std'
    np.testing.assert_allclose(np.array(meta["standardization_mean"]) * 255, ckpt["norm"]["mean"], rtol=1e-12)
    np.testing.assert_allclose(np.array(meta["standardization_std"]) * 255, ckpt["norm"]["std"], rtol=1e-12)
    (image,), (out,) = session.get_inputs(), session.get_outputs()
    assert image.shape[1] == 4 and all(isinstance(image.shape[i], str) for i in (0, 2, 3))  # dynamic B, H, W
    assert len(out.shape) == 4 and out.shape[1] == 9
    for height, width in ((64, 64), (96, 160)):
        batch = np.zeros((3, 4, height, width), dtype=np.float32)
        probs = session.run(None, {image.name: batch})[0]
        assert probs.shape == (3, 9, height, width)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # 0-1 class scores, as Deepness reads them


def _scene_batch(scene, height: int, width: int, norm: dict, count: int = 4) -> np.ndarray:
    """``count`` standardised windows of ``height`` x ``width`` px along the real scene's diagonal."""
    from rasterio.windows import Window

    from geoalps.inputs.scene import read_window
    from geoalps.train.data import open_north_up
    from geoalps.train.predict import normalise

    grid = open_north_up(scene)
    step_x, step_y = (grid.width - width) // count, (grid.height - height) // count
    images = np.stack([read_window(grid, Window(k * step_x, k * step_y, width, height)) for k in range(count)])
    return normalise(images.astype(np.float32), norm["mean"], norm["std"], grid.nodata)[0]


def test_any_size_network_is_the_trained_network_at_the_tile_size(exported):
    import torch

    from floats import assert_float32_close
    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.export import any_size_network
    from geoalps.train.models import build_model

    model_pt, _, scene = exported
    ckpt = load_checkpoint(model_pt)
    trained = build_model(ckpt["arch"])
    trained.load_state_dict(ckpt["model"])
    x = torch.from_numpy(_scene_batch(scene, 64, 64, ckpt["norm"]))
    with torch.no_grad():
        assert_float32_close(any_size_network(ckpt)(x), trained.eval()(x))


@pytest.mark.parametrize("height, width", [(96, 96), (128, 128), (64, 160)])
def test_onnx_at_other_sizes_gives_the_torch_classes_and_scores(exported, height, width):
    """Height and width are dynamic: onnxruntime at 1.5x, 2x and a non-square size gives what the
    same any-size network gives in torch (today's fixed-size export refuses these sizes)."""
    import torch

    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.export import OnnxModel, any_size_network

    model_pt, model_onnx, scene = exported
    ckpt = load_checkpoint(model_pt)
    x = _scene_batch(scene, height, width, ckpt["norm"])
    with torch.no_grad():
        expected = torch.softmax(any_size_network(ckpt)(torch.from_numpy(x)), dim=1).numpy()
    got = OnnxModel(model_onnx)(x)
    assert got.shape == expected.shape == (4, 9, height, width)
    classes = expected.argmax(axis=1)
    assert len(np.unique(classes)) >= 3  # classes vary: a strict comparison
    assert (got.argmax(axis=1) == classes).mean() >= 0.999
    assert np.abs(got - expected).max() <= 1e-3


def test_onnx_prediction_runs_without_torch(exported, tmp_path):
    _, model_onnx, scene = exported
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchgeo'] = None\n"
            "from geoalps.cli import main\n"
            f"main([\"predict\", {str(model_onnx)!r}, {str(scene)!r}, \"-o\", {str(tmp_path / 'p.tif')!r}, "
            "\"--backend\", \"onnx\", \"-q\"])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.tif").exists()


def test_wrong_files_are_one_line_errors(exported, tmp_path):
    model_pt, model_onnx, scene = exported
    result = CliRunner().invoke(main, ["predict", str(model_pt), str(scene), "-o", str(tmp_path / "a.tif"),
                                       "--backend", "onnx"])
    assert result.exit_code == ModelError.exit_code and result.stderr.count("\n") == 1
    assert "m.pt: not a readable ONNX model" in result.stderr
    result = CliRunner().invoke(main, ["export", str(scene), "-o", str(tmp_path / "b.onnx")])
    assert result.exit_code == ModelError.exit_code and "not a readable torch checkpoint" in result.stderr
    assert not (tmp_path / "b.onnx").exists()


def test_fixed_size_export_declares_the_tile(exported, tmp_path):
    """--fixed-size: height and width are the tile size in the graph's input (Deepness 0.6.x reads
    its tile size from there), with the same scores as the any-size export at that size."""
    import onnxruntime as ort

    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.export import OnnxModel

    model_pt, model_onnx, scene = exported
    fixed = tmp_path / "fixed.onnx"
    result = CliRunner().invoke(main, ["export", str(model_pt), "-o", str(fixed), "--fixed-size", "-q"])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert isinstance(image.shape[0], str) and image.shape[1:] == [4, 64, 64]
    x = _scene_batch(scene, 64, 64, load_checkpoint(model_pt)["norm"])
    np.testing.assert_allclose(OnnxModel(fixed)(x), OnnxModel(model_onnx)(x), rtol=0, atol=1e-5)
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument, match="dimensions"):  # onnxruntime refuses another size
        OnnxModel(fixed)(_scene_batch(scene, 96, 96, load_checkpoint(model_pt)["norm"]))
