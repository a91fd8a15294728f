"""SAM 2 / 2.1 models: one loader for every Hiera size, the configuration read from the checkpoint.

sam2's ``build_sam2`` needs the right hydra YAML for each released file and fails with missing or
unexpected keys when they disagree. Here the configuration is read from the state dict's tensor
shapes (Hiera width, blocks per stage from where the width doubles, windowed position-embedding
sizes, FPN and memory widths; 2 vs 2.1 from the tensors 2.1 added), and the model is built from
sam2's own classes with the arguments of the shipped YAMLs (tests/engines/sam2 check the two give
the same tensors for all eight releases). What shapes do not record (attention heads, which blocks
attend globally, windows of stages 2-4) comes from the release with those shapes; other
(custom or test) shapes get Hiera's defaults: one head, no global blocks.

Costs: ``load_sam2`` builds on the ``meta`` device and adopts the checkpoint's tensors, so peak
memory is about one copy of the weights (hiera_tiny 39 M parameters, 156 MB float32; large 224 M).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_base import SAM2Base

from geoalps.devices import resolve_device
from geoalps.engines.sam.models import _read_state_dict
from geoalps.errors import ModelError

IMAGE_SIZE = 1024
ROPE_FEAT_SIZES = (64, 64)  # stride-16 features at 1024 px, as in every released YAML
HIERA_DEFAULT_WINDOWS = (8, 4, 14, 7)  # Hiera's window_spec default


@dataclass(frozen=True)
class Sam2Config:
    """What decides a SAM 2 model (the fields sam2's YAMLs set); ``version`` is "2" or "2.1"."""

    embed_dim: int
    stages: tuple[int, ...]
    num_heads: int = 1
    global_att_blocks: tuple[int, ...] = ()
    window_spec: tuple[int, ...] = HIERA_DEFAULT_WINDOWS
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    d_model: int = 256
    mem_dim: int = 64
    memory_attention_layers: int = 4
    memory_attention_ff: int = 2048
    fuser_layers: int = 2
    num_maskmem: int = 7
    version: str = "2.1"

    @property
    def short_name(self) -> str:
        """``sam2.1_hiera_tiny`` etc. for the released shapes, else ``custom(...)``."""
        for name, config in SAM2_CONFIGS.items():
            if config == self and name in OFFICIAL_MODEL_NAMES:
                return name
        return f"custom(sam{self.version},embed_dim={self.embed_dim},stages={list(self.stages)})"

    @property
    def size(self) -> str:
        """``hiera_tiny`` ... ``hiera_large`` (the --model-type name) or ``custom``."""
        name = self.short_name
        return name.split("_", 1)[1] if not name.startswith("custom") else "custom"


def _release(version: str, embed_dim, heads, stages, global_blocks, windows=HIERA_DEFAULT_WINDOWS,
             bkg=(14, 14)) -> Sam2Config:
    return Sam2Config(embed_dim=embed_dim, stages=stages, num_heads=heads,
                      global_att_blocks=global_blocks, window_spec=windows,
                      window_pos_embed_bkg_spatial_size=bkg, version=version)


#: The --model-type names of the four Hiera sizes.
HIERA_SIZES = ("hiera_tiny", "hiera_small", "hiera_base_plus", "hiera_large")

_SIZES = {  # sam2's configs/sam2.1/*.yaml (the 2.0 YAMLs have the same trunk)
    "hiera_tiny": dict(embed_dim=96, heads=1, stages=(1, 2, 7, 2), global_blocks=(5, 7, 9), bkg=(7, 7)),
    "hiera_small": dict(embed_dim=96, heads=1, stages=(1, 2, 11, 2), global_blocks=(7, 10, 13), bkg=(7, 7)),
    "hiera_base_plus": dict(embed_dim=112, heads=2, stages=(2, 3, 16, 3), global_blocks=(12, 16, 20)),
    "hiera_large": dict(embed_dim=144, heads=2, stages=(2, 6, 36, 4), global_blocks=(23, 33, 43),
                        windows=(8, 4, 16, 8), bkg=(7, 7)),
}

SAM2_CONFIGS: dict[str, Sam2Config] = {
    f"sam{version}_{size}": _release(version, **spec)
    for version in ("2", "2.1")
    for size, spec in _SIZES.items()
}
OFFICIAL_MODEL_NAMES = tuple(SAM2_CONFIGS)
# Tests only: the whole SAM 2 model (memory parts included, so files look like releases) at a
# few MB; the encoder takes well under a second on a 1024 px input on one CPU core.
SAM2_CONFIGS["tiny"] = Sam2Config(
    embed_dim=8, stages=(1, 1, 1, 1), window_pos_embed_bkg_spatial_size=(7, 7),
    d_model=32, mem_dim=16, memory_attention_layers=1, memory_attention_ff=64, fuser_layers=1,
)


def build_sam2(config: Sam2Config) -> SAM2Base:
    """A randomly initialised ``SAM2Base`` with sam2's classes and its YAMLs' arguments."""
    v21 = config.version == "2.1"
    c = config.embed_dim
    channels = [c * 2 ** k for k in reversed(range(len(config.stages)))]
    trunk = Hiera(
        embed_dim=c,
        num_heads=config.num_heads,
        stages=tuple(config.stages),
        global_att_blocks=tuple(config.global_att_blocks),
        window_spec=tuple(config.window_spec),
        window_pos_embed_bkg_spatial_size=tuple(config.window_pos_embed_bkg_spatial_size),
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=config.d_model, normalize=True,
                                                scale=None, temperature=10000),
        d_model=config.d_model,
        backbone_channel_list=channels,
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )

    def rope(**extra) -> RoPEAttention:
        return RoPEAttention(rope_theta=10000.0, feat_sizes=list(ROPE_FEAT_SIZES),
                             embedding_dim=config.d_model, num_heads=1, downsample_rate=1,
                             dropout=0.1, **extra)

    memory_attention = MemoryAttention(
        d_model=config.d_model,
        pos_enc_at_input=True,
        layer=MemoryAttentionLayer(
            activation="relu",
            dim_feedforward=config.memory_attention_ff,
            dropout=0.1,
            pos_enc_at_attn=False,
            self_attention=rope(),
            d_model=config.d_model,
            pos_enc_at_cross_attn_keys=True,
            pos_enc_at_cross_attn_queries=False,
            cross_attention=rope(rope_k_repeat=True, kv_in_dim=config.mem_dim),
        ),
        num_layers=config.memory_attention_layers,
    )
    memory_encoder = MemoryEncoder(
        out_dim=config.mem_dim,
        position_encoding=PositionEmbeddingSine(num_pos_feats=config.mem_dim, normalize=True,
                                                scale=None, temperature=10000),
        mask_downsampler=MaskDownSampler(embed_dim=config.d_model, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(
            layer=CXBlock(dim=config.d_model, kernel_size=7, padding=3,
                          layer_scale_init_value=1e-6, use_dwconv=True),
            num_layers=config.fuser_layers,
        ),
        in_dim=config.d_model,
    )
    return SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=memory_attention,
        memory_encoder=memory_encoder,
        num_maskmem=config.num_maskmem,
        image_size=IMAGE_SIZE,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        no_obj_embed_spatial=v21,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=v21,
        proj_tpos_enc_in_obj_ptrs=v21,
        use_signed_tpos_enc_to_obj_ptrs=v21,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        # build_sam2's apply_postprocessing (only acts on single-mask outputs)
        sam_mask_decoder_extra_args=dict(
            dynamic_multimask_via_stability=True,
            dynamic_multimask_stability_delta=0.05,
            dynamic_multimask_stability_thresh=0.98,
        ),
        compile_image_encoder=False,
    )


