"""``geoalps models download | list``: thin over the sam and sam2 engines' ``checkpoints`` modules."""
from __future__ import annotations

from pathlib import Path

import click

from geoalps.cli import main

MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
SAM2_MODELS = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large")


def _dir_opt(help_text: str):
    return click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=help_text)


@main.group("models")
def models() -> None:
    """SAM checkpoints: download the official ones into the cache, list what is there.

    The cache folders are $GEOALPS_CACHE/sam and $GEOALPS_CACHE/sam2 (default ~/.cache/geoalps/...);
    `geoalps label --engine auto|sam|sam2` finds checkpoints there when no --checkpoint is given.
    """


@models.command("download")
@click.argument("model_type", type=click.Choice(MODEL_TYPES + SAM2_MODELS))
@_dir_opt("Folder to download into (default: the cache folder).")
@click.option("--url", default=None, help="Fetch from this mirror instead (the checksum still applies).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def download(model_type: str, directory: Path | None, url: str | None, quiet: bool) -> None:
    """Download an official SAM or SAM 2.1 checkpoint, verify it and print its path.

    vit_b is 375 MB (fastest SAM; the one to use on CPU), vit_l 1.2 GB, vit_h 2.4 GB; SAM files
    are checked by SHA-256. sam2.1_hiera_tiny is 156 MB, small 184 MB, base_plus 324 MB, large
    898 MB; Meta publishes no checksums for them, so they are checked by their tensors (the
    SAM 2.1 model of that size). An interrupted download resumes when the command is run again.

    \b
    $ geoalps models download vit_b
    $ geoalps label scene.tif -o labels.gpkg --engine sam
    $ geoalps models download sam2.1_hiera_tiny
    """
    if model_type in SAM2_MODELS:
        from geoalps.engines.sam2.checkpoints import download_sam2_checkpoint

        path = download_sam2_checkpoint(model_type, directory, url=url, progress=not quiet)
        click.echo(str(path))
        return
    from geoalps.engines.sam.checkpoints import download_checkpoint

    path = download_checkpoint(model_type, directory, url=url, progress=not quiet)
    click.echo(str(path))


@models.command("list")
@_dir_opt("Folder to look in for both SAM and SAM 2.1 files (default: the two cache folders).")
def list_(directory: Path | None) -> None:
    """Show which official SAM and SAM 2.1 checkpoints are there, with sizes and paths, and the
    one each engine takes without --checkpoint (its 'auto' line: the largest model found).

    \b
    $ geoalps models list
    $ geoalps models list --dir /data/weights
    """
    from geoalps.engines.sam import checkpoints as sam_checkpoints
    from geoalps.engines.sam2 import checkpoints as sam2_checkpoints

    if directory is None:
        uses = {"sam": "what --engine sam and --engine auto take without --checkpoint",
                "sam2": "what --engine sam2 takes without --checkpoint, and --engine auto when no SAM file is cached"}
    else:
        uses = {"sam": "the largest SAM model here; give it to label as --checkpoint",
                "sam2": "the largest SAM 2.1 model here; give it to label as --checkpoint"}
    for family, module in (("sam", sam_checkpoints), ("sam2", sam2_checkpoints)):
        folder = directory if directory is not None else module.cache_dir()
        click.echo(f"{family} {'cache' if directory is None else 'folder'}: {folder}")
        for name in module.OFFICIAL_CHECKPOINTS:
            path = module.find_cached_checkpoint(name, folder)
            if path is None:
                where = "" if directory is None else f" --dir {directory}"
                click.echo(f"{name}  -  not downloaded (geoalps models download {name}{where})")
            else:
                click.echo(f"{name}  {path.stat().st_size / 1e6:.0f} MB  {path}")
        auto = module.find_cached_checkpoint("auto", folder)
        click.echo(f"{family} auto: {auto if auto else 'none'}  ({uses[family]})")
