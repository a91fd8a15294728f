"""Names of pseudo-classes: which k-means class is "building", and which classes are one class.

Users name classes from a few examples or a plain mapping (``geoalps classes name``); the names
live in the k-means model, so ``geoalps label --kmeans-model M`` writes them on new scenes.
Several pseudo-classes may share a name: on output they are one class, ``class_id``, numbered
0..M-1 in the order of the smallest pseudo-class carrying each name, and coloured as that
pseudo-class; unnamed classes keep ``class N``, a class id of their own and their colour.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geoalps.errors import OptionError


@dataclass(frozen=True)
class ClassNames:
    """Pseudo-class -> name for ``n_classes`` k-means classes (only named ones in ``names``)."""

    n_classes: int
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [k for k in self.names if not 0 <= int(k) < self.n_classes]
        if bad:
            raise OptionError(f"class {bad[0]} does not exist (pseudo-classes are 0..{self.n_classes - 1})")
        empty = [k for k, v in self.names.items() if not str(v).strip()]
        if empty:
            raise OptionError(f"class {empty[0]}: empty name")

    def name_of(self, pseudo_class: int) -> str:
        return self.names.get(int(pseudo_class), f"class {int(pseudo_class)}")

    @property
    def merged_names(self) -> list[str]:
        """The output classes' names, class id order (first pseudo-class carrying each name)."""
        out: list[str] = []
        for k in range(self.n_classes):
            name = self.name_of(k)
            if name not in out:
                out.append(name)
        return out

    def first_pseudo_classes(self) -> list[int]:
        """The lowest pseudo-class of each output class, class id order: the one whose colour the
        named class takes (:func:`geoalps.outputs.style.output_class_colours`)."""
        first: dict[str, int] = {}
        for k in range(self.n_classes):
            first.setdefault(self.name_of(k), k)
        return list(first.values())

    def class_ids(self) -> np.ndarray:
        """(n_classes,) output class id of each pseudo-class (a lookup table)."""
        order = {name: i for i, name in enumerate(self.merged_names)}
        return np.array([order[self.name_of(k)] for k in range(self.n_classes)], dtype=np.int32)

    def to_state(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in sorted(self.names.items())}

    @classmethod
    def from_state(cls, n_classes: int, state: dict | None) -> "ClassNames | None":
        if not state:
            return None
        return cls(n_classes, {int(k): str(v) for k, v in state.items()})


def parse_mapping(text: str, n_classes: int) -> ClassNames:
    """``"0=building,3=building,5=water"`` -> :class:`ClassNames`; a bad item is one OptionError."""
    names: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, name = item.partition("=")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise OptionError(f"--names: {item!r} is not CLASS=NAME (e.g. 0=building,3=water)")
        names[int(key)] = name.strip()
    if not names:
        raise OptionError("--names: no CLASS=NAME pairs given")
    return ClassNames(n_classes, names)
