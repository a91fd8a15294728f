"""OnlineKMeans: area-weighted over-clustering merged to K, deterministic, saved and reloaded
(geoalps-kmeans/3, data only; pickled /1 and /2 files of older geoalps only when trusted)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

from geoalps.clustering import kmeans as km
from geoalps.clustering.kmeans import OnlineKMeans, kmeans_merge, ward_merge
from geoalps.clustering.names import ClassNames
from geoalps.errors import ModelError

WIDTHS = {"spectral": 4, "index": 2}


def _blobs(n_per: int, seed: int = 0, centres=None):
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres if centres is not None else
                         [[0, 0, 0, 0, 0, 0], [5, 5, 0, 0, 1, 1], [0, 5, 5, 0, -1, 1], [5, 0, 0, 5, 1, -1]], float)
    x = np.concatenate([c + rng.normal(0, 0.3, (n_per, centres.shape[1])) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per)
    order = rng.permutation(len(x))
    return x[order], y[order]


def _fit(x, k=4, seed=0, batch=50, weight=None, **kw):
    model = OnlineKMeans(k, WIDTHS, seed=seed, **kw)
    for i in range(0, len(x), batch):
        model.partial_fit(x[i:i + batch], None if weight is None else weight[i:i + batch])
    model.finish()
    return model


def _naive_ward(centres, mass, k):
    """The research version: O(M^3) Python loops."""
    members = [[i] for i in range(len(centres))]
    means, weights = [c.astype(float).copy() for c in centres], list(np.maximum(mass, 1e-9).astype(float))
    while len(members) > k:
        best = None
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                cost = weights[a] * weights[b] / (weights[a] + weights[b]) * float(((means[a] - means[b]) ** 2).sum())
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        _, a, b = best
        total = weights[a] + weights[b]
        means[a] = (means[a] * weights[a] + means[b] * weights[b]) / total
        weights[a] = total
        members[a] += members.pop(b)
        means.pop(b)
        weights.pop(b)
    label = np.zeros(len(centres), dtype=np.int64)
    for new, group in enumerate(sorted(members, key=min)):
        label[group] = new
    return label


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ward_merge_matches_the_plain_algorithm(seed):
    rng = np.random.default_rng(seed)
    centres, mass = rng.normal(size=(24, 5)), rng.uniform(1, 100, 24)
    for k in (1, 3, 7, 24):
        assert np.array_equal(ward_merge(centres, mass, k), _naive_ward(centres, mass, k))


def test_ward_merge_is_fast_for_fifty_classes():
    rng = np.random.default_rng(0)
    centres, mass = rng.normal(size=(km.OVER_CLUSTER * 50, 262)), rng.uniform(1, 1e4, km.OVER_CLUSTER * 50)
    started = time.process_time()  # CPU time: the shared test machine's wall clock drifts under load
    labels = ward_merge(centres, mass, 50)
    assert time.process_time() - started < 1.0
    assert set(labels) == set(range(50))
    assert labels[0] == 0 and np.all(np.diff(np.maximum.accumulate(labels)) <= 1)  # numbered by lowest centre


def test_merges_follow_mass():
    # The closest pair merges first, unless its mass makes the move costly (Ward).
    centres = np.array([[0.0], [1.0], [10.0], [10.8]])
    assert ward_merge(centres, np.array([1, 1, 1, 1]), 3).tolist() == [0, 1, 2, 2]
    assert ward_merge(centres, np.array([1, 1, 1000, 1000]), 3).tolist() == [0, 0, 1, 2]


def test_kmeans_merge_gives_k_classes():
    rng = np.random.default_rng(0)
    labels = kmeans_merge(rng.normal(size=(40, 3)), rng.uniform(1, 5, 40), 10, seed=0)
    assert set(labels) == set(range(10))


def test_recovers_blobs_through_over_clustering_and_merge():
    x, y = _blobs(200)
    model = _fit(x, k=4)
    assert model.kmeans.n_clusters == km.OVER_CLUSTER * 4 and model.effective_classes == 4
    pred = model.predict(x)
    assert set(pred) == {0, 1, 2, 3}
    # each blob is one class
    for c in range(4):
        assert len(set(pred[y == c])) == 1


def test_same_seed_same_classes_and_different_seeds_still_valid():
    x, _ = _blobs(150, seed=3)
    w = np.random.default_rng(0).integers(64, 5000, len(x)).astype(float)
    a, b = _fit(x, seed=5, weight=w), _fit(x, seed=5, weight=w)
    assert np.array_equal(a.predict(x), b.predict(x))
    assert np.array_equal(a.mapping, b.mapping)


def test_area_weights_change_the_fit_and_must_match_rows():
    x, _ = _blobs(100, seed=1)
    w = np.where(x[:, 0] > 2.5, 1e4, 1.0)
    plain, weighted = _fit(x), _fit(x, weight=w)
    assert not np.allclose(plain.kmeans.cluster_centers_, weighted.kmeans.cluster_centers_)
    with pytest.raises(ValueError, match="sample weights"):
        OnlineKMeans(4, WIDTHS).partial_fit(x[:10], np.ones(3))


def test_few_objects_give_fewer_classes():
    x = np.repeat(np.eye(6)[:3], 2, axis=0)  # three distinct rows
    model = _fit(x, k=5, batch=100)
    assert model.effective_classes == 3
    assert sorted(set(model.predict(x))) == [0, 1, 2]


def test_nothing_to_cluster_is_a_model_error():
    with pytest.raises(ModelError, match="no objects"):
        OnlineKMeans(3, WIDTHS).finish()


def test_saved_model_reloads_frozen_with_mapping_and_names(tmp_path):
    x, _ = _blobs(120, seed=2)
    model = _fit(x)
    model.class_names = ClassNames.from_state(model.effective_classes, None)
    model.class_names = ClassNames(model.effective_classes, {0: "water", 2: "forest"})
    path = tmp_path / "km.joblib"  # the name users have: the content, not the extension, says the format
    model.save(path)
    with zipfile.ZipFile(path) as z:  # data only: arrays and a JSON string, nothing pickled
        assert sorted(z.namelist()) == sorted(f"{n}.npy" for n in (*km._ARRAYS, "meta", "mapping"))
    with np.load(path, allow_pickle=False) as data:
        assert '"format": "geoalps-kmeans/3"' in str(data["meta"][()])
    again = OnlineKMeans.load(path)
    assert again.frozen and np.array_equal(again.mapping, model.mapping)
    assert np.array_equal(again.predict(x), model.predict(x))
    np.testing.assert_array_equal(again.distances(x), model.distances(x))
    assert again.effective_classes == 4 and again.block_widths == WIDTHS and list(again.block_widths) == list(WIDTHS)
    assert again.class_names.names == {0: "water", 2: "forest"}
    assert (again.seed, again.over_cluster, again.steps, again.merge, again.n_seen) == (
        model.seed, model.over_cluster, model.steps, model.merge, model.n_seen)
    again.partial_fit(x)  # frozen: no refit
    again.finish()
    assert np.array_equal(again.predict(x), model.predict(x))
    assert not list(tmp_path.glob("*.tmp*"))


def test_version_1_models_still_load_one_centre_per_class(tmp_path):
    x, _ = _blobs(60, seed=4)
    scaler = StandardScaler().fit(x)
    weights = np.concatenate([np.full(w, 1 / np.sqrt(w)) for w in WIDTHS.values()])
    fitted = MiniBatchKMeans(n_clusters=4, random_state=0, n_init=3, batch_size=1024).partial_fit(
        scaler.transform(x) * weights)
    path = tmp_path / "old.joblib"
    joblib.dump({"format": "geoalps-kmeans/1", "n_classes": 4, "block_widths": dict(WIDTHS), "seed": 0,
                 "scaler": scaler, "kmeans": fitted, "n_seen": len(x), "class_names": None}, path)
    with pytest.raises(ModelError, match="can run code") as refused:
        OnlineKMeans.load(path)
    assert "\n" not in str(refused.value) and "--trust-kmeans-model" in str(refused.value)
    model = OnlineKMeans.load(path, trust=True)
    assert model.frozen and model.mapping is None and model.effective_classes == 4
    assert np.array_equal(model.predict(x), fitted.predict(scaler.transform(x) * weights))
    assert model.distances(x).shape == (len(x),)
    model.save(tmp_path / "resaved.joblib")  # saved again as /2, same classes
    assert np.array_equal(OnlineKMeans.load(tmp_path / "resaved.joblib").predict(x), model.predict(x))


def test_not_a_model_is_refused(tmp_path):
    path = tmp_path / "bad.joblib"
    joblib.dump({"format": "geoalps-kmeans/9"}, path)
    with pytest.raises(ModelError, match="not a geoalps k-means model"):
        OnlineKMeans.load(path, trust=True)
    np.savez(path.with_suffix(".npz"), meta=np.array('{"format": "geoalps-kmeans/9"}'))
    with pytest.raises(ModelError, match="not a geoalps k-means model"):
        OnlineKMeans.load(path.with_suffix(".npz"))
    text = tmp_path / "text.joblib"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a geoalps k-means model"):
        OnlineKMeans.load(text)


def test_a_damaged_model_is_one_line(tmp_path):
    model = _fit(_blobs(60, seed=1)[0])
    path = tmp_path / "km.joblib"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist() if n != "centres.npy"}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    with pytest.raises(ModelError, match="damaged geoalps k-means model") as damaged:
        OnlineKMeans.load(path)
    assert str(damaged.value).startswith(str(path)) and "\n" not in str(damaged.value)


class _Planted:
    """A pickle that, when read, creates a marker file (what a shared model could do to a user)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickled_model_runs_nothing_and_is_one_line(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "km.joblib"
    joblib.dump({"format": "geoalps-kmeans/2", "scaler": _Planted(marker)}, path)
    raw = tmp_path / "raw.joblib"  # a plain pickle (protocol 0 too), not through joblib
    raw.write_bytes(pickle.dumps(_Planted(marker), protocol=0))
    npz = tmp_path / "npz.joblib"  # the new format with a pickled object array inside
    _fit(_blobs(30, seed=7)[0]).save(npz)
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    payload = np.empty(1, dtype=object)
    payload[0] = _Planted(marker)
    with open(npz, "wb") as f:
        np.savez(f, **{**arrays, "centres": payload})
    for planted in (path, raw, npz):
        with pytest.raises(ModelError) as refused:
            OnlineKMeans.load(planted)
        assert str(refused.value).startswith(str(planted)) and "\n" not in str(refused.value)
        assert not marker.exists()
    # the CLI: one line, the model's exit code, still nothing run
    named = subprocess.run([sys.executable, "-m", "geoalps", "classes", "name", str(path), "--names", "0=a",
                            "-o", str(tmp_path / "named.gpkg"), "--kmeans-model", str(path)],
                           capture_output=True, text=True)
    assert not marker.exists()
    assert named.returncode in (3, 5), named.stderr
    assert len(named.stderr.strip().splitlines()) == 1, named.stderr
    pickle.loads(raw.read_bytes())  # the planted file is real: reading it as a pickle runs its command
    assert marker.exists()


def test_a_trusted_old_model_converts_to_the_same_classes(tmp_path):
    x, _ = _blobs(80, seed=5)
    model = _fit(x)
    path = tmp_path / "old.joblib"
    joblib.dump({"format": "geoalps-kmeans/2", "n_classes": 4, "block_widths": dict(WIDTHS), "seed": 0,
                 "scaler": model.scaler, "kmeans": model.kmeans, "mapping": model.mapping,
                 "over_cluster": model.over_cluster, "steps": model.steps, "merge": model.merge,
                 "n_seen": model.n_seen, "class_names": {"1": "road"}}, path)
    cli = [sys.executable, "-m", "geoalps", "classes", "convert-model", str(path), str(tmp_path / "new.joblib")]
    untrusted = subprocess.run(cli, capture_output=True, text=True)
    assert untrusted.returncode == 2 and not (tmp_path / "new.joblib").exists()
    subprocess.run([*cli, "--trust-kmeans-model"], check=True, capture_output=True)
    new = OnlineKMeans.load(tmp_path / "new.joblib")
    assert np.array_equal(new.predict(x), model.predict(x)) and new.class_names.names == {1: "road"}
    with pytest.raises(ModelError):  # the input stays as it was: still refused untrusted
        OnlineKMeans.load(path)


def test_the_trust_environment_variable_reads_old_models(tmp_path, monkeypatch):
    x, _ = _blobs(40, seed=6)
    model = _fit(x)
    path = tmp_path / "old.joblib"
    joblib.dump({"format": "geoalps-kmeans/2", "n_classes": 4, "block_widths": dict(WIDTHS), "seed": 0,
                 "scaler": model.scaler, "kmeans": model.kmeans, "mapping": model.mapping,
                 "n_seen": model.n_seen}, path)
    monkeypatch.setenv(km.TRUST_ENV, "1")
    assert np.array_equal(OnlineKMeans.load(path).predict(x), model.predict(x))
    monkeypatch.setenv(km.TRUST_ENV, "0")
    with pytest.raises(ModelError, match="can run code"):
        OnlineKMeans.load(path)


def test_class_centres_are_the_mass_weighted_means_of_their_centres():
    """class_centres: the centre of each merged class, computed here from the fine centres, their
    masses and the centre -> class mapping independently of the model's own code."""
    rng = np.random.default_rng(3)
    features = np.concatenate([rng.normal(m, 0.3, (200, 3)) for m in (0.0, 4.0, 9.0)])
    model = OnlineKMeans(3, {"spectral": 3}, seed=0)
    model.partial_fit(features, sample_weight=rng.uniform(1, 5, len(features)))
    model.finish()
    got = model.class_centres()
    centres, mass, mapping = model.kmeans.cluster_centers_, model.kmeans._counts, model.mapping
    assert got.shape == (model.effective_classes, centres.shape[1])
    for k in range(model.effective_classes):
        mine = mapping == k
        expected = (centres[mine] * mass[mine, None]).sum(axis=0) / mass[mine].sum()
        np.testing.assert_allclose(got[k], expected, rtol=1e-9, atol=1e-9)


def test_a_model_that_saw_a_constant_block_ignores_its_values(tmp_path):
    """A model fitted where the index block was all zeros (scenes without band roles before the
    role-free ratios) assigns the same classes, after save and load, whatever values that block
    takes now: a column constant in training is the same in every centre, so it adds the same
    distance to each and never changes the nearest."""
    x, _ = _blobs(60, seed=3)
    x[:, 4:] = 0.0  # the index block never varied
    model = _fit(x)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = OnlineKMeans.load(path)
    now = x.copy()
    now[:, 4:] = np.random.default_rng(4).normal(0, 1, (len(x), 2))  # the ratios of today
    np.testing.assert_array_equal(loaded.predict(now), model.predict(x))
    moved = x.copy()
    moved[:, 0] += np.random.default_rng(5).normal(0, 3, len(x))  # a block it did see vary
    assert (loaded.predict(moved) != model.predict(x)).any(), "the fixture must tell the blocks apart"
