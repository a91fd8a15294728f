"""The tile plan: overlapping windows whose *cores* partition the scene exactly.

Each object is kept by the one tile whose core holds its representative point, so an object seen
by two overlapping tiles comes out once. Cores meet half-way through each overlap, where both
neighbours see the most context.
"""
from __future__ import annotations

from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window

from geoalps.options import check_tiling


@dataclass(frozen=True)
class Tile:
    """One unit of work: a window of a scene and the core region it is responsible for.

    All coordinates are scene pixels, boxes are (col0, row0, col1, row1), half-open. ``core`` is
    the part of the scene this tile answers for (cores partition the scene); ``interior`` is the
    part no other tile sees: an object entirely inside it can never meet another tile's object,
    so it needs no seam check.
    """

    scene_index: int
    row: int
    col: int
    col_off: int
    row_off: int
    width: int
    height: int
    core: tuple[int, int, int, int]
    interior: tuple[int, int, int, int]

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    @property
    def key(self) -> str:
        """Stable identifier of the tile inside a run (used by work stores and messages)."""
        return f"s{self.scene_index}_r{self.row}_c{self.col}"

    def transform(self, scene_transform: Affine) -> Affine:
        return scene_transform @ Affine.translation(self.col_off, self.row_off)

    def corners(self, scene_transform: Affine) -> list[tuple[float, float]]:
        """The tile's four corners in scene coordinates, in ring order (top left first)."""
        return [scene_transform * (self.col_off + dc, self.row_off + dr)
                for dc, dr in ((0, 0), (self.width, 0), (self.width, self.height), (0, self.height))]

    def envelope(self, scene_transform: Affine) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the tile's footprint in scene coordinates, from all four
        corners (on a rotated grid two corners do not bound the tile)."""
        xs, ys = zip(*self.corners(scene_transform))
        return min(xs), min(ys), max(xs), max(ys)

    def core_contains(self, col: float, row: float) -> bool:
        c0, r0, c1, r1 = self.core
        return c0 <= col < c1 and r0 <= row < r1

    def inner_edges(self, scene_width: int, scene_height: int) -> tuple[bool, bool, bool, bool]:
        """Which sides (left, top, right, bottom) border another tile rather than the scene edge."""
        return (
            self.col_off > 0,
            self.row_off > 0,
            self.col_off + self.width < scene_width,
            self.row_off + self.height < scene_height,
        )


def _starts_and_cuts(length: int, tile: int, overlap: int) -> tuple[list[int], list[int]]:
    """Tile start offsets along one axis and the core boundaries between them."""
    if length <= tile:
        return [0], [0, length]
    stride = tile - overlap
    n = -(-(length - overlap) // stride)  # ceil
    starts = [min(i * stride, length - tile) for i in range(n)]
    # The last tile is shifted back to end at the scene edge so it keeps its full size.
    starts = sorted(set(starts))
    cuts = [0]
    for left, right in zip(starts[:-1], starts[1:]):
        cuts.append((right + left + tile) // 2)
    cuts.append(length)
    return starts, cuts


def plan_tiles(
    width: int, height: int, tile_size_px: int = 1024, overlap_px: int = 128, scene_index: int = 0
) -> list[Tile]:
    """Plan overlapping tiles over a ``width`` x ``height`` scene, in row-major order.

    Tiles are at most ``tile_size_px`` square; the last row and column are shifted back so every
    tile is full size when the scene is larger than one tile. Costs nothing but the list itself.
    """
    check_tiling(tile_size_px, overlap_px)
    col_starts, col_cuts = _starts_and_cuts(width, tile_size_px, overlap_px)
    row_starts, row_cuts = _starts_and_cuts(height, tile_size_px, overlap_px)

    def interior(starts: list[int], i: int, length: int) -> tuple[int, int]:
        # From where the previous tile's window ends to where the next one's begins.
        begin = min(starts[i - 1] + tile_size_px, length) if i > 0 else 0
        end = starts[i + 1] if i + 1 < len(starts) else length
        return begin, max(begin, end)

    tiles = []
    for r, row_off in enumerate(row_starts):
        for c, col_off in enumerate(col_starts):
            ic0, ic1 = interior(col_starts, c, width)
            ir0, ir1 = interior(row_starts, r, height)
            tiles.append(
                Tile(
                    scene_index=scene_index,
                    row=r,
                    col=c,
                    col_off=col_off,
                    row_off=row_off,
                    width=min(tile_size_px, width - col_off),
                    height=min(tile_size_px, height - row_off),
                    core=(col_cuts[c], row_cuts[r], col_cuts[c + 1], row_cuts[r + 1]),
                    interior=(ic0, ir0, ic1, ir1),
                )
            )
    return tiles
