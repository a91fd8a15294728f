"""Naming pseudo-classes from a few examples, or from a plain mapping, and renaming an output.

A user draws a few points or polygons with a name field (in QGIS, say) over a labelling output.
Each example votes for the pseudo-class of the objects under it, with their areas (map units
squared): a point for the object that holds it, a polygon for the objects whose representative
point it holds (objects it only grazes at its edge do not vote). A class's votes so follow the
pixels of the objects the examples show, as the many-to-one mapping of ``geoalps evaluate``
follows the pixels of the truth. A class takes the name with the most votes (ties: the first
name alphabetically); with the run's k-means model, classes no example touches take the name of
the nearest named class (:func:`fill_from_centres`), else they keep ``class N``; several classes may share a name and are then one class on
output (:class:`geoalps.clustering.names.ClassNames`). Conflicts (a class voted for under
several names) and unused examples (under no object) are reported.

A class voted for under several names holds covers the examples tell apart, so by default it is
split (:func:`split_conflicts`): each of its objects takes the name of the example object of that
class nearest to it in mean band values (read back from the scenes, :mod:`object_means`). On the
scene bank's selection half (``benchmarks/naming``) that lifts the named accuracy at K = true
classes from 0.797 to 0.853 (11 of 13 scenes better), at 2K from 0.838 to 0.842.
The k-means model keeps one name a class (the vote's): the split is of these objects only.

Renaming streams the output layer batch by batch: memory follows one batch, not the layer.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from geoalps.clustering.names import ClassNames, parse_mapping
from geoalps.errors import InputError, OptionError
from geoalps.outputs.formats import check_output
from geoalps.outputs.vector import (SCENES_METADATA, LayerStyle, layer_info, read_layer, read_layer_batches,
                                    with_class_names, write_output)


@dataclass
class NamingReport:
    """What naming decided: per class its name and votes, and the examples that found no object."""

    names: ClassNames
    votes: dict[int, dict[str, float]] = field(default_factory=dict)
    unused_examples: list[int] = field(default_factory=list)
    n_examples: int = 0
    #: Classes no example touched, named after the nearest voted class (class -> that class).
    filled: dict[int, int] = field(default_factory=dict)
    #: The objects examples fell on: instance_id -> (pseudo-class, {name: votes}).
    example_objects: dict[int, tuple[int, dict[str, float]]] = field(default_factory=dict)
    #: Objects of split classes named otherwise than their class: instance_id -> name.
    object_names: dict[int, str] = field(default_factory=dict)
    #: Split classes: class -> {name: number of its objects taking it}.
    split: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        """The named output's classes, class id order: the classes' names, then names that only
        split objects carry."""
        names = self.names.merged_names
        return names + sorted({n for n in self.object_names.values() if n not in names})

    @property
    def conflicts(self) -> dict[int, dict[str, float]]:
        """Classes voted for under more than one name."""
        return {k: v for k, v in self.votes.items() if len(v) > 1}

    def table(self) -> list[dict]:
        """One row per pseudo-class: class, name, votes per name, whether the votes disagree."""
        rows = []
        for k in range(self.names.n_classes):
            votes = self.votes.get(k, {})
            rows.append({"pseudo_class": k, "name": self.names.name_of(k), "named": k in self.names.names,
                         "votes": {n: round(v, 3) for n, v in sorted(votes.items())}, "conflict": len(votes) > 1,
                         "nearest_named_class": self.filled.get(k), "split": self.split.get(k, {})})
        return rows

    def as_dict(self) -> dict:
        return {"classes": self.table(), "merged_names": self.output_names,
                "unused_examples": self.unused_examples, "n_examples": self.n_examples}


def count_pseudo_classes(output: str | os.PathLike) -> int:
    """K of an output: one more than the largest pseudo-class in its layer (attributes only)."""
    frame = read_layer(output, columns=["pseudo_class"], read_geometry=False)
    return int(frame["pseudo_class"].max()) + 1 if len(frame) else 0


def vote(output: str | os.PathLike, examples: str | os.PathLike, name_field: str, n_classes: int) -> NamingReport:
    """Votes of the examples in ``examples`` (points or polygons with ``name_field``) for the
    pseudo-classes of the objects in ``output`` under them; reads only the objects the examples'
    bounds meet.

    Each vote weighs the area of the object it falls on: large covers come in large objects, so
    a class holding the examples of a small cover and of a large one goes to the large one, as
    the many-to-one mapping of ``geoalps evaluate`` would (one vote per example with the names'
    areas estimated from the classes' areas was measured and lost at K on the scene bank:
    ``benchmarks/naming``)."""
    import shapely

    ex = _read_examples(examples, name_field)
    crs = layer_info(output)["crs"]
    if ex.crs is not None and crs is not None:
        ex = ex.to_crs(crs)
    objects = read_layer(output, columns=["instance_id", "pseudo_class"], bbox=tuple(ex.total_bounds))
    votes: dict[int, dict[str, float]] = {}
    shown: dict[int, tuple[int, dict[str, float]]] = {}
    unused: list[int] = []
    tree = shapely.STRtree(objects.geometry.values)
    classes = objects["pseudo_class"].to_numpy()
    instance_ids = objects["instance_id"].to_numpy()
    for number, (geometry, name) in enumerate(zip(ex.geometry.values, ex[name_field].astype(str))):
        hits = _objects_under(geometry, objects.geometry.values, tree)
        weights = shapely.area(objects.geometry.values[hits])
        if not len(hits):
            unused.append(number)
            continue
        for k, w, instance in zip(classes[hits], weights, instance_ids[hits]):
            tally = votes.setdefault(int(k), {})
            tally[name] = tally.get(name, 0.0) + float(w)
            own = shown.setdefault(int(instance), (int(k), {}))[1]
            own[name] = own.get(name, 0.0) + float(w)
    names = {k: _winner(tally) for k, tally in votes.items() if k < n_classes}
    return NamingReport(ClassNames(n_classes, names), votes, unused, len(ex), example_objects=shown)


#: Objects whose distances to the example objects are computed at once (bounds the temporaries).
DISTANCE_CHUNK = 8192


def _nearest_anchor(points: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``anchors`` for each row of ``points`` (Euclidean), in chunks
    of :data:`DISTANCE_CHUNK` rows, so memory stays (chunk x anchors x bands) for any class size."""
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), DISTANCE_CHUNK):
        part = points[start : start + DISTANCE_CHUNK]
        out[start : start + len(part)] = np.argmin(((part[:, None, :] - anchors[None]) ** 2).sum(axis=-1), axis=1)
    return out


