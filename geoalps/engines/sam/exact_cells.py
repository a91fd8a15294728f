"""Exact full-resolution masks, boxes and stability counts from SAM's 256x256 logits.

For images whose long side is the model input (1024 px tiles), ``Sam.postprocess_masks`` is a
plain 4x bilinear upsampling, so each output pixel depends on one 2x2 cell of logits.
``ExactCells`` evaluates pixel by pixel only the few cells a threshold crosses (through
``F.interpolate`` itself, so every pixel is bit-identical to segment_anything's) and counts the
others whole; ``CellMask`` keeps a mask in that per-cell form (about 20 kB instead of 1 MB)
until NMS has chosen the survivors. Cost: under 1 ms a mask on one CPU core, against 5-10 ms
for upsampling to 1024x1024 and thresholding.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam


STRIP_CELLS = 32768  # boundary cells per F.interpolate strip (float32 coordinates stay exact)
#: A boundary cell's 16 pixels as one 16-bit code (pixel (i, j) of the cell is bit 15 - 4i - j,
#: ``np.packbits``' order), computed as two bytes by a product with these weights: exact in
#: float32 (sums of at most 255) even where matrix products round their inputs (TF32).
_BYTE_WEIGHTS = [128.0, 64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0]


@dataclass
class CellMask:
    """One mask of a 4x bilinear upsampling, stored per low-resolution cell (about 20 kB).

    ``whole``: bit-packed (n-1, n-1) cells whose 4x4 output pixels all pass the threshold;
    ``cells``/``hits``: the boundary cells (row, column) and their exact 4x4 pixels (16 bits);
    ``top``/``bottom``/``left``/``right``: the exact 2-pixel image borders outside the cells.
    """

    whole: np.ndarray
    cells: np.ndarray
    hits: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray

    def to_mask(self, out_hw: tuple[int, int], box: Sequence[int] | None = None) -> np.ndarray:
        """The (H, W) bool mask, equal to ``upsampled logits > threshold`` pixel for pixel; with
        ``box`` (XYXY, inclusive max) only its part of the mask (a copy), for which only the
        cells the box covers are unpacked (a kept mask's box is often a small part of the tile)."""
        n = self.whole.shape[0]
        size = 4 * (n + 1)
        mask = np.zeros((size, size), bool)
        r0, r1, c0, c1 = 0, n, 0, n
        if box is not None:
            (r0, r1), (c0, c1) = _cell_range(box[1], box[3], n), _cell_range(box[0], box[2], n)
        if r1 > r0 and c1 > c0:
            whole = np.unpackbits(self.whole[r0:r1], axis=1, count=n)[:, c0:c1].astype(bool)
            inner = np.repeat(np.repeat(whole, 4, axis=0), 4, axis=1).reshape(r1 - r0, 4, c1 - c0, 4)
            if len(self.cells):
                rows, cols = self.cells[:, 0].astype(np.int64), self.cells[:, 1].astype(np.int64)
                sel = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
                bits = np.unpackbits(self.hits[sel], axis=1, count=16).astype(bool).reshape(-1, 4, 4)
                inner[rows[sel] - r0, :, cols[sel] - c0, :] = bits
            mask[2 + 4 * r0 : 2 + 4 * r1, 2 + 4 * c0 : 2 + 4 * c1] = inner.reshape(4 * (r1 - r0), 4 * (c1 - c0))
        mask[: self.top.shape[0], : self.top.shape[1]] = self.top
        mask[size - 2 : size - 2 + self.bottom.shape[0], : self.bottom.shape[1]] = self.bottom
        mask[2 : 2 + self.left.shape[0], : self.left.shape[1]] = self.left
        mask[2 : 2 + self.right.shape[0], size - 2 : size - 2 + self.right.shape[1]] = self.right
        mask = mask[: out_hw[0], : out_hw[1]]
        if box is None:
            return mask
        return mask[box[1] : box[3] + 1, box[0] : box[2] + 1].copy()


def _cell_range(first_px: int, last_px: int, n: int) -> tuple[int, int]:
    """The cells [start, stop) of one axis whose 4 output pixels (from pixel 2 on) meet the
    pixels first_px..last_px."""
    return min(max((first_px - 2) // 4, 0), n), min(max((last_px - 2) // 4 + 1, 0), n)


class ExactCells:
    """Exact counts, boxes and masks of ``Sam.postprocess_masks`` output, from 256x256 logits.

    Applies when ``postprocess_masks`` is a 4x bilinear upsampling (align_corners=False), cropped:
    the image's long side equals the model input (1024 px tiles, any aspect). Output pixels
    2..4n-3 fall in cells of 4x4 pixels, each cell interpolating its 2x2 low-resolution corners,
    so a cell whose corners all lie on one side of every threshold (with a rounding margin) is
    counted whole, and only cells a threshold crosses ("boundary" cells, a few percent) are
    evaluated pixel by pixel; the 2-pixel image borders are evaluated exactly too.

    Exact evaluation goes through ``F.interpolate`` itself, so values are bit-identical to
    segment_anything's: the boundary cells' 2x2 corners are laid side by side in one 2-row strip
    and upsampled 4x (same scale, same weights, same generic kernel: the output is kept wider
    than the 128 px under which PyTorch switches to its channels-last kernel, whose rounding
    differs); the inner 4x4 pixels of each 8x8 block are the cell's exact pixels.

    Cost per mask: a few passes over the 256x256 logits, plus about 64 interpolated values per
    boundary cell: under 1 ms on one CPU core, against 5-10 ms for upsampling to 1024x1024 and
    thresholding.
    """

    def __init__(self, out_hw: tuple[int, int], low_len: int, device) -> None:
        self.h, self.w = (int(v) for v in out_hw)
        self.n = low_len - 1  # cells per side
        self.size = 4 * low_len
        starts = 4 * torch.arange(self.n, device=device) + 2  # first output pixel of each cell
        self.row_n = (self.h - starts).clamp(0, 4)  # output rows of each cell row inside the image
        self.col_n = (self.w - starts).clamp(0, 4)
        weight = self.row_n[:, None] * self.col_n[None, :]
        self.full = weight == 16
        self.partial = (weight > 0) & ~self.full  # cut by the image edge: always evaluated
        self.all_full = bool(self.full.all())
        self.full_u8 = self.full.to(torch.uint8)
        self.four = torch.arange(4, device=device)
        self.row_dtype = torch.uint8 if self.n <= 255 else torch.int32
        self.corner = torch.tensor([0, 1, low_len, low_len + 1], device=device)
        self.byte_weights = torch.tensor(_BYTE_WEIGHTS, device=device)
        self.tables = _code_tables(str(device))

    @staticmethod
    def applies(model: Sam, input_size, orig_size) -> bool:
        """True when postprocess_masks is a 4x upsampling cropped to the image (no 2nd resize)."""
        low_len = model.prompt_encoder.mask_input_size[0]
        return (
            tuple(int(v) for v in input_size) == tuple(int(v) for v in orig_size)
            and model.image_encoder.img_size == 4 * low_len
            and tuple(model.prompt_encoder.mask_input_size) == (low_len, low_len)
        )

    def __call__(
        self, low: torch.Tensor, thresholds: Sequence[float], mask_threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor, list[CellMask]]:
        """For (K, n+1, n+1) logits: counts of pixels above each threshold (K, T) int64, boxes
        (K, 4) of pixels above ``mask_threshold`` (``batched_mask_to_box`` convention), and each
        mask's ``CellMask`` at ``mask_threshold``."""
        if low.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=low.device)
            return empty.view(0, len(thresholds)), empty.view(0, 4), []
        taus = sorted(set(float(t) for t in thresholds) | {float(mask_threshold)})
        level, boundary = self._cell_levels(low, taus)
        k, r, c = boundary.nonzero().unbind(1)
        vals = self._cell_values(low, k, r, c)  # (B, 4, 4): cell, row in cell, column in cell
        inside = self._inside_image(r, c)
        strips = self._strips(low)
        # Cells counted whole above taus[rank]: those whose level exceeds rank (0 or 1).
        above = [(level > rank).view(torch.uint8) for rank in range(len(taus))]
        counts = torch.zeros(low.shape[0], len(thresholds), dtype=torch.int64, device=low.device)
        for j, t in enumerate(thresholds):
            whole = above[taus.index(float(t))]
            code = self._codes(_hits(vals, t, inside))
            counts[:, j] = self._count_above(whole, k, code, strips, t)
        whole = above[taus.index(float(mask_threshold))]  # uint8 0/1
        code = self._codes(_hits(vals, mask_threshold, inside))
        edges = [s > mask_threshold for s in strips]
        boxes = self._boxes(whole, k, r, c, code, edges)
        return counts, boxes, self._cell_masks(whole, k, r, c, code, edges)

    def _cell_levels(self, low: torch.Tensor, taus: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cell (K, n, n): the boundary cells (evaluated pixel by pixel: a threshold may
        cross them, or the image edge cuts them), and for the others how many of ``taus`` all
        their pixels exceed (uint8; 0 on boundary cells)."""
        # Interpolated values are convex combinations computed in float32: within a few ulps
        # of the corners' range. The margin only widens the set of exactly evaluated cells.
        low_min, low_max = torch.aminmax(low)
        tol = 1e-5 * (1.0 + max(-float(low_min), float(low_max)))
        lo = hi = None  # per logit: how many thresholds it surely exceeds / may exceed
        for t in taus:
            a = (low > t + tol).view(torch.uint8)
            b = (low > t - tol).view(torch.uint8)
            lo = a if lo is None else lo.add_(a)
            hi = b if hi is None else hi.add_(b)
        lo = torch.minimum(lo[:, :-1], lo[:, 1:])
        lo = torch.minimum(lo[..., :-1], lo[..., 1:])  # (K, n, n): min over the 4 corners
        hi = torch.maximum(hi[:, :-1], hi[:, 1:])
        hi = torch.maximum(hi[..., :-1], hi[..., 1:])
        boundary = lo != hi
        if not self.all_full:
            boundary &= self.full
            boundary |= self.partial
            lo *= self.full_u8
        lo *= (~boundary).view(torch.uint8)  # level of the cells counted whole, else 0
        return lo, boundary

    def _inside_image(self, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor | None:
        """(B, 4, 4) True for the boundary cells' pixels inside the image (None: all are)."""
        if self.all_full:
            return None
        return (self.four[None, :, None] < self.row_n[r][:, None, None]) & (
            self.four[None, None, :] < self.col_n[c][:, None, None]
        )

    def _codes(self, hits: torch.Tensor) -> torch.Tensor:
        """(B,) int64 16-bit codes of (B, 4, 4) boundary-cell pixels (see ``_BYTE_WEIGHTS``):
        one small matrix product instead of reductions over the short pixel axes, which
        PyTorch's CPU kernels run several times slower per element."""
        halves = (hits.reshape(-1, 8).float() @ self.byte_weights).long().view(-1, 2)
        return halves[:, 0] * 256 + halves[:, 1]

    def _count_above(self, whole, k, code, strips, t: float) -> torch.Tensor:
        """(K,) pixels above ``t``: 16 per whole cell, the boundary cells' hits, the borders."""
        # Row sums fit in uint8 (at most 255 cells); summing uint8 avoids a widening copy.
        n = whole.sum(2, dtype=self.row_dtype).sum(1) * 16
        n.index_add_(0, k, self.tables.count[code])
        for s in strips:
            n += (s > t).flatten(1).sum(1)
        return n

    def _cell_values(self, low, k, r, c) -> torch.Tensor:
        """Exact output pixels (B, 4, 4) of the B cells (k, r, c), via F.interpolate on strips.

        At most ``STRIP_CELLS`` cells a strip: the kernel computes source coordinates in float32,
        exact only while output columns stay well below 2**23.
        """
        start = (k * low.shape[1] + r) * low.shape[2] + c
        corners = low.reshape(-1)[start[:, None] + self.corner]  # (B, 4): (r,c) (r,c+1) (r+1,c) ...
        out = []
        for part in corners.split(STRIP_CELLS):
            b = len(part)
            m = max(b, 16)  # 8 + 8m > 128: PyTorch's generic kernel, as for 1024 px masks
            strip = low.new_zeros(2, m, 2)
            strip[:, :b] = part.view(b, 2, 2).transpose(0, 1)
            up = F.interpolate(
                strip.view(1, 1, 2, 2 * m), (8, 8 * m), mode="bilinear", align_corners=False
            )
            out.append(up.view(8, m, 8)[2:6, :b, 2:6].permute(1, 0, 2))
        return out[0].contiguous() if len(out) == 1 else torch.cat(out, 0)

    def _strips(self, low) -> list[torch.Tensor]:
        """Exact output rows 0-1 and size-2.. and columns 0-1 and size-2.., cropped to the image."""
        h, w, size = self.h, self.w, self.size

        def up(x, out):
            return F.interpolate(x[:, None], out, mode="bilinear", align_corners=False)[:, 0]

        top = up(low[:, :2, :], (8, size))[:, : min(2, h), :w]
        bottom = up(low[:, -2:, :], (8, size))[:, 6 : 6 + max(0, h - (size - 2)), :w]
        mid = slice(2, max(2, min(h, size - 2)))
        left = up(low[:, :, :2], (size, 8))[:, mid, : min(2, w)]
        right = up(low[:, :, -2:], (size, 8))[:, mid, 6 : 6 + max(0, w - (size - 2))]
        return [top, bottom, left, right]

    def _boxes(self, whole, k, r, c, code, edges) -> torch.Tensor:
        """XYXY boxes (``batched_mask_to_box`` convention) from each mask's extreme pixels:
        the outermost whole cells, the first and last hit rows and columns of each boundary
        cell (looked up from its code, reduced per mask with ``scatter_reduce``) and the border
        strips. No per-pixel (K, H) / (K, W) occupancy arrays: a few passes over the cells."""
        n, dev = self.n, whole.device
        big = max(self.h, self.w, self.size)
        starts = 4 * torch.arange(n, device=dev) + 2  # first pixel of each cell row / column
        row_any, col_any = whole.amax(2).bool(), whole.amax(1).bool()  # (K, n)
        top = torch.where(row_any, starts, big).amin(1)
        bottom = torch.where(row_any, starts + 3, -1).amax(1)
        left = torch.where(col_any, starts, big).amin(1)
        right = torch.where(col_any, starts + 3, -1).amax(1)
        if len(k):
            t = self.tables
            has = code > 0
            top.scatter_reduce_(0, k, torch.where(has, 4 * r + 2 + t.first_row[code], big), "amin")
            bottom.scatter_reduce_(0, k, torch.where(has, 4 * r + 2 + t.last_row[code], -1), "amax")
            left.scatter_reduce_(0, k, torch.where(has, 4 * c + 2 + t.first_col[code], big), "amin")
            right.scatter_reduce_(0, k, torch.where(has, 4 * c + 2 + t.last_col[code], -1), "amax")
        # the border strips: (rows, cols) of each and where they start in the image
        for strip, y0, x0 in zip(edges, (0, self.size - 2, 2, 2), (0, 0, 0, self.size - 2)):
            if strip.shape[1] == 0 or strip.shape[2] == 0:
                continue
            ys = y0 + torch.arange(strip.shape[1], device=dev)
            xs = x0 + torch.arange(strip.shape[2], device=dev)
            rows_hit, cols_hit = strip.any(2), strip.any(1)
            top = torch.minimum(top, torch.where(rows_hit, ys, big).amin(1))
            bottom = torch.maximum(bottom, torch.where(rows_hit, ys, -1).amax(1))
            left = torch.minimum(left, torch.where(cols_hit, xs, big).amin(1))
            right = torch.maximum(right, torch.where(cols_hit, xs, -1).amax(1))
        boxes = torch.stack([left, top, right, bottom], dim=-1)
        return boxes * (bottom >= 0)[:, None]  # empty: [0, 0, 0, 0]

    def _cell_masks(self, whole, k, r, c, code, edges) -> list[CellMask]:
        K = whole.shape[0]
        whole = np.packbits(whole.cpu().numpy().view(bool), axis=-1)
        per_mask = torch.bincount(k, minlength=K).tolist() if len(k) else [0] * K
        cells = torch.stack([r, c], 1).to(torch.int16).cpu().numpy()
        bits = torch.stack([code // 256, code % 256], 1).to(torch.uint8).cpu().numpy()  # packbits' bytes
        edges = [e.cpu().numpy() for e in edges]
        out, start = [], 0
        for i, count in enumerate(per_mask):
            stop = start + count
            out.append(
                CellMask(whole[i], cells[start:stop], bits[start:stop], *(e[i] for e in edges))
            )
            start = stop
        return out


def _hits(vals: torch.Tensor, t: float, inside: torch.Tensor | None) -> torch.Tensor:
    """Boundary cells' pixels (B, 4, 4) above ``t`` and inside the image."""
    hits = vals > t
    if inside is not None:
        hits &= inside
    return hits


@dataclass(frozen=True)
class _CodeTables:
    """Per 16-bit cell code (see ``_BYTE_WEIGHTS``): pixels set, and the first and last pixel
    row and column that are set (0-3; 4 and -1 for the empty code)."""

    count: torch.Tensor
    first_row: torch.Tensor
    last_row: torch.Tensor
    first_col: torch.Tensor
    last_col: torch.Tensor


@functools.lru_cache(maxsize=None)
def _code_tables(device: str) -> _CodeTables:
    """The tables on ``device``, built once (65536 codes, 2.6 MB)."""
    codes = np.arange(1 << 16, dtype=">u2").view(np.uint8).reshape(-1, 2)
    pixels = np.unpackbits(codes, axis=1).reshape(-1, 4, 4).astype(bool)
    rows, cols = pixels.any(2), pixels.any(1)  # (65536, 4)

    def first(hit):
        return np.where(hit.any(1), hit.argmax(1), 4)

    def last(hit):
        return np.where(hit.any(1), 3 - hit[:, ::-1].argmax(1), -1)

    def table(values):
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64)).to(device)

    return _CodeTables(table(pixels.sum((1, 2))), table(first(rows)), table(last(rows)),
                       table(first(cols)), table(last(cols)))
