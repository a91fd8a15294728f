"""The HTTP requests geoalps makes itself, with the user's GDAL HTTP settings and GDAL's retries.

GDAL makes every raster read; geoalps asks a few things itself: a file's version for ``--resume``
(:mod:`geoalps.inputs.remote_version`), a STAC item's JSON (:mod:`geoalps.inputs.stac`) and an
``--aoi`` vector file (:mod:`geoalps.inputs.aoi`; pyogrio's wheel has its own GDAL, which has
none of the settings rasterio's has). They go through this one door so that a file GDAL reads
is not refused here: the same headers (``GDAL_HTTP_HEADERS``, ``GDAL_HTTP_HEADER_FILE``,
``GDAL_HTTP_USERPWD``, ``GDAL_HTTP_AUTH=BEARER`` with ``GDAL_HTTP_BEARER``, ``GDAL_HTTP_COOKIE``,
``GDAL_HTTP_USERAGENT``), the same timeout (``GDAL_HTTP_TIMEOUT``), CA bundle and
``GDAL_HTTP_UNSAFESSL``, the same retries of 429/5xx, dropped connections and bodies cut short
(``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``, doubling), and ``Authorization`` not carried
to another host on a redirect (GDAL's default). User info in a URL (``https://user:pass@host/..``)
is taken out of the URL and sent as basic authentication to that host, as curl (so GDAL) does
with it; it wins over ``GDAL_HTTP_USERPWD`` for that request. Settings are read as scenes are read with them
(:func:`geoalps.inputs.remote.gdal_config`: an active ``rasterio.Env``, the environment, then
geoalps's defaults). Not reproduced: ``.netrc``, NTLM/Negotiate, client certificates,
``GDAL_HTTP_PROXY`` (the usual ``https_proxy`` variables do apply).

Cost: the request, plus up to ``GDAL_HTTP_MAX_RETRY`` waits of ``GDAL_HTTP_RETRY_DELAY * 2**n``
seconds when the server fails. :func:`fetch_bytes` holds the whole body in memory (capped by
``max_bytes``): for small files only.
"""
from __future__ import annotations

import base64
import http.client
import time
import urllib.error
import urllib.request
from typing import Any, Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from geoalps.errors import InputError
from geoalps.inputs.remote import gdal_config, redact

#: The most :func:`fetch_bytes` reads unless told otherwise.
MAX_FETCH_BYTES = 256 * 2**20
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_DEFAULT_TIMEOUT_S = 30.0


class HttpError(Exception):
    """A request that failed for good (after the retries): ``status`` and ``headers`` of the
    server's answer, or ``status`` None for a network failure; ``reason`` in one line
    (``HTTP 503``, ``[Errno 111] Connection refused``)."""

    def __init__(self, status: int | None, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def request(url: str, method: str = "GET", extra_headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """(status, headers) of the answer to ``method url`` (the body is not read), sent with the
    user's GDAL headers plus ``extra_headers``.

    Raises:
        HttpError: an HTTP error status (a transient one after the retries) or a network failure.
    """
    return _retrying(url, method, extra_headers, lambda answer: (answer.status, dict(answer.headers.items())))


def fetch_bytes(url: str, shown: str, max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """The body of ``GET url``, whole (a body cut short is fetched again). ``shown`` names the
    URL in messages (redacted: :func:`geoalps.inputs.remote.display_name`).

    Raises:
        InputError: one line naming ``shown``: not found (404), access forbidden (401/403),
            larger than ``max_bytes``, or cannot be fetched (another status after the retries, a
            network failure).
    """
    def body(answer) -> bytes:
        length = (answer.headers.get("Content-Length") or "").strip()
        if length.isdigit() and int(length) > max_bytes:
            raise _TooLarge
        # read() checks the length (a cut is IncompleteRead, retried); read(n) would not
        data = answer.read() if length.isdigit() else answer.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _TooLarge
        return data

    try:
        return _retrying(url, "GET", None, body)
    except _TooLarge:
        raise InputError(f"{shown}: larger than {_size(max_bytes)}, too large to fetch (use a local copy)") from None
    except HttpError as exc:
        if exc.status in (401, 403):
            raise InputError(f"{shown}: access forbidden (HTTP {exc.status})") from None
        if exc.status == 404:
            raise InputError(f"{shown}: not found (HTTP 404)") from None
        raise InputError(f"{shown}: cannot be fetched ({exc.reason})") from None


class _TooLarge(Exception):
    pass


def _retrying(url: str, method: str, extra_headers: dict[str, str] | None, consume: Callable[[Any], Any]) -> Any:
    """``consume(answer)`` of the first answer that is not a failure GDAL retries; the last
    failure as :class:`HttpError` when every try failed."""
    url, basic = _without_userinfo(url)
    headers = {**_request_headers(), **({"Authorization": basic} if basic else {}), **(extra_headers or {})}
    opener = urllib.request.build_opener(_SameHostAuthRedirect(), urllib.request.HTTPSHandler(context=_ssl_context()))
    tries = max(0, int(gdal_config("GDAL_HTTP_MAX_RETRY") or 0)) + 1
    delay_s = float(gdal_config("GDAL_HTTP_RETRY_DELAY") or 1)
    timeout_s = float(gdal_config("GDAL_HTTP_TIMEOUT") or _DEFAULT_TIMEOUT_S)
    for attempt in range(tries):
        try:
            with opener.open(urllib.request.Request(url, headers=headers, method=method), timeout=timeout_s) as answer:
                return consume(answer)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code not in _RETRY_STATUS or attempt + 1 == tries:
                raise HttpError(exc.code, f"HTTP {exc.code}", dict((exc.headers or {}).items())) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if attempt + 1 == tries:
                raise HttpError(None, _reason(exc)) from None
        time.sleep(delay_s * 2 ** attempt)
    raise AssertionError("unreachable")  # the last try returns or raises


def _without_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without its user info, and the basic ``Authorization`` it stood for (None when
    the URL has none). urllib would take ``user:pass@host`` for a host name (a DNS failure after
    every retry)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), f"Basic {token}"


def _reason(exc: BaseException) -> str:
    """A network failure in one line, URLs in it redacted."""
    reason = getattr(exc, "reason", None) or exc
    return " ".join(redact(str(reason)).split()) or type(exc).__name__


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MB" if n_bytes >= 2**20 else f"{n_bytes} bytes"


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