def _winner(tally: dict[str, float]) -> str:
    """The name with the most votes; ties: the first alphabetically."""
    return max(sorted(tally), key=lambda n: tally[n])


def split_conflicts(report: NamingReport, output: str | os.PathLike,
                    scenes: list[str | os.PathLike] | None = None) -> NamingReport:
    """``report`` with every class voted for under several names split between them: each of
    its objects takes the name of the nearest example object of that class (Euclidean distance
    between standardised mean band values, :meth:`ObjectMeans.standardised`; an example object
    shown under several names stands for its most voted one). The class keeps its vote's name in
    ``names``; the objects named otherwise are in ``object_names``. Objects without valid pixels
    keep the class's name.

    Costs one read of the scenes (:func:`object_band_means`) when a class is in conflict, and
    (examples x members) distances per split class.
    """
    conflicts = {k for k, tally in report.votes.items() if len(tally) > 1 and k < report.names.n_classes}
    if not conflicts:
        return report
    from geoalps.classes.object_means import object_band_means

    features = object_band_means(output, scenes).standardised()
    members = read_layer(output, columns=["instance_id", "pseudo_class"], read_geometry=False)
    object_names, split = dict(report.object_names), dict(report.split)
    for k in sorted(conflicts):
        shown = [(i, _winner(tally)) for i, (c, tally) in sorted(report.example_objects.items())
                 if c == k and np.isfinite(features[i]).all()]
        ids = members.loc[members["pseudo_class"].to_numpy() == k, "instance_id"].to_numpy(dtype=np.int64)
        if not shown or not len(ids):
            continue
        anchors = features[[i for i, _ in shown]]
        labels = np.array([n for _, n in shown], dtype=object)
        nearest = labels[_nearest_anchor(features[ids], anchors)]
        unseen = ~np.isfinite(features[ids]).all(axis=1)
        nearest[unseen] = report.names.name_of(k)
        split[k] = {str(n): int(c) for n, c in zip(*np.unique(nearest.astype(str), return_counts=True))}
        object_names.update({int(i): str(n) for i, n in zip(ids, nearest) if n != report.names.name_of(k)})
    return replace(report, object_names=object_names, split=split)


