"""Models out: a geoalps checkpoint as an ONNX model that onnxruntime alone can run, with its
band normalisation and class names in the model's metadata.

The graph maps a standardised float32 batch (B, bands, H, W) to class probabilities
(B, K, H, W) (the network ends in a softmax). Batch, height and width are dynamic; height and
width must be multiples of the model's ``reduction`` (32 px: patch 4 and three 2x merges). The
exported network is :func:`any_size_network`: the trained one (same weights, the tile size's
windows and shifts) built with timm's ``strict_img_size=False``, which pads each stage to whole
windows and builds the shifted-window masks for the input's size, and with the decoder's
adaptive pooling written as two small averaging matrices (the exporter bakes torch's adaptive
pooling bins for the traced size). At the tile size it equals the network ``geoalps predict``
runs; at other sizes onnxruntime equals it in torch. ``tile_size`` in the metadata stays the
trained tile, the size Deepness (and ``predict --backend onnx``) should cut; ``any_size=False``
declares that size in the graph (Deepness 0.6.x's dock widget needs it). The metadata follows the
convention of the QGIS plugin Deepness (``metadata_props``, each value JSON): ``model_type``
"Segmentor", ``class_names`` {"0": name, ...}, ``tile_size``, ``tiles_overlap`` (percent), and
``standardization_mean`` / ``standardization_std`` applied by Deepness after it scales the raster
values by 1/255, so they are the training mean and std divided by 255:
(v/255 - m/255) / (s/255) = (v - m) / s, what geoalps' own normalisation does. ``geoalps``
holds the full record (mean and std in raster units, bands, nodata, class colours, tile size)
that ``geoalps predict --backend onnx`` reads.

Costs: one ``torch.onnx.export`` (torch.export based; needs ``onnxscript``); a minute or two on
a busy CPU for the tiny model, more for swin_t.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from geoalps.errors import DependencyError, ModelError

#: The ``geoalps`` metadata record's format tag and version.
ONNX_FORMAT = "geoalps-segmentation-onnx"
ONNX_VERSION = 1
#: Deepness scales raster values by this before standardising.
DEEPNESS_SCALE = 1.0 / 255.0
OPSET = 18
#: Largest height or width the exported graph declares (the exporter needs a bound).
MAX_SIDE_PX = 16384


def deepness_metadata(ckpt: dict[str, Any], class_names: list[str], overlap_percent: int = 25) -> dict[str, Any]:
    """The metadata entries (Python values, JSON-encoded on writing) of an exported checkpoint."""
    mean, std = ckpt["norm"]["mean"], ckpt["norm"]["std"]
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(k): name for k, name in enumerate(class_names)},
        "tile_size": int(ckpt["tile_size_px"]),
        "tiles_overlap": int(overlap_percent),
        "standardization_mean": [float(m) * DEEPNESS_SCALE for m in mean],
        "standardization_std": [float(s) * DEEPNESS_SCALE for s in std],
        "geoalps": {
            "format": ONNX_FORMAT, "version": ONNX_VERSION,
            "norm": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
            "bands": ckpt["bands"], "tile_size_px": int(ckpt["tile_size_px"]),
            "classes": {"names": list(class_names), "colours": [list(c[:3]) for c in ckpt["classes"].get("colours", [])]},
            "arch": {k: ckpt["arch"][k] for k in ("size", "in_chans", "num_classes", "reduction")},
        },
    }
    return meta


def export_onnx(checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False,
                any_size: bool = True) -> Path:
    """Write ``checkpoint`` (from ``geoalps train``/``pretrain``) as an ONNX model at ``output``.

    ``any_size=False`` declares height and width as the tile size (the trained network itself,
    only the batch dynamic): Deepness's dock widget (0.6.x) puts the input's width into its
    tile-size box and reports a dynamic width as a failed load.

    Raises:
        ModelError: not a geoalps model, or a MIM-only one (no classes).
        DependencyError: onnx or onnxscript (torch's exporter) missing.
        OutputError: ``output`` exists without ``overwrite``.
    """
    import warnings

    import torch

    from geoalps.files import atomic_path, check_writable
    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.predict import _checkpoint_classes

    check_writable(output, overwrite)
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) needs it
    except ImportError as exc:
        raise DependencyError(f"geoalps export needs {exc.name}: pip install 'geoalps[export]'") from None
    ckpt = load_checkpoint(checkpoint)
    arch = ckpt["arch"]
    if arch["num_classes"] <= 0:
        raise ModelError(f"{checkpoint}: MIM-only pre-trained model has no classes; fine-tune it with 'geoalps train --init'")
    _, names, _ = _checkpoint_classes(ckpt)
    tile = int(ckpt["tile_size_px"])
    example = torch.zeros(2, arch["in_chans"], tile, tile)  # batch 2: a batch of 1 would be baked in
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    if any_size:
        probabilities = _Probabilities(any_size_network(ckpt)).eval()
        # Height and width in whole cells of the coarsest map (the exporter needs the
        # divisibility stated; timm pads inside each stage to whole windows).
        cell, most = int(arch["reduction"]), MAX_SIDE_PX // int(arch["reduction"])
        shapes["x"][2] = cell * torch.export.Dim("height_cells", min=1, max=most)
        shapes["x"][3] = cell * torch.export.Dim("width_cells", min=1, max=most)
    else:
        from geoalps.train.models import build_model

        network = build_model(arch)
        network.load_state_dict(ckpt["model"])
        probabilities = _Probabilities(network).eval()
    with atomic_path(output, overwrite=overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own progress and deprecation chatter
        with open(os.devnull, "w") as devnull, _redirect_stdout(devnull):
            program = torch.onnx.export(probabilities, (example,), input_names=["image"], output_names=["probabilities"],
                                        dynamo=True, dynamic_shapes=shapes, opset_version=OPSET, verbose=False)
        model = program.model_proto
        _set_metadata(model, deepness_metadata(ckpt, names))
        onnx.save_model(model, str(tmp))
    return Path(output)


def any_size_network(ckpt: dict[str, Any]) -> Any:
    """The checkpoint's network (eval mode, logits) taking any height and width that are
    multiples of ``ckpt['arch']['reduction']``: what ``export_onnx`` exports.

    Same parameters as ``build_model(ckpt['arch'])`` with the checkpoint's weights; at the tile
    size its outputs are that network's within float32 rounding (the pooling sums in another
    order). Costs a shifted-window mask per block and forward, and the decoder's pooling as
    matrix products (the coarsest map is small: 2 x 2 cells for a 64 px tile).
    """
    from geoalps.train.models import build_model

    network = build_model(ckpt["arch"], any_size=True)
    network.load_state_dict(ckpt["model"])
    for branch in network.decoder.ppm:
        branch[0] = _AdaptiveAvgPool(branch[0].output_size)
    return network.eval()


def _AdaptiveAvgPool(output_size: int) -> Any:
    from torch import nn

    class AdaptiveAvgPool(nn.Module):
        """``nn.AdaptiveAvgPool2d(s)`` (square ``s``) for any input size in an exported graph:
        torch's bins (start floor(i n / s), end ceil((i + 1) n / s)) as an (s, n) averaging
        matrix per axis, built from the input's symbolic size; ``M_h x M_w^T``."""

        def __init__(self) -> None:
            super().__init__()
            self.output_size = int(output_size)

        def _bins(self, n, like):
            import torch

            s = self.output_size
            i = torch.arange(s, device=like.device)
            start = torch.div(i * n, s, rounding_mode="floor")
            end = torch.div((i + 1) * n + s - 1, s, rounding_mode="floor")
            j = torch.arange(n, device=like.device)
            inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
            return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)

        def forward(self, x):
            import torch

            return torch.einsum("oh,bchw,pw->bcop", self._bins(x.shape[-2], x), x, self._bins(x.shape[-1], x))

    return AdaptiveAvgPool()


