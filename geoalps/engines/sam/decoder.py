"""SAM's mask decoder for single-point prompts, rearranged so a grid of prompts costs less.

Same weights, same arithmetic up to float rounding (~1e-6 on the logits) as
``Sam.mask_decoder(..., multimask_output=True)`` called the way SamPredictor does for one
positive point per prompt. What changes is where the work happens:

- Layer 0 of the two-way transformer sees the same image tokens for every prompt (the image
  embedding plus the no-mask embedding), so its image-side projections (token->image keys and
  values, image->token queries) are computed once per image, not once per prompt. segment_anything
  repeats the image embedding per prompt (``repeat_interleave``) and projects every copy.
- The mask upscaling (two stride-2, kernel-2 transposed convolutions) runs as two matrix products
  on the token layout the transformer already produces, with a fused ``layer_norm``; the pixels are
  reordered only once, on the three output masks, instead of transposing wide feature maps. On
  CPU it runs one prompt at a time, so its 12 MB of intermediates stay in cache.
- Only the three multimask outputs are built.

The same class serves SAM 2 (``geoalps.engines.sam2.decoder.Sam2PromptDecoder``), whose mask
decoder has the same two-way transformer, prompt encoder interface (no-mask embedding, dense
positional encoding) and heads, plus two things given through hooks: output tokens placed before
the IoU token (``_parts``: the object-score token), and high-resolution skip features added inside
the upscaling (``set_embedding(..., high_res_feats)``), laid out once per image in the token
layout's pixel order (the 2x2 blocks of each transposed convolution), so the upscaling stays two
matrix products, each followed by one broadcast addition (about 10% of the upscaling's time).

Cost per prompt for vit_b (256-d decoder, 64x64 tokens): about 1.3 GMAC, mostly large GEMMs,
against about 1.75 GMAC plus heavy memory traffic in segment_anything; peak memory about 15 MB
per prompt in a batch on CPU (keys, projections; the upscaling maps, 12 MB, exist for one prompt at
a time), about 40 MB on GPU (the whole batch is upscaled at once).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


UPSCALE_BYTES = 8 << 20  # CPU upscaling working set: one vit_b prompt, several small-model ones


class PointPromptDecoder:
    """Decode many one-point prompts against one image embedding.

    Usage: ``decoder.set_embedding(embedding)`` once per image (or crop), then
    ``decoder(points_1024)`` per batch of points given in the 1024 px model input frame.

    ``dtype``: the precision of the transformer, heads and upscaling. float32 (default) gives
    the model's results up to float rounding; ``torch.bfloat16`` runs them on a bf16 copy of the
    mask decoder (the model is untouched; about 4 MB for a 256-d decoder), several times faster
    on CPUs with AMX or AVX512-BF16 but with bf16 rounding (logits and IoUs to ~1e-2): masks near
    a threshold change, so it is an opt-in (benchmarks/sam2_amg/README.md has its mask recall).
    Outputs are float32 either way.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        prompt_encoder, decoder, prefix = self._parts(model)
        if decoder.num_multimask_outputs < 1:
            raise ValueError("the mask decoder has no multimask outputs")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"decoder dtype must be float32 or bfloat16, not {dtype}")
        if dtype != decoder.iou_token.weight.dtype:
            decoder = copy.deepcopy(decoder).to(dtype)
            prefix = [t.to(dtype) for t in prefix]
        self.dtype = dtype
        self.model = model
        self.prompt_encoder = prompt_encoder
        self.decoder = decoder
        self._prefix = prefix
        self.transformer = decoder.transformer
        up = decoder.output_upscaling
        conv1, norm1, conv2 = up[0], up[1], up[3]
        c1, c2 = conv1.out_channels, conv2.out_channels
        # Transposed conv with kernel 2, stride 2 == per-pixel linear map to 2x2 output pixels;
        # columns ordered (ky, kx, channel) so the result reshapes to (pixels * 4, channels).
        self._w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)
        self._b1 = conv1.bias.repeat(4)
        self._w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        self._b2 = conv2.bias.repeat(4)
        self._norm = norm1
        self._act1, self._act2 = up[2], up[4]
        self._c1, self._c2 = c1, c2
        self._image: dict[str, torch.Tensor] | None = None

    def _parts(self, model: nn.Module) -> tuple[nn.Module, nn.Module, list[torch.Tensor]]:
        """The prompt encoder, the mask decoder and the output tokens placed before the IoU
        token (none for SAM; SAM 2's object-score token), which no output reads."""
        return model.prompt_encoder, model.mask_decoder, []

    @torch.inference_mode()
    def set_embedding(
        self, embedding: torch.Tensor, high_res_feats: list[torch.Tensor] | None = None
    ) -> None:
        """Precompute the prompt-independent parts for one image embedding (1, C, h, w).

        ``high_res_feats``: SAM 2's skip features ``[feat_s0 (1, C/8, 4h, 4w), feat_s1 (1, C/4,
        2h, 2w)]``, added after the first and second transposed convolution (None: SAM, none).
        """
        if embedding.dim() != 4 or embedding.shape[0] != 1:
            raise ValueError("expected one image embedding of shape (1, C, h, w)")
        pe_layer = self.prompt_encoder
        dtype = self.dtype
        dense = pe_layer.no_mask_embed.weight.reshape(1, -1, 1, 1).to(dtype)
        embedding = embedding.to(dtype)
        _, c, h, w = embedding.shape
        keys = (embedding + dense).flatten(2).permute(0, 2, 1).contiguous()  # (1, N, C)
        key_pe = pe_layer.get_dense_pe().flatten(2).permute(0, 2, 1).to(keys.dtype)
        layer0 = self.transformer.layers[0]
        keys_pe = keys + key_pe
        self._image = {
            "keys": keys,
            "key_pe": key_pe,
            "t2i_k": layer0.cross_attn_token_to_image.k_proj(keys_pe),
            "t2i_v": layer0.cross_attn_token_to_image.v_proj(keys),
            "i2t_q": layer0.cross_attn_image_to_token.q_proj(keys_pe),
        }
        self._hw = (h, w)
        self._skip = None
        if high_res_feats is not None:
            s0, s1 = _skip_tokens([f.to(dtype) for f in high_res_feats], h, w)
            self._skip = (s0 + self._b2, s1 + self._b1)

    @torch.inference_mode()
    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for one positive point each.

        Args:
            points: (B, 2) float, x/y in the model's 1024 px input frame (SamPredictor's
                ``transform.apply_coords`` output; float64 as SamAutomaticMaskGenerator passes).

        Returns:
            Low-resolution mask logits (B, M, 4h, 4w) and predicted IoU (B, M), M the number of
            multimask outputs (3 for SAM), as ``mask_decoder(..., multimask_output=True)``.
        """
        iou, _, masks = self.decode(points)
        return masks, iou

    @torch.inference_mode()
    def decode(
        self, points: torch.Tensor, min_iou: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted IoU for every prompt, mask logits only for prompts that can pass ``min_iou``.

        The IoU head reads the transformer's IoU token alone, so prompts whose masks all have
        predicted IoU <= ``min_iou`` (SamAutomaticMaskGenerator drops those masks first) skip the
        mask upscaling, about half of the decoder's cost.

        Returns:
            ``iou`` (B, M); ``index`` (K,) of the prompts with at least one mask above
            ``min_iou`` (all prompts when None); ``masks`` (K, M, 4h, 4w) logits for them.
        """
        if self._image is None:
            raise RuntimeError("call set_embedding() first")
        image = self._image
        device = image["keys"].device
        coords = points.to(device=device)[:, None, :]
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=device)
        sparse, _ = self.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        dec = self.decoder
        output_tokens = torch.cat([*self._prefix, dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
        tokens = torch.cat((output_tokens, sparse.to(output_tokens.dtype)), dim=1)

        queries, query_pe, keys = self._transformer(tokens, image)

        # The final attention, token by token (each token's output depends on that token
        # alone): only the IoU token and the multimask tokens are read afterwards (the point
        # tokens, the single-mask token and SAM 2's object-score token are dropped), and with
        # ``min_iou`` the mask tokens only of prompts whose IoU passes.
        first = len(self._prefix)
        multimask = list(range(first + 2, first + 1 + dec.num_mask_tokens))
        if min_iou is None:
            hs = self._final_attention([first, *multimask], queries, query_pe, keys)
            iou = dec.iou_prediction_head(hs[:, 0])[:, 1:]
            index = torch.arange(len(iou), device=iou.device)
            mask_tokens = hs[:, 1:]
        else:
            iou_token = self._final_attention([first], queries, query_pe, keys)[:, 0]
            iou = dec.iou_prediction_head(iou_token)[:, 1:]
            index = (iou > min_iou).any(dim=1).nonzero()[:, 0]
            keys = keys[index]
            if len(index):
                mask_tokens = self._final_attention(multimask, queries[index], query_pe[index], keys)
        if len(index):
            masks = self._upscale_and_project(keys, mask_tokens)
        else:
            h, w = self._hw
            masks = keys.new_zeros((0, iou.shape[1], 4 * h, 4 * w))
        return iou.float(), index, masks.float()

    def _transformer(self, tokens: torch.Tensor, image: dict[str, torch.Tensor]):
        """TwoWayTransformer.forward up to its final attention: layer 0 on the shared image,
        later layers per prompt. Returns queries, query_pe and keys."""
        query_pe = tokens
        key_pe = image["key_pe"]
        layers = self.transformer.layers
        queries, keys = self._first_layer(layers[0], tokens, query_pe, image)
        for layer in layers[1:]:
            queries, keys = self._later_layer(layer, queries, keys, query_pe, key_pe)
        return queries, query_pe, keys

    def _final_attention(self, which: list[int], queries, query_pe, keys) -> torch.Tensor:
        """TwoWayTransformer's final token->image attention and norm for the tokens ``which``."""
        t = self.transformer
        queries, query_pe = queries[:, which], query_pe[:, which]
        attn_out = _tokens_to_image(
            t.final_attn_token_to_image, queries + query_pe, keys, self._image["key_pe"]
        )
        return t.norm_final_attn(queries + attn_out)

    def _first_layer(self, layer, queries, query_pe, image):
        """TwoWayAttentionBlock.forward for block 0, whose image tokens all prompts share."""
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)

        # Tokens attend to the image: keys/values projected once; prompts folded into queries.
        attn = layer.cross_attn_token_to_image
        q = attn.q_proj(queries + query_pe)  # (B, T, I)
        b, t, inner = q.shape
        heads = attn.num_heads
        d = inner // heads
        n = image["t2i_k"].shape[1]
        qh = q.reshape(b, t, heads, d).permute(2, 0, 1, 3).reshape(heads, b * t, d)
        kh = image["t2i_k"].reshape(n, heads, d).permute(1, 2, 0)  # (h, d, N)
        vh = image["t2i_v"].reshape(n, heads, d).permute(1, 0, 2)  # (h, N, d)
        weights = torch.softmax(torch.bmm(qh, kh) / math.sqrt(d), dim=-1)
        out = torch.bmm(weights, vh)  # (h, B*T, d)
        out = out.reshape(heads, b, t, d).permute(1, 2, 0, 3).reshape(b, t, inner)
        queries = layer.norm2(queries + attn.out_proj(out))

        queries = layer.norm3(queries + layer.mlp(queries))

        # The image attends to the tokens: queries projected once per image.
        attn = layer.cross_attn_image_to_token
        k = attn.k_proj(queries + query_pe)  # (B, T, I)
        kh = k.reshape(b, t, heads, d).permute(2, 0, 1, 3).reshape(heads, b * t, d)
        qh = image["i2t_q"].reshape(n, heads, d).permute(1, 2, 0)  # (h, d, N)
        scores = torch.bmm(kh, qh) / math.sqrt(d)  # (h, B*T, N)
        scores = scores.reshape(heads, b, t, n).permute(1, 2, 0, 3)  # (B, T, h, N)
        keys = _image_to_tokens_output(attn, scores, queries, image["keys"])
        return queries, layer.norm4(keys)

    def _later_layer(self, layer, queries, keys, query_pe, key_pe):
        """TwoWayAttentionBlock.forward for blocks 1.., per prompt, without (B, N, I) tensors."""
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        out = _tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, keys, key_pe)
        queries = layer.norm2(queries + out)
        queries = layer.norm3(queries + layer.mlp(queries))

        attn = layer.cross_attn_image_to_token
        heads = attn.num_heads
        k = attn.k_proj(queries + query_pe)  # (B, T, I)
        b, t, inner = k.shape
        d = inner // heads
        c = keys.shape[-1]
        # q.k = (Wq x + bq).k = x.(Wq^T k) + bq.k: project the few tokens, not the N pixels.
        w_q = attn.q_proj.weight.reshape(heads, d, c)
        k = k.reshape(b, t, heads, d)
        kq = torch.einsum("bthd,hdc->bthc", k, w_q).reshape(b, t * heads, c)
        kb = torch.einsum("bthd,hd->bth", k, attn.q_proj.bias.reshape(heads, d))
        scores = _scores_against_image(kq, kb.reshape(b, t * heads, 1), keys, key_pe)
        scores = scores.reshape(b, t, heads, -1) / math.sqrt(d)
        # This layer's input keys are not read again: accumulate into them in place.
        keys = _image_to_tokens_output(attn, scores, queries, keys, inplace=True)
        return queries, layer.norm4(keys)

    def _upscale_and_project(self, keys: torch.Tensor, mask_tokens: torch.Tensor) -> torch.Tensor:
        """output_upscaling + hypernetwork product, on the token layout (B, N, C), for the
        multimask tokens (B, M, C) out of the transformer.

        On CPU one vit_b prompt at a time (``UPSCALE_BYTES``): its intermediates (4 MB + 8 MB)
        stay in cache, which makes the memory-bound steps (bias, layer norm, GELUs, the 3-column
        product) about twice as fast as on a batch-sized (B x 12 MB) working set; smaller
        decoders take several prompts per step, so the op count stays low. GPUs take the whole
        batch at once.
        """
        dec = self.decoder
        b = keys.shape[0]
        h, w = self._hw
        hyper = torch.stack(  # multimask outputs are mask tokens 1..M
            [dec.output_hypernetworks_mlps[i](mask_tokens[:, i - 1]) for i in range(1, dec.num_mask_tokens)],
            dim=2,
        )  # (B, C2, M)
        m = hyper.shape[-1]
        # CPU: as many prompts as keep the largest map (N*16 x C2 floats) within UPSCALE_BYTES.
        per_prompt = keys.shape[1] * 16 * self._c2 * keys.element_size()
        step = b if keys.device.type != "cpu" else max(1, UPSCALE_BYTES // per_prompt)
        out = keys.new_empty((b, m, 4 * h, 4 * w))
        skip = self._skip
        for s in range(0, b, step):
            k = keys[s : s + step]
            c = len(k)
            n = k.shape[1]
            if skip is None:
                y = torch.addmm(self._b1, k.reshape(c * n, -1), self._w1)  # (c*N, 4*C1)
            else:  # SAM 2: dc1(src) + feat_s1, the bias folded into the skip rows
                y = torch.mm(k.reshape(c * n, -1), self._w1).reshape(c, n, -1).add_(skip[1])
            y = y.reshape(c, n * 4, self._c1)
            y = F.layer_norm(y, (self._c1,), self._norm.weight, self._norm.bias, self._norm.eps)
            y = self._act1(y)
            if skip is None:
                y = torch.addmm(self._b2, y.reshape(c * n * 4, self._c1), self._w2)
            else:  # dc2(.) + feat_s0
                y = torch.mm(y.reshape(c * n * 4, self._c1), self._w2).reshape(c, n * 4, -1).add_(skip[0])
            y = self._act2(y.reshape(c, n * 16, self._c2))
            masks = torch.bmm(y, hyper[s : s + step])  # (c, N*16, M): pixels (i, j, ky, kx, ky2, kx2)
            masks = masks.reshape(c, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
            out[s : s + step] = masks.reshape(c, m, 4 * h, 4 * w)
        return out


def _skip_tokens(high_res_feats, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's skip features in the upscaling's token layout.

    After the first product, row ``(i, j)`` and column block ``(ky, kx)`` hold pixel
    ``(2i + ky, 2j + kx)`` of the 2h x 2w map; after the second, row ``(i, j, ky, kx)`` and column
    block ``(ky2, kx2)`` hold pixel ``(4i + 2ky + ky2, 4j + 2kx + kx2)`` of the 4h x 4w map.
    Returns ``(s0 (4N, 4*C2), s1 (N, 4*C1))``, N = h*w; 12 MB for a 256-d decoder.
    """
    feat_s0, feat_s1 = high_res_feats
    c1, c2 = feat_s1.shape[1], feat_s0.shape[1]
    if feat_s1.shape[-2:] != (2 * h, 2 * w) or feat_s0.shape[-2:] != (4 * h, 4 * w):
        raise ValueError("high-resolution features must be 2x and 4x the embedding's size")
    s1 = feat_s1[0].reshape(c1, h, 2, w, 2).permute(1, 3, 2, 4, 0)  # (i, j, ky, kx, ch)
    s0 = feat_s0[0].reshape(c2, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
    return s0.reshape(h * w * 4, 4 * c2), s1.reshape(h * w, 4 * c1)


def _scores_against_image(
    proj: torch.Tensor, bias: torch.Tensor, keys: torch.Tensor, key_pe: torch.Tensor
) -> torch.Tensor:
    """``proj @ (keys + key_pe)^T + bias`` for (B, R, C) rows, without forming keys + key_pe.

    ``key_pe`` is (1, N, C), shared by all prompts; ``keys`` is (B, N, C) or (1, N, C).
    """
    b, r, c = proj.shape
    flat = proj.reshape(b * r, c)
    scores = torch.mm(flat, key_pe[0].t()).reshape(b, r, -1)
    scores += bias
    if keys.shape[0] == 1:
        scores.reshape(b * r, -1).addmm_(flat, keys[0].t())
    else:
        scores.baddbmm_(proj, keys.transpose(1, 2))
    return scores


def _tokens_to_image(attn, q: torch.Tensor, keys: torch.Tensor, key_pe: torch.Tensor):
    """``attn(q=q, k=keys + key_pe, v=keys)`` for few query tokens and many image tokens.

    The key/value projections are moved to the token side (Wk^T q, then Wv after the
    attention-weighted sum of image tokens), so no (B, N, I) projection of the image is formed.
    """
    heads = attn.num_heads
    qp = attn.q_proj(q)  # (B, T, I)
    b, t, inner = qp.shape
    d = inner // heads
    c = keys.shape[-1]
    qp = qp.reshape(b, t, heads, d)
    w_k = attn.k_proj.weight.reshape(heads, d, c)
    qk = torch.einsum("bthd,hdc->bhtc", qp, w_k).reshape(b, heads * t, c)
    qb = torch.einsum("bthd,hd->bht", qp, attn.k_proj.bias.reshape(heads, d))
    scores = _scores_against_image(qk, qb.reshape(b, heads * t, 1), keys, key_pe)
    weights = torch.softmax(scores / math.sqrt(d), dim=-1)  # (B, h*T, N)
    if keys.shape[0] == 1:
        pooled = torch.mm(weights.reshape(b * heads * t, -1), keys[0]).reshape(b, heads, t, c)
    else:
        pooled = torch.bmm(weights, keys).reshape(b, heads, t, c)
    w_v = attn.v_proj.weight.reshape(heads, d, c)
    out = torch.einsum("bhtc,hdc->bthd", pooled, w_v) + attn.v_proj.bias.reshape(heads, d)
    return attn.out_proj(out.reshape(b, t, inner))


def _image_to_tokens_output(attn, scores, queries, keys, inplace: bool = False):
    """``keys + out_proj(softmax(scores) @ v)`` with scores (B, T, h, N) before softmax.

    The softmax runs over the T tokens along a leading axis (fast; a last axis of size 7 is
    slow on CPU), and out_proj is applied to the T*h value rows, not to the N pixels.
    """
    heads = attn.num_heads
    b, t, _, n = scores.shape
    weights = torch.softmax(scores, dim=1).reshape(b, t * heads, n)
    v = attn.v_proj(queries)  # (B, T, I)
    c = attn.out_proj.weight.shape[0]
    d = v.shape[-1] // heads
    w_o = attn.out_proj.weight.reshape(c, heads, d)
    vo = torch.einsum("bthd,chd->bthc", v.reshape(b, t, heads, d), w_o).reshape(b, t * heads, c)
    # Each pixel's weights sum to 1 per head, so the output bias folds into the value rows.
    vo = vo + attn.out_proj.bias / heads
    if inplace and keys.shape[0] == b:
        return keys.baddbmm_(weights.transpose(1, 2), vo)  # saves a (B, N, C) copy
    return torch.baddbmm(keys.expand(b, -1, -1), weights.transpose(1, 2), vo)
