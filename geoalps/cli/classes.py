"""``geoalps classes gallery | name | convert-model``: see what the pseudo-classes are, and name them.

Thin over :mod:`geoalps.classes`; nothing here runs a mask engine.
"""
from __future__ import annotations

import click

from geoalps.cli import main
from geoalps.cli.options import overwrite_opt, quiet_opt


@main.group("classes")
def classes() -> None:
    """Pseudo-classes people can read: a gallery of each class, and names from a few examples."""


@classes.command("gallery")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "path", required=True, type=click.Path(dir_okay=False),
              help="Picture to write: .png, or .html with the images inlined.")
@click.option("--scene", "scenes", multiple=True, type=click.Path(dir_okay=False),
              help="Scene file(s), when they are no longer where the labelling run read them.")
@click.option("--chips", "chips_per_class", type=click.IntRange(1, 32), default=6, show_default=True,
              help="Example chips per class (closest to the class centre, then random ones).")
@click.option("--random-chips", type=click.IntRange(0, 32), default=2, show_default=True,
              help="How many of the chips are drawn at random.")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_opt
def gallery_command(output, path, scenes, chips_per_class, random_chips, seed, overwrite):
    """One picture of every pseudo-class of OUTPUT (a `geoalps label` GeoPackage): colour, count,
    share of the area, mean signature of all bands, example chips, and the scene by class.

    \b
    Example:
      $ geoalps classes gallery labels.gpkg -o gallery.png
      $ geoalps classes gallery labels.gpkg -o gallery.html --scene /data/scene.tif
    """
    from geoalps.classes.gallery import make_gallery
    from geoalps.files import check_distinct

    check_distinct([output, *scenes], [(path, [path])])
    result = make_gallery(output, path, scenes=list(scenes) or None, chips_per_class=chips_per_class,
                          random_chips=random_chips, seed=seed, overwrite=overwrite)
    click.echo(f"geoalps: wrote {path}: {len(result['classes'])} classes", err=True)


@classes.command("name")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "named_output", required=True, type=click.Path(dir_okay=False),
              help="Renamed GeoPackage to write (class_id, class_name, a QGIS style by name).")
@click.option("--examples", type=click.Path(dir_okay=False), default=None,
              help="Points or polygons with a name field (e.g. drawn in QGIS); each votes for the classes under it.")
@click.option("--field", "name_field", default="name", show_default=True, help="The examples' name field.")
@click.option("--names", default=None, help="A plain mapping instead of examples: 0=building,3=building,5=water.")
@click.option("--kmeans-model", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Store the names in this k-means model, so `geoalps label --kmeans-model` writes them on new scenes.")
@click.option("--trust-kmeans-model", is_flag=True, default=None,
              help="Also read a --kmeans-model saved by older geoalps (a pickle, which runs code when read: only "
                   "for files you trust); it is saved back in the data-only format.")
@click.option("--no-split", "no_split", is_flag=True, default=False,
              help="Name whole classes only: a class the examples call by several names takes the most voted one "
                   "(by default its objects are split between those names by their mean band values, read from "
                   "the scenes).")
@click.option("--scene", "scenes", multiple=True, type=click.Path(dir_okay=False),
              help="A scene of OUTPUT, where it is no longer where labelling recorded it (repeatable).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the naming report as JSON.")
@overwrite_opt
@quiet_opt
def name_command(output, named_output, examples, name_field, names, kmeans_model, trust_kmeans_model, no_split,
                 scenes, report_path, overwrite, quiet):
    """Name the pseudo-classes of OUTPUT from examples or a mapping; classes sharing a name are
    merged on output, unnamed ones keep `class N`. A class the examples call by several names is
    split between them object by object (nearest example object in mean band values), unless
    --no-split.

    \b
    Example:
      $ geoalps classes name labels.gpkg --examples examples.gpkg --field name -o named.gpkg --kmeans-model km.joblib
      $ geoalps classes name labels.gpkg --names 0=building,3=building,5=water -o named.gpkg
    """
    from geoalps.classes.naming import name_classes, report_json, report_lines
    from geoalps.files import check_distinct, check_writable, write_bytes_atomic
    from geoalps.outputs.formats import output_files

    check_distinct([output, examples, kmeans_model],
                   [(named_output, output_files(named_output))] + ([(report_path, [report_path])] if report_path else []))
    if report_path:
        check_writable(report_path, overwrite)
    report = name_classes(output, named_output, examples=examples, name_field=name_field, names=names,
                          kmeans_model=kmeans_model, overwrite=overwrite, trust_kmeans_model=trust_kmeans_model,
                          split=not no_split, scenes=list(scenes) or None)
    if not quiet:
        for line in report_lines(report):
            click.echo(line)
    if report_path:
        write_bytes_atomic(report_path, report_json(report).encode())


@classes.command("convert-model")
@click.argument("old_model", type=click.Path(dir_okay=False, exists=True))
@click.argument("new_model", type=click.Path(dir_okay=False))
@click.option("--trust-kmeans-model", is_flag=True, default=False,
              help="Required: you trust OLD_MODEL (reading a pickle runs whatever code it holds).")
@overwrite_opt
def convert_model_command(old_model, new_model, trust_kmeans_model, overwrite):
    """Rewrite a k-means model saved by older geoalps (a pickle) as NEW_MODEL in the data-only
    format, with the same classes and names. Reading OLD_MODEL runs any code it holds: convert
    only files whose origin you trust.

    \b
    Example:
      $ geoalps classes convert-model old_km.joblib km.joblib --trust-kmeans-model
    """
    from geoalps.clustering.kmeans import convert_model

    if not trust_kmeans_model:
        raise click.UsageError("pass --trust-kmeans-model to say OLD_MODEL is trusted")
    convert_model(old_model, new_model, overwrite=overwrite)
    click.echo(f"geoalps: wrote {new_model}", err=True)