def _set_metadata(model: Any, meta: dict[str, Any]) -> None:
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def _redirect_stdout(stream):
    import contextlib

    return contextlib.redirect_stdout(stream)


def _Probabilities(network: Any) -> Any:
    from torch import nn

    class Probabilities(nn.Module):
        """The network followed by a softmax over classes (Deepness reads outputs as 0-1 scores)."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x):
            import torch

            return torch.softmax(self.network(x), dim=1)

    return Probabilities()


class OnnxModel:
    """An exported geoalps model run by onnxruntime (no torch): ``__call__`` maps a standardised
    float32 batch (B, bands, H, W) to class probabilities (B, K, H, W).

    Raises (on opening):
        DependencyError: onnxruntime missing.
        ModelError: not an ONNX file, or one without geoalps metadata.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DependencyError("predict --backend onnx needs onnxruntime: pip install onnxruntime") from None
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
            raise ModelError(f"{path}: not a readable ONNX model ({exc.__class__.__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            record = json.loads(meta["geoalps"])
        except (KeyError, json.JSONDecodeError):
            raise ModelError(f"{path}: ONNX model without geoalps metadata (export it with 'geoalps export')") from None
        if record.get("format") != ONNX_FORMAT or record.get("version", 0) > ONNX_VERSION:
            raise ModelError(f"{path}: not a geoalps ONNX model this version reads")
        self.path = path
        self.record = record
        self.input_name = self.session.get_inputs()[0].name

    @property
    def tile_size_px(self) -> int:
        return int(self.record["tile_size_px"])

    @property
    def bands(self) -> int:
        return int(self.record["arch"]["in_chans"])

    @property
    def n_classes(self) -> int:
        return int(self.record["arch"]["num_classes"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
