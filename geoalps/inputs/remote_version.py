"""Which version of a remote file a run reads: the HTTP validators of an http(s) scene (ETag,
Last-Modified, size), so that ``--resume`` can tell a file replaced at the same URL (a
re-processed COG) from the one the interrupted run read.

Cost: one HEAD request per http(s) file when a run starts (a round trip, no body). Where HEAD is
refused (presigned S3 URLs are signed for GET only and answer 403; some servers answer 405) a
one-byte ``Range: bytes=0-0`` GET is made instead and the size is the ``Content-Range`` total.

The request is made as GDAL makes its own: the same headers (``GDAL_HTTP_HEADERS``,
``GDAL_HTTP_HEADER_FILE``, ``GDAL_HTTP_USERPWD``, ``GDAL_HTTP_AUTH=BEARER`` with
``GDAL_HTTP_BEARER``, ``GDAL_HTTP_COOKIE``, ``GDAL_HTTP_USERAGENT``), the same timeout
(``GDAL_HTTP_TIMEOUT``), CA bundle and ``GDAL_HTTP_UNSAFESSL``, the same retries of 429/5xx and
dropped connections (``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``), and the
``Authorization`` header is not carried to another host on a redirect (GDAL's default). What is
not reproduced (``.netrc``, NTLM/Negotiate, client certificates) just leaves the file without a
recorded version.

Nothing is recorded for ``s3://``, ``gs://``, ``az://`` (GDAL signs those requests itself), for a
server that sends none of the three, or when the request fails: never an error, the resume check
is then the grid check it always was.
"""
from __future__ import annotations

import base64
import http.client
import re
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from typing import Any
from urllib.parse import urlsplit

from geoalps.inputs.remote import gdal_config

#: What is compared, in the words of the resume error ("ETag changed").
_SHOWN = {"etag": "ETag", "last_modified": "Last-Modified", "size_bytes": "size"}
_RETRY_STATUS = {429, 500, 502, 503, 504}
_CONTENT_RANGE_TOTAL = re.compile(r"bytes\s+(?:\d+-\d+|\*)/(\d+)")
_DEFAULT_TIMEOUT_S = 30.0


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
        if url.lower().startswith(("http://", "https://")) and url not in urls:
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
    read; None when the server refuses it. Transient failures are retried as GDAL retries them;
    the last one is raised."""
    headers = _request_headers()
    if method == "GET":
        headers["Range"] = "bytes=0-0"
    opener = urllib.request.build_opener(_SameHostAuthRedirect(), urllib.request.HTTPSHandler(context=_ssl_context()))
    tries = int(gdal_config("GDAL_HTTP_MAX_RETRY") or 0) + 1
    delay_s = float(gdal_config("GDAL_HTTP_RETRY_DELAY") or 1)
    timeout_s = float(gdal_config("GDAL_HTTP_TIMEOUT") or _DEFAULT_TIMEOUT_S)
    for attempt in range(tries):
        try:
            with opener.open(urllib.request.Request(url, headers=headers, method=method), timeout=timeout_s) as answer:
                return {**dict(answer.headers.items()), "_status": answer.status}
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # bytes=0-0 of an empty file: the total is in Content-Range
                return {**dict(exc.headers.items()), "_status": 416}
            if exc.code not in _RETRY_STATUS or attempt + 1 == tries:
                return None
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            if attempt + 1 == tries:
                raise
        time.sleep(delay_s * 2 ** attempt)
    return None


def _request_headers() -> dict[str, str]:
    """The headers GDAL sends from the user's settings (credentials stay in memory only)."""
    import rasterio

    headers = {"User-Agent": gdal_config("GDAL_HTTP_USERAGENT") or f"GDAL/{rasterio.__gdal_version__}"}
    auth = (gdal_config("GDAL_HTTP_AUTH") or "").upper()
    userpwd = gdal_config("GDAL_HTTP_USERPWD")
    if userpwd and auth in ("", "BASIC", "ANY", "ANYSAFE"):
        headers["Authorization"] = "Basic " + base64.b64encode(userpwd.encode()).decode()
    bearer = gdal_config("GDAL_HTTP_BEARER")
    if auth == "BEARER" and bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    cookie = gdal_config("GDAL_HTTP_COOKIE")
    if cookie:
        headers["Cookie"] = cookie
    lines: list[str] = []
    header_file = gdal_config("GDAL_HTTP_HEADER_FILE")
    if header_file and not header_file.startswith("/vsi"):
        try:
            with open(header_file, encoding="utf-8") as f:
                lines += f.read().splitlines()
        except OSError:
            pass
    lines += _split_headers(gdal_config("GDAL_HTTP_HEADERS") or "")
    for line in lines:  # headers given explicitly win over those made from settings, as in curl
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers[name.strip()] = value.strip()
    return headers


def _split_headers(text: str) -> list[str]:
    """``GDAL_HTTP_HEADERS`` as GDAL splits it: on CR LF if there is one, else on commas outside
    double quotes (``"X-A: 1, 2"`` is one header); one header if no colon follows the first comma
    (``Accept: text/plain, application/json``)."""
    if not text:
        return []
    if "\r\n" in text:
        return [line for line in text.split("\r\n") if line]
    comma = text.find(",")
    if comma < 0 or ":" not in text[comma:]:
        return [text]
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _ssl_context():
    import ssl

    cafile = gdal_config("GDAL_CURL_CA_BUNDLE") or gdal_config("CURL_CA_BUNDLE") or gdal_config("SSL_CERT_FILE")
    context = ssl.create_default_context(cafile=cafile or None)
    if (gdal_config("GDAL_HTTP_UNSAFESSL") or "").upper() in ("1", "YES", "ON", "TRUE"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, dropping ``Authorization`` when the host changes (GDAL's default:
    a signed S3 URL redirected to refuses a foreign ``Authorization``)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc.lower() != urlsplit(req.full_url).netloc.lower():
            for store in (new.headers, new.unredirected_hdrs):
                store.pop("Authorization", None)
        return new
