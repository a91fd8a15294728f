"""SAM models: one loader for every size, the size read from the checkpoint's tensor shapes.

segment_anything builds a model per named size (``sam_model_registry["vit_b"]``) and fails with a
wall of missing/unexpected keys when the name and the file disagree. Here the encoder and decoder
configuration is read from the state dict itself (embedding width, block count, heads from the
relative-position tables, global blocks from their table length, ...), so vit_b, vit_l, vit_h and
the tiny random-weight configurations the tests build all load through the same code path.

Costs: ``load_sam`` builds the model on the ``meta`` device and adopts the checkpoint's tensors
(``assign=True``), so no time goes into random initialisation and peak memory is about one copy
of the weights (vit_b 375 MB, vit_l 1.25 GB, vit_h 2.56 GB, float32).
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Mapping

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from geoalps.devices import resolve_device
from geoalps.errors import ModelError

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# The mask decoder's head count leaves no trace in tensor shapes; every SAM release uses 8.
DECODER_NUM_HEADS = 8


@dataclass(frozen=True)
class SamConfig:
    """Everything that decides the shapes of a SAM model (segment_anything's ``_build_sam``)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    encoder_window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    encoder_qkv_bias: bool = True
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256  # also the encoder's out_chans
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = DECODER_NUM_HEADS
    decoder_attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256

    @property
    def short_name(self) -> str:
        """``vit_b``/``vit_l``/``vit_h`` for the official shapes, else ``custom(...)``."""
        for name, config in SAM_CONFIGS.items():
            if config == self and name in OFFICIAL_MODEL_TYPES:
                return name
        return f"custom(embed_dim={self.encoder_embed_dim},depth={self.encoder_depth})"


OFFICIAL_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")

SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Tests only: a few ms per decoder prompt on CPU, same 1024 px input and 64x64 embedding grid.
    "tiny": SamConfig(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        encoder_window_size=7,
        prompt_embed_dim=64,
        decoder_mlp_dim=128,
        iou_head_hidden_dim=64,
    ),
}


def build_sam(config: SamConfig) -> Sam:
    """A randomly initialised ``Sam`` with the given shapes (segment_anything's own modules)."""
    grid = config.image_size // config.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=config.encoder_qkv_bias,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.encoder_window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
                attention_downsample_rate=config.decoder_attention_downsample_rate,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


class _NotSam(ValueError):
    """The state dict does not have SAM's layout; the message says what is off."""


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indexes = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    if not indexes:
        raise _NotSam(f"no {prefix}N tensors")
    if indexes != set(range(len(indexes))):
        raise _NotSam(f"{prefix}N indexes are not contiguous")
    return len(indexes)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise _NotSam(f"no tensor {key}")
    return tuple(state[key].shape)


