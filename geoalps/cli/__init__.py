"""The ``geoalps`` command: one module a sub-command, each thin over the library.

Sub-commands import heavy libraries (torch, rasterio) lazily so ``geoalps --help`` is instant.
"""
from __future__ import annotations

import os
import sys

import click

from geoalps import __version__
from geoalps.errors import GeoAlpsError


class _Group(click.Group):
    """Turns GeoAlpsError into a one-line message and its kind's exit code (``exit_code``:
    2 options, 3 inputs, 4 outputs, 5 models, 6 missing packages, 7 work folder, 8 failed tiles,
    9 downloads, 10 output in use by another run or program), never a traceback; 1 is an internal error, 130 an interrupt."""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
        except GeoAlpsError as exc:
            from geoalps.inputs.remote import redact  # no password of a URL or address is printed

            click.echo(f"geoalps: error: {redact(str(exc))}", err=True)
            _exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("geoalps: interrupted", err=True)
            _exit(130)
        except click.exceptions.Exit as exc:
            if _data_parallel():
                _exit(exc.exit_code)
            raise
        except (click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug, not bad input: still one line unless debugging
            if os.environ.get("GEOALPS_DEBUG"):
                raise
            from geoalps.inputs.remote import redact

            where = _last_frame(exc)
            click.echo(f"geoalps: error: internal error {type(exc).__name__}: {redact(' '.join(str(exc).split()))} "
                       f"(at {where}; set GEOALPS_DEBUG=1 for the traceback and please report it)", err=True)
            _exit(1)
        if _data_parallel():
            _exit(0)
        return result


def _data_parallel() -> bool:
    """This process is part of a torch.distributed run (torchrun): ``distributed.started``."""
    module = sys.modules.get("geoalps.train.distributed")  # never imported: never started
    return module is not None and module.started()


def _exit(code: int) -> None:
    """Exit with ``code``; a data-parallel process skips the interpreter's teardown, where gloo's
    transport threads can abort it (C++ terminate, exit -6) after its outputs are complete.
    Everything the command wrote is closed by now."""
    if _data_parallel():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _last_frame(exc: BaseException) -> str:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, package_name="geoalps")
def main() -> None:
    """geoalps: unsupervised labels for georeferenced imagery (SAM masks + online k-means, ALPS)."""


def _register() -> None:
    # Each sub-command lives in its own module; a missing optional module must not break the rest.
    from geoalps.cli import label as _label  # noqa: F401

    for name in ("train", "models", "evaluate", "classes", "export"):
        try:
            __import__(f"geoalps.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"geoalps.cli.{name}":
                raise


_register()
