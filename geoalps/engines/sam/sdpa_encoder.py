"""SAM's image encoder with its attention through ``scaled_dot_product_attention`` (GPU).

``ImageEncoderViT`` computes each block's attention as explicit softmax(q k^T + relative
positions) v; ``encoder_forward_sdpa`` runs the same weights and maths through
``F.scaled_dot_product_attention``'s fused CUDA kernels, the decomposed relative positions
passed as an additive mask. Results differ by float rounding only (about 1e-4 on the tiny test
model's embedding). ``FastMaskGenerator`` uses it on CUDA by default, for speed: the additive
mask is still a (tokens x tokens) tensor per head, so memory stays about the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    get_rel_pos,
    window_partition,
    window_unpartition,
)


def encoder_forward_sdpa(encoder, x: torch.Tensor) -> torch.Tensor:
    """ImageEncoderViT.forward with each block's attention through SDPA (same math)."""
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for blk in encoder.blocks:
        shortcut = x
        x = blk.norm1(x)
        if blk.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, blk.window_size)
        x = _sdpa_attention(blk.attn, x)
        if blk.window_size > 0:
            x = window_unpartition(x, blk.window_size, pad_hw, (h, w))
        x = shortcut + x
        x = x + blk.mlp(blk.norm2(x))
    return encoder.neck(x.permute(0, 3, 1, 2))


def _sdpa_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """image_encoder.Attention.forward, the decomposed relative positions as an additive mask."""
    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, d)
    mask = None
    if attn.use_rel_pos:
        d = q.shape[-1]
        rh = get_rel_pos(h, h, attn.rel_pos_h).to(q.dtype)
        rw = get_rel_pos(w, w, attn.rel_pos_w).to(q.dtype)
        r_q = q.reshape(b * heads, h, w, d)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
        mask = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b, heads, h * w, h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    out = out.reshape(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)