def fill_from_centres(report: NamingReport, centres: np.ndarray) -> NamingReport:
    """``report`` with every class no example touched named after the nearest voted class
    (Euclidean distance between class centres in the k-means model's space; ties: the lower
    class). With a few examples per true class many pseudo-classes get none (the usual case at
    K > the number of true classes); leaving them ``class N`` costs their pixels, while the
    nearest named class is what k-means itself would have merged them into. Cost: K x K distances."""
    voted = sorted(report.names.names)
    if not voted or len(centres) != report.names.n_classes:
        return report
    names, filled = dict(report.names.names), {}
    for k in range(report.names.n_classes):
        if k in names:
            continue
        distance = np.linalg.norm(centres[voted] - centres[k], axis=1)
        nearest = voted[int(np.argmin(distance))]
        names[k], filled[k] = report.names.names[nearest], nearest
    return replace(report, names=ClassNames(report.names.n_classes, names), filled=filled)


def _objects_under(example, geometries: np.ndarray, tree) -> np.ndarray:
    """Indices of the objects an example stands for: the object holding a point; for a polygon,
    the objects whose representative point it holds (objects only grazed at its edge do not
    count), or, when it lies inside one object, that object."""
    import shapely

    hits = tree.query(example, predicate="intersects")
    if example.geom_type in ("Point", "MultiPoint") or not len(hits):
        return hits[:1]
    inside = hits[shapely.contains(example, shapely.point_on_surface(geometries[hits]))]
    if len(inside):
        return inside
    overlap = shapely.area(shapely.intersection(geometries[hits], example))
    return hits[[int(np.argmax(overlap))]] if overlap.max() > 0 else hits[:0]


def _read_examples(path: str | os.PathLike, name_field: str):
    import pyogrio

    if not Path(path).exists():
        raise InputError(f"{path}: examples file not found")
    try:
        ex = pyogrio.read_dataframe(path)
    except Exception as exc:  # noqa: BLE001 - any GDAL failure means "not a vector file we can read"
        raise InputError(f"{path}: cannot be read as vector data ({' '.join(str(exc).split())})") from None
    if name_field not in ex.columns:
        fields = ", ".join(c for c in ex.columns if c != "geometry") or "none"
        raise InputError(f"{path}: no field {name_field!r} (fields: {fields})")
    ex = ex[ex[name_field].notna() & ~ex.geometry.isna()]
    ex = ex[ex[name_field].astype(str).str.strip() != ""]
    if not len(ex):
        raise InputError(f"{path}: no example has a name in field {name_field!r}")
    return ex


