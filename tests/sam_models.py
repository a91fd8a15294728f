"""Random-weight SAM and SAM 2 models for tests and benchmarks (not part of the library).

``build_tiny_sam``/``build_tiny_sam2`` give tiny full-pipeline models; ``sharpen_*`` give a
random decoder the gains that make prompts produce distinct masks (benchmarks use them on
vit_b and Hiera shapes too); ``save_sam_checkpoint``/``save_sam2_checkpoint`` write the
releases' file layouts, which the library's loaders read. Benchmarks import this module with the
repository root on ``sys.path`` (``from tests.sam_models import ...``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from segment_anything.modeling import Sam

from geoalps.engines.sam.models import SAM_CONFIGS, build_sam
from geoalps.files import atomic_path

if TYPE_CHECKING:  # sam2 is imported by the SAM 2 helpers only (it is an optional dependency)
    from sam2.modeling.sam2_base import SAM2Base


def build_tiny_sam(seed: int = 0, **overrides) -> Sam:
    """A tiny random-weight SAM for tests: full pipeline, 1024 px input, 64x64 embedding grid.

    ``overrides`` replace fields of ``SAM_CONFIGS["tiny"]`` (e.g. ``encoder_embed_dim=48``).
    Every tensor is random, including those segment_anything initialises to zero (positional
    tables), so a save/load round trip checks real values. Plain random decoder weights give
    one image-wide, near-zero noise mask per prompt that NMS collapses to a single mask, so the
    decoder is given gains (``sharpen_random_decoder``) that make each prompt produce a few
    distinct blobs with logits of several units: tens of masks per image at low thresholds.
    The global RNG is left untouched. Cost: about 0.1 s to build; the encoder takes well under a
    second and the decoder a few ms a prompt on one CPU core.
    """
    config = dataclasses.replace(SAM_CONFIGS["tiny"], **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                    param.normal_(0.0, 0.02)
            sharpen_random_decoder(model)
    return model.eval()


def sharpen_random_decoder(model: Sam) -> None:
    """Test-model gains on ``model.mask_decoder``: :func:`sharpen_mask_decoder`."""
    sharpen_mask_decoder(model.mask_decoder)


def sharpen_mask_decoder(decoder) -> None:
    """Test-model gains: sharp image->token attention, strong token values, smooth upscaling.

    For any SAM-style mask decoder (segment_anything's, sam2's: same two-way transformer, upscaling
    and hypernetworks):

    - image->token attention queries/keys share one orthonormal projection (scaled x10), so each
      pixel attends to the token most like it, and the attended token's value (x10) dominates;
    - both transposed convolutions repeat one kernel tap, so masks are smooth at 4 px;
    - the hypernetwork output is scaled x1000 so logits reach several units (stable masks).
    """
    for layer in decoder.transformer.layers:
        attn = layer.cross_attn_image_to_token
        inner, dim = attn.q_proj.weight.shape
        basis = torch.linalg.qr(torch.randn(dim, inner))[0].T
        attn.q_proj.weight.copy_(basis * 10.0)
        attn.k_proj.weight.copy_(basis)
        attn.q_proj.bias.zero_()
        attn.k_proj.bias.zero_()
        attn.out_proj.weight.mul_(10.0)
    for index in (0, 3):
        weight = decoder.output_upscaling[index].weight
        weight.copy_(weight[:, :, :1, :1].expand_as(weight))
    for mlp in decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(1000.0)
        mlp.layers[-1].bias.mul_(1000.0)


def save_sam_checkpoint(model: Sam, path: str | Path) -> Path:
    """Save the state dict as segment_anything's releases do (``torch.save(state_dict)``)."""
    with atomic_path(path, overwrite=True, keep_suffix=False) as tmp:
        torch.save(model.state_dict(), tmp)
    return Path(path)


def build_tiny_sam2(seed: int = 0, **overrides) -> SAM2Base:
    """A tiny random-weight SAM 2 for tests (``SAM2_CONFIGS["tiny"]`` with ``overrides``).

    Every tensor is random (including the ones sam2 initialises to zero), and the mask decoder
    gets the test gains of :func:`sharpen_random_decoder` so that
    prompts give distinct blobs rather than one image-wide noise mask. The global RNG is left
    untouched. Cost: a fraction of a second to build; a few MB.
    """
    from geoalps.engines.sam2.models import SAM2_CONFIGS, build_sam2

    config = dataclasses.replace(SAM2_CONFIGS["tiny"], **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("pos_embed", "pos_embed_window", "no_mem_embed")):
                    param.normal_(0.0, 0.02)
            sharpen_random_sam2_decoder(model)
    return model.eval()


def sharpen_random_sam2_decoder(model: SAM2Base) -> None:
    """The sam engine's test gains on SAM 2's decoder (same transformer and heads:
    :func:`sharpen_mask_decoder`), plus a neutral start for its
    high-resolution skip features (convolutions scaled x0.1)."""
    decoder = model.sam_mask_decoder
    sharpen_mask_decoder(decoder)  # draws the same random numbers in the same order as before
    for conv in (decoder.conv_s0, decoder.conv_s1):
        conv.weight.mul_(0.1)


def save_sam2_checkpoint(model: SAM2Base, path: str | Path) -> Path:
    """Save as sam2's releases are saved: ``torch.save({"model": state_dict})``."""
    with atomic_path(path, overwrite=True, keep_suffix=False) as tmp:
        torch.save({"model": model.state_dict()}, tmp)
    return Path(path)
