"""Segmentation network: a timm Swin backbone taking every band of the scene, an UPerNet decoder.

Named sizes follow the Swin paper (``swin_t``, ``swin_s``, ``swin_b``) plus ``tiny`` for tests and
CPU experiments; adding a size is one registry entry. The backbone is timm's ``SwinTransformer``
built for the tile size (``img_size``) and the scene's band count (``in_chans``), so 4-band RGBN
or 13-band Sentinel-2 enter natively. ``--backbone-weights`` loads a timm/Microsoft Swin
checkpoint file with timm's own helpers, which adapt the 3-band first conv to N bands (RGB
filters repeated and rescaled) and resize relative-position tables to the window sizes.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoalps.errors import ModelError, OptionError
from geoalps.options import check_tiling


@dataclass(frozen=True)
class ModelSpec:
    """Architecture numbers of a named size; ``timm_name`` is the timm entry point it builds on."""

    timm_name: str
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    tile_size_px: int
    decoder_channels: int
    patch_size: int = 4

    @property
    def reduction(self) -> int:
        """Pixels per cell of the coarsest feature map (32 for four stages of patch 4)."""
        return self.patch_size * 2 ** (len(self.depths) - 1)


MODEL_SIZES: dict[str, ModelSpec] = {
    "swin_t": ModelSpec("swin_tiny_patch4_window7_224", 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224, 256),
    "swin_s": ModelSpec("swin_small_patch4_window7_224", 96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 224, 256),
    "swin_b": ModelSpec("swin_base_patch4_window7_224", 128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 224, 384),
    # For tests and CPU runs: about 1 M parameters, 64 px tiles.
    "tiny": ModelSpec("swin_tiny_patch4_window7_224", 24, (1, 1, 2, 1), (1, 2, 3, 6), 4, 64, 32),
}


def model_spec(size: str) -> ModelSpec:
    """The registered spec for a size name, or a one-line error listing the names."""
    try:
        return MODEL_SIZES[size]
    except KeyError:
        raise OptionError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_SIZES)}") from None


def make_arch(size: str, in_chans: int, num_classes: int, tile_size_px: int | None = None) -> dict[str, Any]:
    """The architecture record stored in checkpoints; ``build_model(arch)`` rebuilds the net."""
    spec = model_spec(size)
    tile = int(tile_size_px or spec.tile_size_px)
    check_tiling(tile, 0)  # the one tile rule (geoalps.inputs.tiles): validation and prediction tile with it
    if tile % spec.reduction:
        raise OptionError(f"--tile-size {tile} must be a multiple of {spec.reduction} px for {size}")
    arch = {"size": size, **asdict(spec), "in_chans": int(in_chans), "num_classes": int(num_classes)}
    arch["tile_size_px"] = tile
    arch["depths"], arch["num_heads"] = list(spec.depths), list(spec.num_heads)
    arch["reduction"] = spec.reduction
    return arch


class SwinBackbone(nn.Module):
    """timm Swin returning the four stage maps (NCHW, strides 4..32), with a SimMIM mask token.

    ``forward(x, patch_mask)`` replaces masked patch embeddings by the learnable mask token
    (SimMIM's blend after patch embedding); without a mask it is the plain backbone.
    """

    def __init__(self, swin: nn.Module) -> None:
        super().__init__()
        self.swin = swin
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, swin.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.channels = [info["num_chs"] for info in swin.feature_info]

    def forward(self, x: torch.Tensor, patch_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        tokens = self.swin.patch_embed(x)  # (B, H/4, W/4, C)
        if patch_mask is not None:
            w = patch_mask.unsqueeze(-1).to(tokens.dtype)
            tokens = tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w
        maps = []
        for stage in self.swin.layers:
            tokens = stage(tokens)
            maps.append(tokens.permute(0, 3, 1, 2))
        return maps


def _conv_norm_act(cin: int, cout: int, k: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: few-label fine-tuning runs with tiny batches.
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(min(8, cout // 2), cout), nn.ReLU(inplace=True))


class UPerDecoder(nn.Module):
    """UPerNet (Xiao et al. 2018): pyramid pooling on the coarsest map, FPN top-down, fuse at 1/4.

    Cost: the 3x3 convs at 1/4 resolution (the fuse conv takes 4 x ``channels`` inputs) dominate:
    for swin_t (256 channels) at 224 px the decoder is about 20 GFLOPs per image against 9 for
    the backbone (torch FlopCounterMode); the paper's 512 channels would be about 4x that.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        top = in_channels[-1]
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv_norm_act(top, channels, 1)) for s in pool_scales)
        self.bottleneck = _conv_norm_act(top + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(_conv_norm_act(c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(_conv_norm_act(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = _conv_norm_act(len(in_channels) * channels, channels, 3)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        top = maps[-1]
        pooled = [F.interpolate(p(top), size=top.shape[-2:], mode="bilinear", align_corners=False) for p in self.ppm]
        levels = [lat(m) for lat, m in zip(self.lateral, maps[:-1])] + [self.bottleneck(torch.cat([top, *pooled], 1))]
        for i in range(len(levels) - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + F.interpolate(levels[i], size=levels[i - 1].shape[-2:], mode="bilinear", align_corners=False)
        outs = [s(level) for s, level in zip(self.smooth, levels[:-1])] + [levels[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.fuse(torch.cat(outs, 1))


class SegmentationNet(nn.Module):
    """Backbone + decoder + 1x1 classifier; logits at input resolution (bilinear x4).

    ``classifier`` is None for a MIM-only pre-trained net (no classes yet).
    """

    def __init__(self, backbone: SwinBackbone, decoder_channels: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = UPerDecoder(backbone.channels, decoder_channels)
        self.classifier = self._classifier(decoder_channels, num_classes)

    @staticmethod
    def _classifier(channels: int, num_classes: int) -> nn.Module | None:
        if num_classes <= 0:
            return None
        return nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))

    def reset_classifier(self, num_classes: int) -> None:
        """New, randomly initialised classifier for ``num_classes`` (fine-tuning to other classes)."""
        channels = self.decoder.fuse[0].out_channels
        self.classifier = self._classifier(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this network has no classifier (MIM-only pre-training); fine-tune it first")
        logits = self.classifier(self.decoder(self.backbone(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_model(arch: dict[str, Any], backbone_weights: str | os.PathLike | None = None,
                any_size: bool = False) -> SegmentationNet:
    """Build the network an ``arch`` record describes (weights random unless a file is given).

    Args:
        arch: from ``make_arch`` or a checkpoint.
        backbone_weights: a timm/Microsoft Swin checkpoint (.pth/.bin/.safetensors) of the same
            size; the first conv is adapted to ``arch['in_chans']`` bands by timm.
        any_size: the same network (same parameters and state dict, the tile size's windows and
            shifts) taking any height and width that are multiples of ``arch['reduction']``:
            timm's ``strict_img_size=False`` pads each stage to whole windows and builds the
            shifted-window masks per forward (a little slower). At the tile size its outputs are
            the fixed-size network's. ``geoalps export`` uses it.
    """
    import timm

    kwargs = dict(
        img_size=arch["tile_size_px"],
        in_chans=arch["in_chans"],
        num_classes=0,
        global_pool="",
        embed_dim=arch["embed_dim"],
        depths=tuple(arch["depths"]),
        num_heads=tuple(arch["num_heads"]),
        window_size=arch["window_size"],
        patch_size=arch["patch_size"],
    )
    if any_size:
        kwargs["strict_img_size"] = False
    swin = timm.create_model(arch["timm_name"], pretrained=False, **kwargs)
    if backbone_weights is not None:
        load_timm_weights(swin, backbone_weights, arch["size"])
    return SegmentationNet(SwinBackbone(swin), arch["decoder_channels"], arch["num_classes"])


def load_timm_weights(swin: nn.Module, path: str | os.PathLike, size: str = "") -> None:
    """Load a timm/Microsoft Swin checkpoint file into ``swin``, adapting it to the model.

    timm's own helpers do the adapting: ``checkpoint_filter_fn`` converts the original
    Microsoft layout and resizes relative-position tables to the window sizes in use, and
    ``adapt_input_conv`` turns the RGB patch-embedding filters into N-band ones (repeated over
    the bands and rescaled by 3/N, so a grey input gives the same response). The classifier
    head is dropped. Every backbone tensor must be found: a file of another size is an error,
    never a silent random start.
    """
    from timm.models import load_state_dict
    from timm.models._manipulate import adapt_input_conv
    from timm.models.swin_transformer import checkpoint_filter_fn

    path = str(path)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such backbone weights file")
    try:
        state = checkpoint_filter_fn(load_state_dict(path, use_ema=False), swin)
        first = state.get("patch_embed.proj.weight")
        if first is not None and first.shape[1] != swin.in_chans:
            state["patch_embed.proj.weight"] = adapt_input_conv(swin.in_chans, first)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        own = swin.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if wrong or missing:
            example = (wrong or missing)[0]
            raise ModelError(
                f"{path}: not Swin weights for size {size} ({len(missing)} tensors missing, {len(wrong)} of another "
                f"shape, e.g. {example})"
            )
        swin.load_state_dict(state, strict=False)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable file, pickle, safetensors errors
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"{path}: cannot read Swin weights ({exc.__class__.__name__}: {detail})") from None


def load_weights(model: SegmentationNet, state: dict[str, torch.Tensor], keep_classifier: bool = True) -> list[str]:
    """Load a geoalps state_dict into ``model``, tolerating a different tile/window size.

    Relative-position tables are resized by timm's Swin checkpoint filter; the classifier is
    skipped when ``keep_classifier`` is False or its shape differs. Returns the keys not loaded.
    """
    from timm.models.swin_transformer import checkpoint_filter_fn

    prefix = "backbone.swin."
    swin_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    swin_state = checkpoint_filter_fn(swin_state, model.backbone.swin)
    merged = {prefix + k: v for k, v in swin_state.items()}
    merged.update({k: v for k, v in state.items() if not k.startswith(prefix)})
    own = model.state_dict()
    usable = {}
    for key, value in merged.items():
        if key.startswith("classifier.") and not keep_classifier:
            continue
        if key in own and own[key].shape == value.shape:
            usable[key] = value
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