class _NotSam2(ValueError):
    """The state dict does not have SAM 2's layout; the message says what is off."""


def _indexes(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    if not found or found != set(range(len(found))):
        raise _NotSam2(f"no contiguous {prefix}N tensors")
    return len(found)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise _NotSam2(f"no tensor {key}")
    return tuple(state[key].shape)


def is_sam2_state_dict(keys) -> bool:
    """True for SAM 2 layouts (a Hiera trunk under the image encoder), False for SAM's ViT."""
    return any(k.startswith("image_encoder.trunk.") for k in keys)


def infer_sam2_config(state: Mapping[str, torch.Tensor]) -> Sam2Config:
    """Read a SAM 2 configuration from the tensor shapes of a state dict (``ValueError`` if not SAM 2)."""
    trunk = "image_encoder.trunk."
    c, in_chans, k, _ = _shape(state, trunk + "patch_embed.proj.weight")
    if in_chans != 3:
        raise _NotSam2("patch embedding is not a 3-channel convolution")
    depth = _indexes(state, trunk + "blocks.")
    # A stage starts where the width doubles: that block has a projection to its new width.
    starts = [i for i in range(1, depth) if f"{trunk}blocks.{i}.proj.weight" in state]
    bounds = [0, *starts, depth]
    stages = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    if len(stages) != 4:
        raise _NotSam2(f"Hiera trunk has {len(stages)} stages, SAM 2 has 4")
    bkg = _shape(state, trunk + "pos_embed")[2:]
    window0 = _shape(state, trunk + "pos_embed_window")[2]
    d_model = _shape(state, "image_encoder.neck.convs.0.conv.weight")[0]
    mem_dim = _shape(state, "maskmem_tpos_enc")[-1]
    layers = _indexes(state, "memory_attention.layers.")
    ff = _shape(state, "memory_attention.layers.0.linear1.weight")[0]
    fuser = _indexes(state, "memory_encoder.fuser.layers.")
    num_maskmem = _shape(state, "maskmem_tpos_enc")[0]
    version = "2.1" if "no_obj_embed_spatial" in state else "2"
    shaped = Sam2Config(
        embed_dim=c, stages=stages, window_spec=(window0, *HIERA_DEFAULT_WINDOWS[1:]),
        window_pos_embed_bkg_spatial_size=tuple(bkg), d_model=d_model, mem_dim=mem_dim,
        memory_attention_layers=layers, memory_attention_ff=ff, fuser_layers=fuser,
        num_maskmem=num_maskmem, version=version,
    )
    for name in OFFICIAL_MODEL_NAMES:  # what shapes do not record, from the release that has them
        official = SAM2_CONFIGS[name]
        if dataclasses.replace(official, num_heads=1, global_att_blocks=(),
                               window_spec=shaped.window_spec) == shaped and \
                official.window_spec[0] == window0:
            return official
    return shaped


def load_sam2(checkpoint: str | Path, model_type: str = "auto", device: str = "auto") -> tuple[SAM2Base, str]:
    """Load a sam2 ``SAM2Base`` from a ``.pt`` checkpoint (``{"model": state_dict}``), eval mode.

    Args:
        checkpoint: an official ``sam2[.1]_hiera_*.pt`` or any file with the same layout.
        model_type: ``auto`` reads the configuration from the tensor shapes; ``hiera_tiny``,
            ``hiera_small``, ``hiera_base_plus``, ``hiera_large`` are checked against them.
        device: ``auto`` (cuda, else mps, else cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.

    Returns:
        The model and its name (``sam2.1_hiera_tiny`` ..., or ``custom(...)``).

    Raises:
        ModelError: ``"{path}: problem"`` for a missing, truncated or non-torch file, a state
            dict that is not SAM 2's, or a ``model_type`` that disagrees with the shapes.
    """
    path = Path(checkpoint)
    if model_type not in ("auto", *HIERA_SIZES, "tiny"):
        raise ModelError(f"{path}: model type {model_type!r} is not a SAM 2 size "
                         f"(expected auto or one of {', '.join(HIERA_SIZES)})")
    target = resolve_device(device)
    state = _read_state_dict(path)
    if not is_sam2_state_dict(state):
        raise ModelError(f"{path}: not a SAM 2 checkpoint (no Hiera image encoder; a SAM 1 "
                         "checkpoint goes with --engine sam)")
    try:
        config = infer_sam2_config(state)
    except ValueError as exc:
        raise ModelError(f"{path}: not a SAM 2 state dict ({exc})") from None
    name = config.short_name
    if model_type != "auto" and config.size != model_type and not (
            model_type == "tiny" and config == SAM2_CONFIGS["tiny"]):
        raise ModelError(f"{path}: checkpoint is {name}, not {model_type}; use --model-type auto")
    with meta_device():
        model = build_sam2(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"{path}: not a SAM 2 state dict ({detail})") from None
    for module in model.modules():  # RoPE tables are plain attributes, made on meta above
        if isinstance(module, RoPEAttention):
            module.freqs_cis = module.compute_cis(end_x=ROPE_FEAT_SIZES[0], end_y=ROPE_FEAT_SIZES[1])
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise ModelError(f"{path}: checkpoint lacks tensors {leftover[:3]}")
    model = model.to(device=target, dtype=torch.float32).eval().requires_grad_(False)
    for module in model.modules():
        if isinstance(module, RoPEAttention):
            module.freqs_cis = module.freqs_cis.to(target)
    return model, name


class meta_device(torch.overrides.TorchFunctionMode):
    """``with torch.device("meta")`` that still makes ``torch.linspace`` on the CPU: Hiera reads
    its stochastic-depth rates with ``.item()`` while it is built, which meta tensors refuse."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        from torch.utils._device import _device_constructors

        if func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = "cpu" if func is torch.linspace else "meta"
        return func(*args, **kwargs)
