"""``TileResult``: everything later stages need from one tile, its kept objects and never its pixels.

Made by pass 1 (:mod:`geoalps.labelling.tile_work`), kept in the work store, read by the seam index,
the k-means feeder and pass 2 (:mod:`geoalps.labelling.assembly`). In the work store it is data only
(:meth:`TileResult.to_arrays`): plain arrays, geometries as WKB bytes, the tile and the scalars as
JSON, so a work folder from someone else can hold numbers but never code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
import shapely

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
    # the regions k-means learns from when they are not the objects (TileMasks.fit_regions):
    # their feature blocks and pixel areas; empty / None when the objects themselves are learnt from
    fit_features: dict[str, np.ndarray] = field(default_factory=dict)
    fit_area_px: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.geometries)

    def feature_matrix(self, blocks: Sequence[str]) -> np.ndarray:
        if not len(self):
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([self.features[b] for b in blocks], axis=1)

    def fit_sample(self, blocks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(features, pixel areas) k-means learns from: the fit regions' when the tile has them,
        else the objects'."""
        if self.fit_features and self.fit_area_px is not None:
            return np.concatenate([self.fit_features[b] for b in blocks], axis=1), self.fit_area_px
        return self.feature_matrix(blocks), self.area_px

    # -- as data (the work store) ------------------------------------------------------------
    _ARRAYS = ("scores", "area_px", "truncated", "seam_candidate")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The record as named plain arrays (for ``np.savez``; none needs pickling): the geometries
        as their WKB concatenated (``wkb``, uint8) with each one's length (``wkb_lengths``), each
        feature block as ``feature.NAME``, the tile and the scalars as a JSON string (``meta``)."""
        wkb = shapely.to_wkb(self.geometries) if len(self.geometries) else np.zeros(0, object)
        meta = {"tile": {f.name: getattr(self.tile, f.name) for f in fields(self.tile)},
                "features": list(self.features), "skipped": bool(self.skipped),
                "engine_seconds": float(self.engine_seconds), "disjoint": bool(self.disjoint),
                "seconds": float(self.seconds), "fit_features": list(self.fit_features)}
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "wkb": np.frombuffer(b"".join(w or b"" for w in wkb), dtype=np.uint8),
            "wkb_lengths": np.array([len(w) if w is not None else -1 for w in wkb], dtype=np.int64),
        }
        arrays.update({name: np.asarray(getattr(self, name)) for name in self._ARRAYS})
        arrays.update({f"feature.{name}": np.asarray(block) for name, block in self.features.items()})
        if self.fit_features and self.fit_area_px is not None:
            arrays.update({f"fit_feature.{name}": np.asarray(block) for name, block in self.fit_features.items()})
            arrays["fit_area_px"] = np.asarray(self.fit_area_px)
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "TileResult":
        """The record :meth:`to_arrays` gave (``arrays``: a mapping such as ``np.load(...,
        allow_pickle=False)``).

        Raises:
            ValueError, KeyError, TypeError: arrays that are not such a record (lengths disagree,
                a field missing, WKB that does not parse).
        """
        meta = json.loads(str(arrays["meta"][()]))
        tile_fields = dict(meta["tile"])
        for box in ("core", "interior"):
            tile_fields[box] = tuple(int(v) for v in tile_fields[box])
        tile = Tile(**{k: v if isinstance(v, tuple) else int(v) for k, v in tile_fields.items()})
        lengths = np.asarray(arrays["wkb_lengths"], dtype=np.int64)
        wkb = np.asarray(arrays["wkb"], dtype=np.uint8).tobytes()
        if lengths.ndim != 1 or int(np.maximum(lengths, 0).sum()) != len(wkb):
            raise ValueError("geometry lengths do not add up to the WKB bytes")
        ends = np.cumsum(np.maximum(lengths, 0))
        parts = [wkb[end - n:end] if n >= 0 else None for n, end in zip(lengths.tolist(), ends.tolist())]
        geometries = np.empty(len(parts), dtype=object)
        if parts:
            geometries[:] = shapely.from_wkb(np.array(parts, dtype=object), on_invalid="raise")
        columns = {name: np.asarray(arrays[name]) for name in cls._ARRAYS}
        features = {str(name): np.asarray(arrays[f"feature.{name}"]) for name in meta["features"]}
        if any(len(a) != len(geometries) for a in (*columns.values(), *features.values())):
            raise ValueError("arrays of different lengths")
        fit_features = {str(name): np.asarray(arrays[f"fit_feature.{name}"]) for name in meta.get("fit_features", [])}
        fit_area_px = np.asarray(arrays["fit_area_px"]) if fit_features else None
        if fit_features and any(len(a) != len(fit_area_px) for a in fit_features.values()):
            raise ValueError("fit arrays of different lengths")
        return cls(tile, geometries, **columns, features=features, skipped=bool(meta["skipped"]),
                   engine_seconds=float(meta["engine_seconds"]), disjoint=bool(meta["disjoint"]),
                   seconds=float(meta["seconds"]), fit_features=fit_features, fit_area_px=fit_area_px)
