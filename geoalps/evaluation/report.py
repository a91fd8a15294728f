"""Writing evaluation results: the JSON scores and a confusion-matrix figure, both atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from geoalps.errors import InputError
from geoalps.files import atomic_path


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary path beside ``path``, then rename it onto ``path``
    (:func:`geoalps.files.atomic_path`; replaces an existing file)."""
    with atomic_path(path, overwrite=True) as tmp:
        write(tmp)
    return Path(path)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists, for json.dumps."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``result`` as indented, strict JSON (no NaN), atomically (temp file + os.replace)."""
    text = json.dumps(result, indent=2, default=_plain, allow_nan=False) + "\n"
    return _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def row_normalised(table: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a pseudo-class's pixels per true class); empty rows stay 0."""
    table = np.asarray(table, np.float64)
    sums = table.sum(axis=1, keepdims=True)
    return np.divide(table, sums, out=np.zeros_like(table), where=sums > 0)


def confusion_figure(table: np.ndarray, pred_ids: Sequence[int], true_ids: Sequence[int],
                     names: Sequence[str] | dict[int, str] | None, path: str | os.PathLike, *,
                     pred_names: Sequence[str] | dict[int, str] | None = None,
                     pred_axis: str = "pseudo-class") -> Path:
    """A PNG of the row-normalised contingency table: pseudo-classes down, true classes across.

    ``names`` / ``pred_names``: names of the true / predicted classes (a list indexed by id or a
    dict), shown beside the ids (a named output's ``class_names``; geoalps's default
    ``class N`` names add nothing and are left out). ``pred_axis``: what the rows are
    ("predicted class" for a supervised prediction). The last row is "no prediction" (valid
    truth pixels the prediction does not cover). Cells are annotated with percentages when the
    table is small enough to read (<= 30 x 30). Cost: matplotlib's Agg canvas, no display or
    pyplot state needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shares = row_normalised(table)
    rows = [_label(int(k), pred_names) for k in pred_ids] + ["no prediction"]
    cols = [_label(int(c), names) for c in true_ids]
    if shares.shape != (len(rows), len(cols)):
        raise InputError(f"{path}: table is {shares.shape[0]}x{shares.shape[1]} but ids give {len(rows)}x{len(cols)}")
    fig = Figure(figsize=(1.2 + 0.55 * max(len(cols), 4), 1.2 + 0.4 * max(len(rows), 4)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("true class")
    ax.set_ylabel(pred_axis)
    if shares.size <= 900:
        for (r, c), share in np.ndenumerate(shares):
            ax.text(c, r, f"{100 * share:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if share < 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the row's pixels")
    fig.tight_layout()
    return _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _label(class_id: int, names: Sequence[str] | dict[int, str] | None) -> str:
    """'id name' when the class has a name (other than geoalps's default ``class N``), else 'id'."""
    if isinstance(names, dict):
        name = names.get(class_id, names.get(str(class_id)))
    else:
        name = names[class_id] if names is not None and 0 <= class_id < len(names) else None
    return f"{class_id} {name}" if name and name != f"class {class_id}" else str(class_id)
