"""Online k-means over mask features: pseudo-classes that mean the same thing across tiles,
scenes and (with a saved model) runs.

Features are standardised with a running scaler, each block (sam / spectral / shape) is weighted by
1/sqrt(width) so a 256-wide SAM block does not drown a 4-wide shape block, then
``MiniBatchKMeans.partial_fit`` is fed batch by batch as tiles finish. The first fit waits until a
few times K samples have arrived so the initial centres are spread over real data.
"""
from __future__ import annotations

import os
from pathlib import Path

import joblib
import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

from geoalps.clustering.names import ClassNames
from geoalps.errors import ModelError
from geoalps.files import atomic_path

_FORMAT = "geoalps-kmeans/1"


class OnlineKMeans:
    """Scaler + MiniBatchKMeans fitted incrementally; ``predict`` gives classes 0..K-1.

    Memory: the buffered first batch (a few x K feature rows) and K centres.
    """

    def __init__(self, n_classes: int, block_widths: dict[str, int], seed: int = 0) -> None:
        self.n_classes = n_classes
        self.block_widths = dict(block_widths)
        self.seed = seed
        self.scaler = StandardScaler()
        self.kmeans: MiniBatchKMeans | None = None
        self._pending: list[np.ndarray] = []
        self.n_seen = 0
        self.frozen = False
        #: Names users gave the classes (``geoalps classes name``), stored with the model.
        self.class_names: ClassNames | None = None

    # -- fitting -------------------------------------------------------------------------
    def _weights(self) -> np.ndarray:
        return np.concatenate(
            [np.full(w, 1.0 / np.sqrt(w), dtype=np.float64) for w in self.block_widths.values()]
        )

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        return self.scaler.transform(features) * self._weights()

    def partial_fit(self, features: np.ndarray) -> None:
        """Feed one batch of (N, D) features (rows of any tile, in a deterministic order)."""
        if self.frozen or not len(features):
            return
        features = np.asarray(features, dtype=np.float64)
        self.n_seen += len(features)
        self.scaler.partial_fit(features)
        if self.kmeans is None:
            self._pending.append(features)
            if sum(len(p) for p in self._pending) >= 3 * self.n_classes:
                self._start(np.concatenate(self._pending))
                self._pending = []
            return
        self.kmeans.partial_fit(self._prepare(features))

    def _start(self, features: np.ndarray) -> None:
        k = min(self.n_classes, len(np.unique(features, axis=0)))
        self.kmeans = MiniBatchKMeans(
            n_clusters=max(k, 1), random_state=self.seed, n_init=3, batch_size=1024
        )
        self.kmeans.partial_fit(self._prepare(features))

    def finish(self) -> None:
        """Fit whatever is still buffered (a run with fewer than 3K masks in all)."""
        if self.kmeans is None and self._pending:
            self._start(np.concatenate(self._pending))
            self._pending = []
        if self.kmeans is None:
            raise ModelError("no objects were found in any tile, so there is nothing to cluster")

    @property
    def effective_classes(self) -> int:
        return int(self.kmeans.n_clusters) if self.kmeans is not None else self.n_classes

    # -- using ---------------------------------------------------------------------------
    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.kmeans is None:
            raise ModelError("k-means is not fitted yet")
        if not len(features):
            return np.zeros(0, dtype=np.int32)
        return self.kmeans.predict(self._prepare(np.asarray(features, np.float64))).astype(np.int32)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row to its nearest centre (a per-object 'typicality')."""
        if not len(features):
            return np.zeros(0, dtype=np.float32)
        return self.kmeans.transform(self._prepare(np.asarray(features, np.float64))).min(axis=1)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file + rename) so a crash never leaves a broken model."""
        path = Path(path)
        state = {
            "format": _FORMAT,
            "n_classes": self.n_classes,
            "block_widths": self.block_widths,
            "seed": self.seed,
            "scaler": self.scaler,
            "kmeans": self.kmeans,
            "n_seen": self.n_seen,
            "class_names": self.class_names.to_state() if self.class_names is not None else None,
        }
        with atomic_path(path, overwrite=True) as tmp:
            joblib.dump(state, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OnlineKMeans":
        """A saved model, frozen: it assigns classes but is not refitted, so class ids keep their
        meaning across runs and scenes."""
        try:
            state = joblib.load(path)
        except Exception as exc:  # joblib raises many types for a bad file
            raise ModelError(f"{path}: not a geoalps k-means model ({type(exc).__name__})") from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ModelError(f"{path}: not a geoalps k-means model")
        model = cls(state["n_classes"], state["block_widths"], state["seed"])
        model.scaler, model.kmeans, model.n_seen = state["scaler"], state["kmeans"], state["n_seen"]
        model.class_names = ClassNames.from_state(model.effective_classes, state.get("class_names"))
        model.frozen = True
        return model

    def check_compatible(self, block_widths: dict[str, int], path: str) -> None:
        if dict(block_widths) != self.block_widths:
            def fmt(b: dict[str, int]) -> str:
                return ", ".join(f"{k}[{v}]" for k, v in b.items())

            raise ModelError(
                f"{path}: k-means model was fitted on features {fmt(self.block_widths)} but this "
                f"run computes {fmt(block_widths)} (same --features, --engine and band count needed)"
            )
