"""``TileResult``: everything later stages need from one tile, its kept objects and never its pixels.

Made by pass 1 (:mod:`geoalps.labelling.tile_work`), kept in the work store, read by the seam index,
the k-means feeder and pass 2 (:mod:`geoalps.labelling.assembly`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from geoalps.inputs.tiles import Tile


@dataclass
class TileResult:
    """Everything pass 2 needs from one tile: its kept objects, never its pixels."""

    tile: Tile
    geometries: np.ndarray  # object array of shapely geometries in scene pixels (col, row), integer vertices
    scores: np.ndarray
    area_px: np.ndarray
    truncated: np.ndarray  # cut by an inner tile edge: may continue in the neighbour
    seam_candidate: np.ndarray  # reaches into a part of the scene another tile also sees
    features: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: bool = False
    engine_seconds: float = 0.0
    disjoint: bool = False  # from a disjoint engine: the objects tile the scene (a coverage)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.geometries)

    def feature_matrix(self, blocks: Sequence[str]) -> np.ndarray:
        if not len(self):
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([self.features[b] for b in blocks], axis=1)
