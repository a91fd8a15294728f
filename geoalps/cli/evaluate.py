"""``geoalps evaluate``: thin over :mod:`geoalps.evaluation` (pseudo-labels matched to true
classes, or a supervised prediction scored as it is)."""
from __future__ import annotations

import click

from geoalps.cli import main
from geoalps.cli.options import overwrite_opt

#: geoalps.evaluation.mapping.MAPPING_CHOICES, spelt out so `geoalps --help` does not import the
#: evaluation package (numpy, rasterio); tests/evaluation/test_mapping.py checks they agree.
MAPPING_CHOICES = ("identity", "many-to-one", "hungarian")


@main.command("evaluate")
@click.argument("prediction", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write every figure to this JSON file.")
@click.option("--figure", type=click.Path(dir_okay=False), default=None, help="Confusion matrix picture (PNG).")
@click.option("--truth-field", default=None, help="Vector truth: the class field (numbers or names).")
@click.option("--truth-nodata", default=None, help="Truth value that is not scored [default: the raster's nodata].")
@click.option("--mapping", type=click.Choice(MAPPING_CHOICES), default=None,
              help="How predicted ids meet true ids: matched pseudo-classes (many-to-one, hungarian) or the "
                   "truth's own ids (identity: mIoU, per-class IoU, overall accuracy under the JSON key "
                   "'identity'). [default: identity for a `geoalps predict` raster, else many-to-one]")
@click.option("--truth-names", default=None,
              help="Names of the true classes, e.g. 1=water,2=developed [default: the truth's CLASS_NAMES / "
                   "CLASS_CODES tags, or GDAL category names where GDAL's Python bindings are installed].")
@click.option("--objects", type=click.Path(dir_okay=False), default=None,
              help="True objects for object recall: an instance or class raster, or polygons.")
@click.option("--objects-by", type=click.Choice(["component", "value"]), default="component", show_default=True,
              help="Raster objects: connected components, or one object per instance value.")
@click.option("--object-class", "object_classes", type=int, multiple=True,
              help="Only these values of the objects raster are objects (e.g. the building class).")
@click.option("--iou", "iou_threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="An object is found when some output polygon has at least this IoU with it.")
@click.option("--box", is_flag=True, help="Compare bounding boxes (tree crowns given as boxes).")
@click.option("--min-object-px", type=click.IntRange(0), default=64, show_default=True,
              help="Smallest true object counted, in pixels.")
@overwrite_opt
def evaluate_command(prediction, truth, json_path, figure, truth_field, truth_nodata, mapping, truth_names, objects,
                     objects_by, object_classes, iou_threshold, box, min_object_px, overwrite):
    """Score PREDICTION (a label raster or a geoalps GeoPackage) against ground truth TRUTH.

    Pseudo-classes are matched to true classes first: many-to-one (each pseudo-class to its
    majority class) and one-to-one (Hungarian) mIoU, pixel accuracy, purity and NMI; with
    --objects, the share of true objects found at IoU >= --iou. For a geoalps GeoPackage, the
    segment oracle: the mIoU reached when each output region takes its majority true class (what
    the regions allow before clustering). A `geoalps predict` raster, whose ids are the truth's
    classes, is scored as it is (--mapping identity: mIoU, per-class IoU, overall accuracy). True
    class names (tags, --truth-names) appear in the report, the JSON and the figure.

    \b
    Example:
      $ geoalps evaluate labels.tif scene.gt.tif --json m.json --figure confusion.png
      $ geoalps evaluate labels.gpkg buildings.tif --objects buildings.tif --object-class 1
      $ geoalps evaluate scene.pred.tif scene.gt.tif --truth-names 1=water,2=developed
    """
    from geoalps.evaluation import confusion_figure, evaluate_pseudo_labels, write_json
    from geoalps.files import check_distinct, check_writable

    check_distinct([prediction, truth, objects], [(p, [p]) for p in (json_path, figure) if p])
    for path in (json_path, figure):
        if path:
            check_writable(path, overwrite)
    nodata = _number_or_text(truth_nodata)
    result = evaluate_pseudo_labels(prediction, truth, truth_field=truth_field, truth_nodata=nodata, objects=objects,
                                    iou_threshold=iou_threshold, objects_by=objects_by,
                                    object_classes=object_classes or None, min_object_px=min_object_px, box=box,
                                    mapping=mapping, truth_names=truth_names)
    for line in summary_lines(result):
        click.echo(line)
    if figure:
        table = result["contingency"]
        identity = result.get("scored_as") == "identity"
        confusion_figure(table["pixels"], table["pseudo_classes"], table["true_classes"], result.get("class_names"),
                         figure, pred_names=result.get("class_names") if identity else result.get("prediction_names"),
                         pred_axis="predicted class" if identity else "pseudo-class")
    if json_path:
        write_json(result, json_path)


def _number_or_text(value: str | None):
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def summary_lines(result: dict) -> list[str]:
    """The figures a person reads first, then one row per true class (by its name where known)."""
    if result.get("scored_as") == "identity" and "identity" in result:
        return _identity_lines(result)
    lines = [
        f"many-to-one mIoU  {_fmt(result.get('many_to_one_miou'))}",
        f"pixel accuracy    {_fmt(result.get('pixel_accuracy'))}",
        f"Hungarian mIoU    {_fmt(result.get('hungarian_miou'))}",
        f"purity            {_fmt(result.get('purity'))}",
        f"NMI               {_fmt(result.get('nmi'))}",
        f"pseudo-classes {result.get('n_pseudo_classes')}, true classes {result.get('n_true_classes')}, "
        f"pixels scored {result.get('valid_pixels')}",
    ]
    if "segment_oracle_miou" in result:
        lines.append(f"segment oracle    {_fmt(result['segment_oracle_miou'])} (many-to-one mIoU with each of the "
                     f"{result['regions']} regions given its majority class)")
    lines += _recall_lines(result)
    hungarian = result.get("scored_as") == "hungarian"
    if hungarian:  # the mapping asked for leads
        lines[:3] = [lines[2], f"Hungarian pixel accuracy {_fmt(result.get('hungarian_pixel_accuracy'))}",
                     lines[0], lines[1]]
    for row in result.get("per_class", []):
        name = row.get("name") or ""
        if hungarian:
            lines.append(f"  class {row.get('true_class')!s:>5} {name:<16} IoU {_fmt(row.get('iou_hungarian'))} "
                         f"from pseudo-class {row.get('hungarian_pseudo_class')} "
                         f"(many-to-one {_fmt(row.get('iou_many_to_one'))})")
        else:
            lines.append(f"  class {row.get('true_class')!s:>5} {name:<16} IoU {_fmt(row.get('iou_many_to_one'))} "
                         f"(Hungarian {_fmt(row.get('iou_hungarian'))}) from pseudo-classes {row.get('pseudo_classes')}")
    return lines


def _recall_lines(result: dict) -> list[str]:
    """The object-recall line, when objects were scored."""
    recall = result.get("object_recall")
    if not recall:
        return []
    return [f"object recall     {_fmt(recall.get('recall'))} ({recall.get('n_found')} of "
            f"{recall.get('n_true_objects')} objects at IoU >= {recall.get('iou_threshold')})"]


def _identity_lines(result: dict) -> list[str]:
    """A supervised prediction scored as it is: mIoU, overall accuracy, IoU per class."""
    scores = result["identity"]
    lines = [
        f"mIoU              {_fmt(scores.get('miou'))}  (class ids as predicted)",
        f"overall accuracy  {_fmt(scores.get('overall_accuracy'))}",
        f"classes {len(scores.get('per_class', []))}, pixels scored {scores.get('pixels_scored')}",
    ]
    lines += _recall_lines(result)
    for row in scores.get("per_class", []):
        name = row.get("name") or ""
        lines.append(f"  class {row.get('class')!s:>5} {name:<16} IoU {_fmt(row.get('iou'))} "
                     f"({row.get('truth_pixels')} true px, {row.get('predicted_pixels')} predicted px)")
    return lines
