"""Online k-means over mask features: pseudo-classes that mean the same thing across tiles,
scenes and (with a saved model) runs.

Features are standardised with a running scaler, each block (sam / spectral / index / shape) is
weighted by 1/sqrt(width) so a 256-wide SAM block does not drown a narrow block, then
``MiniBatchKMeans.partial_fit`` is fed batch by batch as tiles finish, each object weighted by its
pixel area (the quality that matters is per pixel; issue 13). It fits ``OVER_CLUSTER`` x K centres
with ``STEPS_PER_BATCH`` mini-batch steps per tile; at the end the centres are merged to K classes
(``MERGE``: a k-means of the centres weighted by their mass, or mass-weighted Ward
agglomeration), so a class can be any shape in feature space. Defaults from
benchmarks/label_quality (benchmarks/README.md, 2026-12-01): 8 x K centres, 10 steps and a
k-means merge were measured too; they moved many-to-one mIoU by -0.009..+0.030 (mean +0.005 over
six scene/K cells) for 2.3x the clustering CPU, so the cheaper 4 x K, 5 steps, Ward stays. The first fit
waits until a few times the number of centres have arrived so the initial centres are spread over
real data. Memory stays bounded: the buffered first batch and the centres.

Model files hold data only (:func:`OnlineKMeans.save`): ``geoalps-kmeans/3`` is a NumPy ``.npz``
(a zip) of the centres, the scaler's state and the centre -> class mapping, with the settings and
class names as a JSON string inside, read with ``allow_pickle=False`` so a file from someone else
can hold numbers but never code. Files of older geoalps (``geoalps-kmeans/1``: each centre a class;
``/2``: with the mapping) are joblib pickles, which run code when read: they are read only with
``trust=True`` (``--trust-kmeans-model``, ``GEOALPS_TRUST_KMEANS_MODEL=1``), and
:func:`convert_model` rewrites one in the data-only format.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

from geoalps.clustering.names import ClassNames
from geoalps.errors import GeoAlpsError, ModelError
from geoalps.files import write_bytes_atomic

_FORMAT = "geoalps-kmeans/3"
#: Joblib (pickle) formats ``load`` reads only when trusted (/1: one centre per class, no mapping).
_PICKLED = ("geoalps-kmeans/1", "geoalps-kmeans/2")
#: The environment variable that trusts pickled k-means models (``1``, ``yes``, ``true``).
TRUST_ENV = "GEOALPS_TRUST_KMEANS_MODEL"
#: First byte of a joblib file: a pickle (protocol 2+), or compressed by zlib, gzip, bz2, xz, lz4.
_JOBLIB_FIRST_BYTES = (b"\x80", b"x", b"\x1f", b"B", b"\xfd", b"\x04")
#: Arrays of a saved model (``mapping`` only once merged).
_ARRAYS = ("centres", "counts", "scaler_mean", "scaler_var", "scaler_scale", "scaler_n_samples_seen")
#: Centres fitted per class before the merge to K (benchmarks/label_quality).
OVER_CLUSTER = 4
#: Mini-batch steps per fed batch (one batch is one tile's objects: one step alone barely moves).
STEPS_PER_BATCH = 5
#: How the centres are merged to K classes: "ward" (mass-weighted) or "kmeans" (weighted k-means
#: of the centres).
MERGE = "ward"


class OnlineKMeans:
    """Scaler + MiniBatchKMeans fitted incrementally; ``predict`` gives classes 0..K-1.

    Memory: the buffered first batch (a few x ``over_cluster`` x K feature rows) and
    ``over_cluster`` x K centres.
    """

    def __init__(self, n_classes: int, block_widths: dict[str, int], seed: int = 0,
                 over_cluster: int | None = None, steps: int | None = None,
                 merge: str | None = None) -> None:
        self.n_classes = n_classes
        self.block_widths = dict(block_widths)
        self.seed = seed
        self.over_cluster = OVER_CLUSTER if over_cluster is None else int(over_cluster)
        self.steps = STEPS_PER_BATCH if steps is None else int(steps)
        self.merge = MERGE if merge is None else merge
        self.scaler = StandardScaler()
        self.kmeans: MiniBatchKMeans | None = None
        #: Fine centre -> class (0..K-1) once merged; None: each centre is a class (/1 models).
        self.mapping: np.ndarray | None = None
        self._pending: list[np.ndarray] = []
        self._pending_weight: list[np.ndarray] = []
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

    def partial_fit(self, features: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        """Feed one batch of (N, D) features (rows of any tile, in a deterministic order);
        ``sample_weight``: each row's pixel area (None: 1 each)."""
        if self.frozen or not len(features):
            return
        features = np.asarray(features, dtype=np.float64)
        weight = (np.ones(len(features)) if sample_weight is None
                  else np.asarray(sample_weight, dtype=np.float64).reshape(-1))
        if len(weight) != len(features):
            raise ValueError(f"{len(weight)} sample weights for {len(features)} rows")
        self.mapping = None  # refitting: merge again at finish()
        self.n_seen += len(features)
        self.scaler.partial_fit(features)
        if self.kmeans is None:
            self._pending.append(features)
            self._pending_weight.append(weight)
            if sum(len(p) for p in self._pending) >= 3 * self.over_cluster * self.n_classes:
                self._start_pending()
            return
        self._steps(self._prepare(features), weight)

    def _steps(self, prepared: np.ndarray, weight: np.ndarray) -> None:
        for _ in range(self.steps):
            self.kmeans.partial_fit(prepared, sample_weight=weight)

    def _start_pending(self) -> None:
        features, weight = np.concatenate(self._pending), np.concatenate(self._pending_weight)
        self._pending, self._pending_weight = [], []
        k = min(self.over_cluster * self.n_classes, len(np.unique(features, axis=0)))
        self.kmeans = MiniBatchKMeans(
            n_clusters=max(k, 1), random_state=self.seed, n_init=3, batch_size=1024
        )
        self._steps(self._prepare(features), weight)

    def finish(self) -> None:
        """Fit whatever is still buffered (a run with few masks in all), then merge the centres
        to K classes."""
        if self.kmeans is None and self._pending:
            self._start_pending()
        if self.kmeans is None:
            raise ModelError("no objects were found in any tile, so there is nothing to cluster")
        if self.mapping is None and not self.frozen:
            k = min(self.n_classes, int(self.kmeans.n_clusters))
            centres, mass = self.kmeans.cluster_centers_, self.kmeans._counts
            if self.merge == "kmeans":
                self.mapping = kmeans_merge(centres, mass, k, self.seed)
            else:
                self.mapping = ward_merge(centres, mass, k)

    @property
    def effective_classes(self) -> int:
        if self.kmeans is None:
            return self.n_classes
        if self.mapping is not None:
            return int(self.mapping.max()) + 1
        return int(self.kmeans.n_clusters)

    # -- using ---------------------------------------------------------------------------
    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.kmeans is None:
            raise ModelError("k-means is not fitted yet")
        if not len(features):
            return np.zeros(0, dtype=np.int32)
        fine = self.kmeans.predict(self._prepare(np.asarray(features, np.float64)))
        return (self.mapping[fine] if self.mapping is not None else fine).astype(np.int32)

    def class_centres(self) -> np.ndarray:
        """(K, D) centre of each class in the space the centres live in (scaled and block-weighted
        features): the mass-weighted mean of its fine centres. Lets classes be compared with each
        other, e.g. to name a class no example touched after its nearest named one."""
        if self.kmeans is None:
            raise ModelError("k-means is not fitted yet")
        centres = np.asarray(self.kmeans.cluster_centers_, dtype=np.float64)
        mass = np.maximum(np.asarray(getattr(self.kmeans, "_counts", np.ones(len(centres))), np.float64), 1e-12)
        mapping = self.mapping if self.mapping is not None else np.arange(len(centres))
        k = self.effective_classes
        totals = np.zeros((k, centres.shape[1]))
        np.add.at(totals, mapping, centres * mass[:, None])
        return totals / np.maximum(np.bincount(mapping, weights=mass, minlength=k), 1e-12)[:, None]

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row to its nearest centre (a per-object 'typicality')."""
        if not len(features):
            return np.zeros(0, dtype=np.float32)
        return self.kmeans.transform(self._prepare(np.asarray(features, np.float64))).min(axis=1)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model as data only (``geoalps-kmeans/3``: arrays plus a JSON string in
        an ``.npz``, whatever the file's extension), atomically (temp file + rename) so a crash
        never leaves a broken model. A few KB: the centres and scaler state."""
        if self.kmeans is None:
            raise ModelError(f"{path}: k-means is not fitted yet, nothing to save")
        meta = {
            "format": _FORMAT,
            "n_classes": self.n_classes,
            "block_widths": [[name, int(width)] for name, width in self.block_widths.items()],  # ordered
            "seed": self.seed,
            "over_cluster": self.over_cluster,
            "steps": self.steps,
            "merge": self.merge,
            "n_seen": int(self.n_seen),
            "class_names": self.class_names.to_state() if self.class_names is not None else None,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "centres": np.asarray(self.kmeans.cluster_centers_, dtype=np.float64),
            "counts": np.asarray(getattr(self.kmeans, "_counts", np.zeros(self.kmeans.n_clusters)), dtype=np.float64),
            "scaler_mean": np.asarray(self.scaler.mean_, dtype=np.float64),
            "scaler_var": np.asarray(self.scaler.var_, dtype=np.float64),
            "scaler_scale": np.asarray(self.scaler.scale_, dtype=np.float64),
            "scaler_n_samples_seen": np.asarray(self.scaler.n_samples_seen_, dtype=np.int64),
        }
        if self.mapping is not None:
            arrays["mapping"] = np.asarray(self.mapping, dtype=np.int64)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_bytes_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, trust: bool | None = None) -> "OnlineKMeans":
        """A saved model, frozen: it assigns classes but is not refitted, so class ids keep their
        meaning across runs and scenes.

        ``trust``: also read models of older geoalps (joblib pickles, ``geoalps-kmeans/1`` and
        ``/2``), which run code when read, so only for files whose origin you trust; None: as the
        environment variable ``GEOALPS_TRUST_KMEANS_MODEL`` says (off unless ``1``/``yes``/``true``).

        Raises:
            ModelError: one line naming ``path``: not a model, damaged, or a pickled model not
                trusted (saying how to convert it).
        """
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the k-means model ({exc.strerror or type(exc).__name__})") from None
        if magic.startswith(b"PK"):
            return cls._from_npz(path)
        if magic[:1] not in _JOBLIB_FIRST_BYTES:
            raise ModelError(f"{path}: not a geoalps k-means model")
        if trust is None:
            trust = os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "yes", "true", "on")
        if not trust:
            raise ModelError(
                f"{path}: k-means model in the pickle format of older geoalps, which can run code when read, "
                f"so it is not read; if you trust where it comes from, convert it once with "
                f"`geoalps classes convert-model {path} NEW_MODEL --trust-kmeans-model` "
                f"(or read it as is with --trust-kmeans-model or {TRUST_ENV}=1)")
        return cls._from_pickle(path)

    @classmethod
    def _from_npz(cls, path: str | os.PathLike) -> "OnlineKMeans":
        """A ``geoalps-kmeans/3`` file: arrays and a JSON string, no pickles (``allow_pickle=False``)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"][()]))
                if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                    raise ModelError(f"{path}: not a geoalps k-means model")
                arrays = {name: np.array(data[name]) for name in _ARRAYS}
                mapping = np.array(data["mapping"], dtype=np.int64) if "mapping" in data.files else None
            widths = {str(name): int(width) for name, width in meta["block_widths"]}
            model = cls(int(meta["n_classes"]), widths, int(meta["seed"]), int(meta["over_cluster"]),
                        int(meta["steps"]), str(meta["merge"]))
            centres = arrays["centres"].astype(np.float64)
            dims = sum(widths.values())
            if centres.ndim != 2 or centres.shape[1] != dims or not len(centres) or any(
                    arrays[n].shape != (dims,) for n in ("scaler_mean", "scaler_var", "scaler_scale")):
                raise ValueError("array shapes do not match the feature widths")
            if mapping is not None and (mapping.shape != (len(centres),) or mapping.min() < 0):
                raise ValueError("centre -> class mapping does not match the centres")
            model.scaler = _fitted_scaler(arrays)
            model.kmeans = _fitted_kmeans(centres, arrays["counts"], model.seed)
            model.mapping = mapping
            model.n_seen = int(meta["n_seen"])
            model.class_names = ClassNames.from_state(model.effective_classes, meta.get("class_names"))
        except ModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, GeoAlpsError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ModelError(f"{path}: damaged geoalps k-means model ({reason})") from None
        model.frozen = True
        return model

    @classmethod
    def _from_pickle(cls, path: str | os.PathLike) -> "OnlineKMeans":
        """A trusted ``geoalps-kmeans/1`` or ``/2`` joblib file of older geoalps."""
        import joblib

        try:
            state = joblib.load(path)
        except Exception as exc:  # joblib raises many types for a bad file
            raise ModelError(f"{path}: not a geoalps k-means model ({type(exc).__name__})") from None
        if not isinstance(state, dict) or state.get("format") not in _PICKLED:
            raise ModelError(f"{path}: not a geoalps k-means model")
        if state["format"] == "geoalps-kmeans/1":  # one centre per class, fitted without a merge
            model = cls(state["n_classes"], state["block_widths"], state["seed"], over_cluster=1, steps=1)
        else:
            model = cls(state["n_classes"], state["block_widths"], state["seed"],
                        state.get("over_cluster"), state.get("steps"), state.get("merge"))
        model.scaler, model.kmeans, model.n_seen = state["scaler"], state["kmeans"], state["n_seen"]
        mapping = state.get("mapping")
        model.mapping = None if mapping is None else np.asarray(mapping, dtype=np.int64)
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


def convert_model(old_path: str | os.PathLike, new_path: str | os.PathLike, overwrite: bool = False) -> None:
    """Rewrite a trusted k-means model of older geoalps (a joblib pickle) in the data-only format:
    same centres, scaler, mapping and names, so the same classes. Reading the old file runs
    whatever it holds: call this only on files whose origin you trust."""
    from geoalps.files import check_writable

    check_writable(new_path, overwrite)
    OnlineKMeans.load(old_path, trust=True).save(new_path)


def _fitted_scaler(arrays: dict[str, np.ndarray]) -> StandardScaler:
    """A ``StandardScaler`` in the state ``partial_fit`` left it (its public fitted attributes)."""
    scaler = StandardScaler()
    scaler.mean_ = arrays["scaler_mean"].astype(np.float64)
    scaler.var_ = arrays["scaler_var"].astype(np.float64)
    scaler.scale_ = arrays["scaler_scale"].astype(np.float64)
    seen = arrays["scaler_n_samples_seen"]
    scaler.n_samples_seen_ = int(seen) if seen.ndim == 0 else seen.astype(np.int64)
    scaler.n_features_in_ = len(scaler.mean_)
    return scaler


def _fitted_kmeans(centres: np.ndarray, counts: np.ndarray, seed: int) -> MiniBatchKMeans:
    """A ``MiniBatchKMeans`` that predicts and transforms with ``centres`` as a fitted one does.
    Besides the public fitted attributes it needs ``_n_threads`` (set by ``fit``; the load round
    trip test in tests/clustering/test_kmeans.py fails if scikit-learn renames it)."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    kmeans = MiniBatchKMeans(n_clusters=len(centres), random_state=seed, n_init=3, batch_size=1024)
    kmeans.cluster_centers_ = np.ascontiguousarray(centres, dtype=np.float64)
    kmeans.n_features_in_ = centres.shape[1]
    kmeans._counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    kmeans._n_threads = _openmp_effective_n_threads()
    return kmeans


