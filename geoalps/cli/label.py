"""``geoalps label``: thin over :func:`geoalps.labelling.run.label`."""
from __future__ import annotations

import sys

import click

from geoalps.cli import main
from geoalps.cli.options import (area_opts, classical_opts, clustering_opts, engine_opt, mask_filter_opts,
                                 polygon_opts, run_opts, sam_opts, scene_opts)


@main.command("label")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Polygons to write; the format follows the extension: .gpkg (layer 'masks'), "
                   ".parquet (GeoParquet), .fgb, .geojson/.json, .shp.")
@engine_opt
@sam_opts
@classical_opts
@mask_filter_opts
@scene_opts
@area_opts
@clustering_opts
@polygon_opts
@click.option("--kmeans-model", type=click.Path(dir_okay=False), default=None,
              help="Reuse this k-means model if it exists (same classes across runs), else fit and save it here.")
@click.option("--trust-kmeans-model", is_flag=True, default=None,
              help="Also read a --kmeans-model saved by older geoalps (a pickle, which runs code when read: "
                   "only for files you trust; or set GEOALPS_TRUST_KMEANS_MODEL=1).")
@click.option("--raster-out", type=click.Path(), default=None,
              help="Pseudo-label GeoTIFF (.tif/.tiff) on the scene's grid; a folder for several scenes (<scene>.labels.tif).")
@run_opts
def label_command(scenes, output, raster_out, kmeans_model, trust_kmeans_model, **options):
    """Label SCENES (GeoTIFFs, folders of image chips, quoted glob patterns such as 'tiles/*.tif', URLs
    such as https://, s3://, /vsicurl/, or STAC item JSON files/URLs) into a GeoPackage of
    pseudo-classed polygons.

    \b
    Example:
      $ geoalps label sample_data/scene_rgbn_u16.tif -o labels.gpkg --engine classical --classes 8
      $ geoalps label scene.tif -o out.gpkg --checkpoint sam_vit_b_01ec64.pth --bands 4,3,2 --raster-out out.tif
      $ geoalps label tiles/ -o all.gpkg --workers 2 --resume
      $ geoalps label https://host/scene.tif -o out.gpkg --aoi 11.30,47.20,11.45,47.30 --aoi-crs EPSG:4326
      $ geoalps label item.json -o out.gpkg --assets red,green,blue,nir --aoi area.gpkg
    """
    from geoalps.labelling.run import label

    stats = label(list(scenes), output, raster_out=raster_out, kmeans_model=kmeans_model,
                  trust_kmeans_model=trust_kmeans_model, **options).stats
    if not options["quiet"]:
        print(
            f"geoalps: wrote {output}: {stats['objects']} polygons, {stats['classes_used']} pseudo-classes, "
            f"{stats['tiles']} tiles ({stats['tiles_skipped']} all nodata, {stats['tiles_resumed']} resumed) "
            f"in {stats['seconds']:.1f} s",
            file=sys.stderr,
        )
