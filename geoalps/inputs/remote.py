"""Scenes that are not local files: URLs and GDAL virtual file systems.

Three jobs, kept together because they must agree on what a location is:

- :func:`gdal_path`: ``https://``, ``s3://``, ``gs://``, ``az://`` -> the GDAL virtual file system
  path (``/vsicurl/``, ``/vsis3/``, ...) that reads only the byte ranges a window needs.
- :func:`redact`: the text we may print or write about a location: user info and query strings
  (signed URLs carry their credentials there) are removed from every URL in a message (any
  scheme: ``tcp://user:pass@host`` of a dask scheduler too), and ``user:pass@host`` without one.
- :func:`gdal_env`: the GDAL settings under which scenes are opened and read (retries of
  transient network errors); entered where a scene is opened or read, so dask workers get them
  too. Credentials are never passed here: GDAL reads AWS_*, GS_*, AZURE_* itself.
  :func:`gdal_config` reads one of those settings as GDAL would see it, for the few requests
  geoalps makes itself (:mod:`geoalps.inputs.http`).
"""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

#: URL schemes read through a GDAL virtual file system, and which one.
SCHEME_TO_VSI = {
    "http": "/vsicurl/", "https": "/vsicurl/", "ftp": "/vsicurl/",
    "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/", "azure": "/vsiaz/", "abfs": "/vsiadls/",
}
#: GDAL settings scenes are read with (:func:`gdal_env`), most of them for remote reads; a value
#: already in the environment wins (the user's choice).
REMOTE_DEFAULTS = {
    "GDAL_HTTP_MAX_RETRY": "5",  # 429, 5xx and dropped connections are retried ...
    "GDAL_HTTP_RETRY_DELAY": "1",  # ... after 1 s, doubling
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open (one request, not dozens)
    # ranges fetched one by one go through the curl block cache: overlapping tiles then fetch a
    # block once (parallel multi-range reads bypass it, and tiles re-fetched ~3.5x the bytes)
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
    # GDAL's block cache (bytes) is 5 % of the machine's memory a process by default, and a process
    # keeps what it freed: the statistics read of a 10240 x 10240 px scene left 485 MB in the
    # driver for the whole run, and in every worker forked from it. Reads go block row by block
    # row (scene._decimated_read) or a tile at a time, so a small cache costs no time (measured:
    # benchmarks/scaling README, 2026-12-07 evening)
    "GDAL_CACHEMAX": 64 * 2**20,
}

#: A URL: scheme, user info, the rest, the query (not its last character when that is ``:``, ``,``,
#: ``.``, ``;``, ``)`` or ``]``: the message's punctuation, so redacting twice changes nothing).
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s/?#'\"]*@)?([^\s?#'\"]*)(\?(?:[^\s#'\"]*[^\s#'\":,.;)\]])?)?",
                  re.IGNORECASE)
#: ``user:password@host`` outside a URL (an address given without its scheme).
_BARE_USERINFO = re.compile(r"(?<![\w/:@.%*-])[^\s/?#'\"@:]+:[^\s/?#'\"@]*@(?=[\w\[])")


def is_url(location: str) -> bool:
    """``scheme://...`` (any scheme GDAL reads through a virtual file system)."""
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    return scheme in SCHEME_TO_VSI


def is_http(location: str | os.PathLike) -> bool:
    """An ``http://`` or ``https://`` URL (what geoalps can ask itself, :mod:`geoalps.inputs.http`)."""
    return str(location).lower().startswith(("http://", "https://"))


def is_remote(location: str | os.PathLike) -> bool:
    """A URL or a GDAL virtual file system path (``/vsicurl/``, ``/vsizip/``, ...): not
    something ``os.path`` can check."""
    text = str(location)
    return is_url(text) or text.startswith("/vsi")


def is_virtual(location: str | os.PathLike) -> bool:
    """Not on the local file system: a URL, a GDAL virtual path, or a VRT's XML (a STAC item)."""
    text = str(location)
    return is_remote(text) or text.lstrip().startswith("<")


def gdal_path(location: str | os.PathLike) -> str:
    """The path GDAL opens: URLs become virtual file system paths, the rest is unchanged."""
    text = str(location)
    if not is_url(text):
        return text
    scheme, rest = text.split("://", 1)
    vsi = SCHEME_TO_VSI[scheme.lower()]
    return f"{vsi}{text}" if vsi == "/vsicurl/" else f"{vsi}{rest}"


def redact(text: str) -> str:
    """``text`` with the user info (``user:pass@``) and the query string (``?X-Amz-Signature=..``)
    of every URL in it replaced by ``***``: safe for messages, logs and output files."""
    def clean(match: re.Match) -> str:
        scheme, userinfo, rest, query = match.groups()
        return f"{scheme}://{'***@' if userinfo else ''}{rest}{'?***' if query else ''}"

    return _BARE_USERINFO.sub("***@", _URL.sub(clean, str(text)))


def display_name(location: str | os.PathLike) -> str:
    """The location as users see it: the URL without ``/vsicurl/`` (and redacted)."""
    text = str(location)
    if text.startswith("/vsicurl/") and "://" in text:
        text = text[len("/vsicurl/"):]
    return redact(text)


def base_name(location: str | os.PathLike) -> str:
    """The file name of a location (the last path part, without query), for the ``scene``
    column and output file names."""
    text = str(location)
    if "://" in text:
        text = urlsplit(text.split("/vsicurl/", 1)[-1]).path
    return text.rstrip("/").rsplit("/", 1)[-1] or text


def same_location_key(location: str | os.PathLike) -> str:
    """A key equal for two spellings of the same scene: local paths resolved (symlinks, ``..``),
    URLs with lower-case scheme and host, default port, ``/vsicurl/`` and query string dropped
    (two signatures of one object are one scene)."""
    text = str(location)
    if text.startswith("/vsicurl/") and "://" in text:
        text = text[len("/vsicurl/"):]
    if is_url(text):
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        default = {"http": 80, "https": 443}.get(parts.scheme.lower())
        netloc = host if parts.port in (None, default) else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))
    if text.startswith("/vsi"):
        return text
    return os.path.realpath(text)


def gdal_env():
    """``rasterio.Env`` with :data:`REMOTE_DEFAULTS` (minus those set in the environment)."""
    import rasterio

    return rasterio.Env(**{k: v for k, v in REMOTE_DEFAULTS.items() if k not in os.environ})


def gdal_config(name: str) -> str | None:
    """The GDAL setting ``name`` as scenes are read with it: an active ``rasterio.Env``'s value,
    else the environment's, else :data:`REMOTE_DEFAULTS`'s (None when unset)."""
    import rasterio.env

    if rasterio.env.hasenv():
        value = rasterio.env.getenv().get(name)
        if value is not None:
            return str(value)
    value = os.environ.get(name, REMOTE_DEFAULTS.get(name))
    return None if value is None else str(value)