def ward_merge(centres: np.ndarray, mass: np.ndarray, k: int) -> np.ndarray:
    """Class (0..k-1) of each centre: greedy Ward agglomeration of the centres weighted by their
    mass (summed sample weight), merging the pair of least Ward cost
    m_a m_b / (m_a + m_b) |c_a - c_b|^2 until k groups remain; classes are numbered by their
    lowest centre. A cost matrix updated in place: O(M^2) per merge, O(M^3) numpy work in all for
    M centres (M = 200 for K = 50: a few ms)."""
    centres = np.asarray(centres, dtype=np.float64)
    m = len(centres)
    k = max(1, min(int(k), m))
    mass = np.maximum(np.asarray(mass, dtype=np.float64).reshape(-1), 1e-9)
    means = centres.copy()
    weights = mass.copy()
    group = np.arange(m)  # group of each centre (an index of its representative row)
    alive = np.ones(m, dtype=bool)

    def costs(a: int) -> np.ndarray:
        dist = ((means - means[a]) ** 2).sum(axis=1)
        return weights * weights[a] / (weights + weights[a]) * dist

    cost = np.stack([costs(a) for a in range(m)]) if m else np.zeros((0, 0))
    cost[~np.triu(np.ones((m, m), dtype=bool), 1)] = np.inf
    for _ in range(m - k):
        a, b = divmod(int(np.argmin(cost)), m)  # a < b (upper triangle); first minimum on ties
        total = weights[a] + weights[b]
        means[a] = (means[a] * weights[a] + means[b] * weights[b]) / total
        weights[a] = total
        alive[b] = False
        group[group == b] = a
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        row = costs(a)
        row[~alive] = np.inf
        row[a] = np.inf
        cost[a, a + 1:] = row[a + 1:]
        cost[:a, a] = row[:a]
    return _number_by_lowest(group)


def kmeans_merge(centres: np.ndarray, mass: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Class (0..k-1) of each centre by k-means of the centres weighted by their mass."""
    from sklearn.cluster import KMeans

    centres = np.asarray(centres, dtype=np.float64)
    k = max(1, min(int(k), len(np.unique(centres, axis=0))))
    mass = np.maximum(np.asarray(mass, dtype=np.float64).reshape(-1), 1e-9)
    fitted = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(centres, sample_weight=mass)
    return _number_by_lowest(fitted.labels_)


def _number_by_lowest(group: np.ndarray) -> np.ndarray:
    """Renumber group ids 0..n-1 in the order of each group's lowest member."""
    _, first = np.unique(group, return_index=True)
    order = group[np.sort(first)]
    label = np.empty(len(group), dtype=np.int64)
    for new, old in enumerate(order):
        label[group == old] = new
    return label