def infer_sam_config(state: Mapping[str, torch.Tensor]) -> SamConfig:
    """Read a SAM configuration from the tensor shapes of a state dict.

    Raises ``ValueError`` (with a short reason) when the shapes are not those of a SAM model.
    """
    embed_dim, in_chans, patch, patch_w = _shape(state, "image_encoder.patch_embed.proj.weight")
    if in_chans != 3 or patch != patch_w:
        raise _NotSam("patch embedding is not a square 3-channel convolution")
    pos = _shape(state, "image_encoder.pos_embed")
    if len(pos) != 4 or pos[1] != pos[2] or pos[3] != embed_dim:
        raise _NotSam(f"image_encoder.pos_embed has shape {pos}")
    grid = pos[1]
    depth = _count(state, "image_encoder.blocks.")

    head_dim = _shape(state, "image_encoder.blocks.0.attn.rel_pos_h")[1]
    if head_dim <= 0 or embed_dim % head_dim:
        raise _NotSam(f"head size {head_dim} does not divide embed_dim {embed_dim}")
    global_blocks, window_sizes = [], set()
    for i in range(depth):
        length = _shape(state, f"image_encoder.blocks.{i}.attn.rel_pos_h")[0]
        span = (length + 1) // 2  # the table holds 2 * span - 1 relative offsets
        if span == grid:
            global_blocks.append(i)
        else:
            window_sizes.add(span)
    if len(window_sizes) > 1:
        raise _NotSam(f"blocks use several window sizes {sorted(window_sizes)}")
    window = window_sizes.pop() if window_sizes else 14  # all-global: unused
    mlp_hidden = _shape(state, "image_encoder.blocks.0.mlp.lin1.weight")[0]
    out_chans = _shape(state, "image_encoder.neck.0.weight")[0]

    prompt_dim = _shape(state, "prompt_encoder.no_mask_embed.weight")[1]
    if prompt_dim != out_chans:
        raise _NotSam(f"encoder outputs {out_chans} channels but prompts are {prompt_dim}-d")
    mask_in_chans = _shape(state, "prompt_encoder.mask_downscaling.3.weight")[0]
    decoder_depth = _count(state, "mask_decoder.transformer.layers.")
    decoder_mlp = _shape(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight")[0]
    internal = _shape(
        state, "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"
    )[0]
    if internal <= 0 or prompt_dim % internal:
        raise _NotSam(f"decoder cross-attention width {internal} does not divide {prompt_dim}")
    if internal % DECODER_NUM_HEADS:
        raise _NotSam(
            f"decoder cross-attention width {internal} is not a multiple of "
            f"{DECODER_NUM_HEADS} heads"
        )
    mask_tokens = _shape(state, "mask_decoder.mask_tokens.weight")[0]
    iou_depth = _count(state, "mask_decoder.iou_prediction_head.layers.")
    iou_hidden = _shape(state, "mask_decoder.iou_prediction_head.layers.0.weight")[0]

    return SamConfig(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=embed_dim // head_dim,
        encoder_global_attn_indexes=tuple(global_blocks),
        encoder_window_size=window,
        encoder_mlp_ratio=mlp_hidden / embed_dim,
        encoder_qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in state,
        image_size=grid * patch,
        patch_size=patch,
        prompt_embed_dim=prompt_dim,
        mask_in_chans=mask_in_chans,
        decoder_depth=decoder_depth,
        decoder_mlp_dim=decoder_mlp,
        decoder_num_heads=DECODER_NUM_HEADS,
        decoder_attention_downsample_rate=prompt_dim // internal,
        num_multimask_outputs=mask_tokens - 1,
        iou_head_depth=iou_depth,
        iou_head_hidden_dim=iou_hidden,
    )


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """torch.load with errors turned into one-liners; tensors only (``weights_only``)."""
    if not path.exists():
        raise ModelError(f"{path}: checkpoint file not found")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head.startswith(b"PK\x03\x04")  # torch.save since 1.6
    is_legacy = head[:1] == b"\x80"  # older torch.save: a pickle stream
    if not (is_zip or is_legacy):
        raise ModelError(f"{path}: not a PyTorch checkpoint")
    if is_zip:
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError):
            raise ModelError(f"{path}: truncated or corrupt checkpoint (incomplete archive)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise ModelError(f"{path}: truncated checkpoint (ends early)") from None
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/... for bad files
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Weights only load failed" in text:
            raise ModelError(
                f"{path}: checkpoint holds Python objects besides tensors; not a SAM state dict"
            ) from None
        if "EOF" in text or "truncat" in text.lower():
            raise ModelError(f"{path}: truncated checkpoint ({text})") from None
        raise ModelError(f"{path}: corrupt checkpoint ({text})") from None
    # Fine-tuning scripts often wrap the weights: {"model": state_dict} or {"state_dict": ...}.
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelError(f"{path}: not a SAM state dict (not a mapping of names to tensors)")
    return obj


def load_sam(
    checkpoint: str | Path, model_type: str = "auto", device: str = "auto"
) -> tuple[Sam, str]:
    """Load a segment_anything ``Sam`` from a ``.pth`` state dict, in eval mode on ``device``.

    Args:
        checkpoint: path of a SAM state dict (official ``sam_vit_b_01ec64.pth`` etc. or any
            other configuration saved with ``torch.save(state_dict)``).
        model_type: ``auto`` reads the configuration from the tensor shapes; ``vit_b``,
            ``vit_l``, ``vit_h`` (or ``tiny``) are checked against those shapes.
        device: ``auto`` (cuda, else mps, else cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.

    Returns:
        The model and the name of its size: ``vit_b``, ``vit_l``, ``vit_h`` or
        ``custom(embed_dim=..,depth=..)``.

    Raises:
        ModelError: ``"{path}: problem"`` for a missing, truncated or non-torch file, a
            state dict that is not SAM's, or a ``model_type`` that disagrees with the shapes.
    """
    path = Path(checkpoint)
    if model_type != "auto" and model_type not in SAM_CONFIGS:
        known = ", ".join(["auto", *SAM_CONFIGS])
        raise ModelError(f"{path}: unknown model type {model_type!r} (expected one of {known})")
    target = resolve_device(device)
    state = _read_state_dict(path)
    try:
        config = infer_sam_config(state)
    except ValueError as exc:
        raise ModelError(f"{path}: not a SAM state dict ({exc})") from None
    name = config.short_name
    if model_type != "auto" and SAM_CONFIGS[model_type] != config:
        raise ModelError(
            f"{path}: checkpoint is {name} (embed_dim={config.encoder_embed_dim}, "
            f"depth={config.encoder_depth}), not {model_type}; use --model-type auto"
        )

    with torch.device("meta"):
        model = build_sam(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"{path}: not a SAM state dict ({detail})") from None
    # pixel_mean/pixel_std are non-persistent buffers: not in the file, still on meta.
    model.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
    model.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # a segment_anything release with new buffers would land here
        raise ModelError(f"{path}: checkpoint lacks tensors {leftover[:3]}")
    model = model.to(device=target, dtype=torch.float32).eval().requires_grad_(False)
    return model, name
