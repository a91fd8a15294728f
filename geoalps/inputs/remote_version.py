"""Which version of a remote file a run reads: the HTTP validators of an http(s) scene (ETag,
Last-Modified, size), so that ``--resume`` can tell a file replaced at the same URL (a
re-processed COG) from the one the interrupted run read.

Cost: one HEAD request per http(s) file when a run starts (a round trip, no body). Where HEAD is
refused (presigned S3 URLs are signed for GET only and answer 403; some servers answer 405) a
one-byte ``Range: bytes=0-0`` GET is made instead and the size is the ``Content-Range`` total.

The request is made as GDAL makes its own, through :mod:`geoalps.inputs.http` (the user's GDAL
HTTP headers and credentials, timeout, CA bundle, retries of 429/5xx and dropped connections, no
``Authorization`` carried to another host on a redirect). What is not reproduced there
(``.netrc``, NTLM/Negotiate, client certificates) just leaves the file without a recorded version.

Nothing is recorded for ``s3://``, ``gs://``, ``az://`` (GDAL signs those requests itself), for a
server that sends none of the three, or when the request fails: never an error, the resume check
is then the grid check it always was.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from typing import Any

from geoalps.inputs.http import HttpError, request
from geoalps.inputs.remote import is_http

#: What is compared, in the words of the resume error ("ETag changed").
_SHOWN = {"etag": "ETag", "last_modified": "Last-Modified", "size_bytes": "size"}
_CONTENT_RANGE_TOTAL = re.compile(r"bytes\s+(?:\d+-\d+|\*)/(\d+)")


def http_urls(path: str) -> list[str]:
    """The http(s) URLs GDAL reads for a scene path: the URL itself (also behind ``/vsicurl/``),
    or each http(s) source of a VRT's XML (a STAC item), in order, once each."""
    text = str(path)
    if text.lstrip().startswith("<"):
        try:
            candidates = [e.text or "" for e in ElementTree.fromstring(text).iter("SourceFilename")]
        except ElementTree.ParseError:
            return []
    else:
        candidates = [text]
    urls: list[str] = []
    for candidate in candidates:
        url = candidate.strip()
        if url.startswith("/vsicurl/"):
            url = url[len("/vsicurl/"):]
        if is_http(url) and url not in urls:
            urls.append(url)
    return urls


def remote_version(url: str) -> dict[str, Any] | None:
    """``{"etag", "last_modified", "size_bytes"}`` of ``url`` as the server states them (only
    those it sends), or None when it sends none or cannot be asked. Never raises."""
    try:
        headers = _ask(url, "HEAD")
        if headers is None:  # HEAD refused (4xx/5xx): a GET of the first byte
            headers = _ask(url, "GET")
    except Exception:  # a version we cannot have must not stop a run
        return None
    if headers is None:
        return None
    version: dict[str, Any] = {}
    if headers.get("ETag"):
        version["etag"] = headers["ETag"].strip()
    if headers.get("Last-Modified"):
        version["last_modified"] = headers["Last-Modified"].strip()
    total = _CONTENT_RANGE_TOTAL.match(headers.get("Content-Range") or "")
    if total:
        version["size_bytes"] = int(total.group(1))
    elif (headers.get("Content-Length") or "").strip().isdigit() and headers.get("_status") == 200:
        version["size_bytes"] = int(headers["Content-Length"])
    return version or None


def version_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str] | None:
    """What differs between two versions of one file (``["ETag", "size"]``; empty: the same
    file as far as can be told), or None when the content cannot be compared: ``old`` has an
    ETag or Last-Modified and ``new`` lacks it, or they share nothing at all.

    The ETag decides when both have one (the server's word on the content: an S3 object uploaded
    again with the same bytes keeps its ETag, not its Last-Modified); Last-Modified when one
    lacks an ETag. The size is compared whenever both have it; a file recorded with its size only
    (a server that sends nothing else) is the same file when its size is.
    """
    changed = []
    content = next((k for k in ("etag", "last_modified") if old.get(k) and new.get(k)), None)
    if content is not None and old[content] != new[content]:
        changed.append(_SHOWN[content])
    sizes = old.get("size_bytes") is not None and new.get("size_bytes") is not None
    if sizes and old["size_bytes"] != new["size_bytes"]:
        changed.append(_SHOWN["size_bytes"])
    if changed:
        return changed
    if content is None and (old.get("etag") or old.get("last_modified") or not sizes):
        return None
    return []


def _ask(url: str, method: str) -> dict[str, Any] | None:
    """The answer's headers (plus ``_status``) for a HEAD, or a GET of byte 0 whose body is not
    read; None when the server refuses it. Transient failures are retried as GDAL retries them
    (:mod:`geoalps.inputs.http`); a network failure after the retries is raised."""
    try:
        status, headers = request(url, method, {"Range": "bytes=0-0"} if method == "GET" else None)
    except HttpError as exc:
        if exc.status == 416:  # bytes=0-0 of an empty file: the total is in Content-Range
            return {**exc.headers, "_status": 416}
        if exc.status is None:
            raise
        return None
    return {**headers, "_status": status}
