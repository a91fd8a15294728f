"""The ``geoalps`` command: one module a sub-command, each thin over the library.

Sub-commands import heavy libraries (torch, rasterio) lazily so ``geoalps --help`` is instant.
"""
from __future__ import annotations

import sys

import click

from geoalps.errors import GeoAlpsError


class _Group(click.Group):
    """Turns GeoAlpsError into a one-line message and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeoAlpsError as exc:
            click.echo(f"geoalps: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("geoalps: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="geoalps")
def main() -> None:
    """geoalps: unsupervised labels for georeferenced imagery (SAM masks + online k-means, ALPS)."""


def _register() -> None:
    # Each sub-command lives in its own module; a missing optional module must not break the rest.
    from geoalps.cli import label as _label  # noqa: F401

    for name in ("train", "models"):
        try:
            __import__(f"geoalps.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"geoalps.cli.{name}":
                raise


_register()
