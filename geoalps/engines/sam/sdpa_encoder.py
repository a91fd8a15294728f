"""SAM's image encoder with lighter attention: fused kernels on GPU, query chunks on CPU.

``ImageEncoderViT`` computes each block's attention as explicit softmax(q k^T + relative
positions) v. In its global blocks that is a (heads, 4096, 4096) float32 matrix, written three
times over (scores, scores + positions, softmax): 0.8 GB each for vit_b, the encoder's memory peak
(about 3.6 GB for ``geoalps label`` on CPU).

- ``encoder_forward_sdpa`` (GPU, for speed): the same weights and maths through
  ``F.scaled_dot_product_attention``'s fused CUDA kernels, the decomposed relative positions
  passed as an additive mask (still a tokens x tokens tensor per head: memory about the same).
  Results differ by float rounding only (about 1e-4 on the tiny test model's embedding).
- ``encoder_forward_chunked`` (CPU, for memory): segment_anything's own operations in their own
  order, on a few image rows of queries at a time in the global blocks, so the matrix is never
  whole (about 50 MB a chunk for vit_b). Each query's scores, softmax and output are computed as
  before; only the matrix products' blocking changes (differences at float rounding, the
  masks stay the same: tests/engines/sam/test_batch_encoder.py, benchmarks/label_memory).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    get_rel_pos,
    window_partition,
    window_unpartition,
)

#: Bytes of one chunk's attention matrix on CPU (a few image rows of queries).
CHUNK_BYTES = 64 * 2**20


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


def encoder_forward_chunked(encoder, x: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """ImageEncoderViT.forward with global-attention blocks computed a few query rows at a time
    (windowed blocks, whose matrices are small, run unchanged)."""
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for blk in encoder.blocks:
        if blk.window_size > 0:
            x = blk(x)
            continue
        x = x + _chunked_attention(blk.attn, blk.norm1(x), chunk_bytes)
        x = x + blk.mlp(blk.norm2(x))
    return encoder.neck(x.permute(0, 3, 1, 2))


def _chunked_attention(attn, x: torch.Tensor, chunk_bytes: int) -> torch.Tensor:
    """image_encoder.Attention.forward (and add_decomposed_rel_pos) on query rows in chunks."""
    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * heads, h * w, -1).unbind(0)
    d = q.shape[-1]
    keys_t = k.transpose(-2, -1)
    if attn.use_rel_pos:
        rh = get_rel_pos(h, h, attn.rel_pos_h)
        rw = get_rel_pos(w, w, attn.rel_pos_w)
    rows = max(1, chunk_bytes // (b * heads * w * h * w * x.element_size()))
    out = torch.empty((b * heads, h * w, d), dtype=q.dtype, device=q.device)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        qs = q[:, r0 * w : r1 * w]
        scores = (qs * attn.scale) @ keys_t
        if attn.use_rel_pos:
            r_q = qs.reshape(b * heads, r1 - r0, w, d)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh[r0:r1])
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
            scores = (
                scores.view(b * heads, r1 - r0, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
            ).view(b * heads, (r1 - r0) * w, h * w)
        out[:, r0 * w : r1 * w] = scores.softmax(dim=-1) @ v
    out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)