def name_classes(
    output: str | os.PathLike,
    named_output: str | os.PathLike,
    *,
    examples: str | os.PathLike | None = None,
    name_field: str = "name",
    names: str | dict[int, str] | None = None,
    kmeans_model: str | os.PathLike | None = None,
    overwrite: bool = False,
    trust_kmeans_model: bool | None = None,
    split: bool = True,
    scenes: list[str | os.PathLike] | None = None,
) -> NamingReport:
    """Name the pseudo-classes of ``output`` (from ``examples`` or ``names``) and write the renamed
    layer to ``named_output``: ``class_id`` and ``class_name`` columns, a QGIS style by name.

    With ``kmeans_model`` the names are stored in that model, so ``geoalps label --kmeans-model``
    writes them on new scenes (a trusted model of older geoalps, ``trust_kmeans_model``, is
    then saved in the data-only format). With examples and ``split``, classes voted for under
    several names are split between them object by object (:func:`split_conflicts`; it reads
    the scenes, found in ``scenes`` or where the output recorded them). No engine runs:
    renaming costs one pass over the layer (and, for a split, one read of the scenes).
    """
    from geoalps.clustering.kmeans import OnlineKMeans

    if (examples is None) == (names is None):
        raise OptionError("give either --examples (with --field) or --names, not both")
    if not Path(output).is_file():
        raise InputError(f"{output}: labelling output not found")
    check_output(named_output, overwrite)
    model = OnlineKMeans.load(kmeans_model, trust=trust_kmeans_model) if kmeans_model is not None else None
    n_classes = model.effective_classes if model is not None else count_pseudo_classes(output)
    if examples is not None:
        report = vote(output, examples, name_field, n_classes)
        if model is not None:
            report = fill_from_centres(report, model.class_centres())
        if split:
            report = split_conflicts(report, output, scenes)
    else:
        mapping = parse_mapping(names, n_classes) if isinstance(names, str) else ClassNames(n_classes, dict(names))
        report = NamingReport(mapping)
    rename_output(output, named_output, report.names, overwrite=overwrite, object_names=report.object_names)
    if model is not None:
        model.class_names = report.names
        model.save(kmeans_model)
    return report


def rename_output(output: str | os.PathLike, named_output: str | os.PathLike, names: ClassNames,
                  overwrite: bool = False, object_names: dict[int, str] | None = None) -> Path:
    """Copy ``output`` with ``class_id``/``class_name`` from ``names`` (batch by batch, atomic);
    each named class is styled in the colour of its first pseudo-class, so colours do not move.
    ``object_names`` (instance_id -> name) overrides the class's name for single objects (a
    split class); a name only they carry comes after the classes' names, coloured as a
    pseudo-class no name is coloured as where one is left."""
    info = layer_info(output)
    metadata = {k: v for k, v in info["layer_metadata"].items() if k == SCENES_METADATA}
    object_names = object_names or {}
    merged = names.merged_names
    extra = sorted({n for n in object_names.values() if n not in merged})
    merged, ids = merged + extra, names.class_ids()
    number = {name: i for i, name in enumerate(merged)}
    colours = list(names.first_pseudo_classes())
    spare = [k for k in range(names.n_classes) if k not in colours]
    colours += [spare.pop(0) if spare else 0 for _ in extra]

    def renamed():
        for batch in read_layer_batches(output):
            batch = batch.drop(columns=[c for c in ("class_id", "class_name") if c in batch.columns])
            batch = with_class_names(batch, ids, merged)
            if object_names:
                override = [object_names.get(int(i)) for i in batch["instance_id"]]
                at = np.array([n is not None for n in override], dtype=bool)
                if at.any():
                    chosen = [n for n in override if n is not None]
                    batch.loc[at, "class_name"] = chosen
                    batch.loc[at, "class_id"] = np.array([number[n] for n in chosen], dtype=np.int32)
            yield batch

    write_output(renamed(), named_output, info["crs"], overwrite=overwrite,
                 style=LayerStyle(len(merged), "class_id", merged, tuple(colours)),
                 metadata=metadata or None, renumber=False)
    return Path(named_output)


def report_lines(report: NamingReport) -> list[str]:
    """The report as the table the CLI prints."""
    lines = [f"{'class':>5}  {'name':<20} votes"]
    for row in report.table():
        votes = ", ".join(f"{n} {v:g}" for n, v in row["votes"].items()) or "-"
        flag = "  CONFLICT" if row["conflict"] else ""
        if row["nearest_named_class"] is not None:
            votes = f"- (no example; nearest named class {row['nearest_named_class']})"
        if row["split"]:
            flag += "  split by objects: " + ", ".join(f"{n} {c}" for n, c in row["split"].items())
        lines.append(f"{row['pseudo_class']:>5}  {row['name']:<20} {votes}{flag}")
    if report.unused_examples:
        lines.append(f"unused examples (under no object): {', '.join(map(str, report.unused_examples))}")
    lines.append(f"named classes: {', '.join(report.output_names)}")
    return lines


def report_json(report: NamingReport) -> str:
    return json.dumps(report.as_dict(), indent=1)
