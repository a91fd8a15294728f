"""Official SAM checkpoints: download into a cache folder, verify, resume, find again.

Checkpoints land in ``$GEOALPS_CACHE/sam`` (default ``~/.cache/geoalps/sam``, or
``$XDG_CACHE_HOME/geoalps/sam``). A download streams into ``<name>.part`` with a tqdm progress
bar, resumes an interrupted ``.part`` with an HTTP Range request, checks the SHA-256 and only
then renames the file into place (atomic), so a checkpoint in the cache is always complete and
verified. Cost: network time plus one read of the file for the checksum (about 2 s for vit_b,
15 s for vit_h). No torch import.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from geoalps.errors import DownloadError, ModelError
from geoalps.options import CHECKPOINT_ENV, explicit_checkpoint


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One released SAM checkpoint: file name, URL and SHA-256 of the whole file."""

    filename: str
    url: str
    sha256: str


_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
# SHA-256 of the released files. Meta publishes none (the suffix in each file name is a short
# hash prefix); these are the sums that many independent downstream projects pin.
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    "vit_b": OfficialCheckpoint(
        "sam_vit_b_01ec64.pth",
        _BASE + "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "vit_l": OfficialCheckpoint(
        "sam_vit_l_0b3195.pth",
        _BASE + "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_h": OfficialCheckpoint(
        "sam_vit_h_4b8939.pth",
        _BASE + "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
}

#: ``find_cached_checkpoint("auto")`` prefers the best model the user has downloaded.
AUTO_PREFERENCE = ("vit_h", "vit_l", "vit_b")

CHUNK_BYTES = 1 << 20


def cache_dir() -> Path:
    """``$GEOALPS_CACHE/sam``, else ``$XDG_CACHE_HOME/geoalps/sam``, else ``~/.cache/geoalps/sam``."""
    root = os.environ.get("GEOALPS_CACHE")
    if root:
        return Path(root).expanduser() / "sam"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "geoalps" / "sam"


def _official(model_type: str) -> OfficialCheckpoint:
    try:
        return OFFICIAL_CHECKPOINTS[model_type]
    except KeyError:
        known = ", ".join(OFFICIAL_CHECKPOINTS)
        raise ModelError(f"{model_type}: not an official SAM checkpoint (expected {known})")


def find_cached_checkpoint(model_type: str = "auto", directory: str | Path | None = None) -> Path | None:
    """The cached official checkpoint for ``model_type`` (or the best one for ``auto``), or None.

    Only complete files count (downloads in progress are ``.part`` files). The checksum is not
    re-read here; it was checked before the file got its name.
    """
    folder = Path(directory) if directory is not None else cache_dir()
    types = AUTO_PREFERENCE if model_type == "auto" else (model_type,)
    for name in types:
        if name not in OFFICIAL_CHECKPOINTS:
            continue
        path = folder / OFFICIAL_CHECKPOINTS[name].filename
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def find_checkpoint(option: str | os.PathLike | None = None, model_type: str = "auto") -> str | None:
    """The SAM checkpoint a run uses: ``--checkpoint``, ``GEOALPS_SAM_CHECKPOINT``, or one
    downloaded earlier with ``geoalps models download`` (any size for ``auto``), in that order.
    The one checkpoint look-up of geoalps: ``--engine auto`` and the sam engine both ask here."""
    explicit, _ = explicit_checkpoint(option)
    if explicit:
        return explicit
    found = find_cached_checkpoint(model_type or "auto")
    return str(found) if found else None


def require_checkpoint(option: str | os.PathLike | None = None, model_type: str = "auto") -> Path:
    """:func:`find_checkpoint`, or a :class:`ModelError` saying how to get one."""
    found = find_checkpoint(option, model_type)
    if not found:
        raise ModelError(
            "--engine sam needs a SAM checkpoint: pass --checkpoint PATH, set "
            f"{CHECKPOINT_ENV}, or run `geoalps models download vit_b`"
        )
    if not Path(found).is_file():
        raise ModelError(f"{found}: SAM checkpoint not found")
    return Path(found)


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_checkpoint(
    model_type: str,
    directory: str | Path | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
) -> Path:
    """Download an official SAM checkpoint into ``directory`` (default: the cache) and verify it.

    Args:
        model_type: ``vit_b`` (375 MB), ``vit_l`` (1.2 GB) or ``vit_h`` (2.4 GB).
        directory: target folder, created if needed.
        url: a mirror to fetch from instead of the official URL (the checksum still applies).
        sha256: expected checksum (default: the official one for ``model_type``).
        progress: show a tqdm progress bar on stderr.
        timeout_s: socket timeout for connecting and for each read.

    Returns:
        The path of the verified checkpoint. A file already in place with the right checksum
        is not downloaded again.

    Raises:
        GeoAlpsError: network failure (the ``.part`` file is kept; running again resumes it),
            or a checksum mismatch (nothing is left behind: neither the file nor a ``.part``).
    """
    official = _official(model_type)
    folder = Path(directory) if directory is not None else cache_dir()
    return download_official(official, folder, url=url, sha256=sha256, progress=progress,
                             timeout_s=timeout_s)


def download_official(
    official: OfficialCheckpoint,
    folder: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
    verify=None,
) -> Path:
    """Download ``official`` into ``folder`` (resumable ``.part``, atomic rename), checked by
    its SHA-256 or, for releases without a published one (``official.sha256`` empty), by
    ``verify(part_path)``, which raises :class:`DownloadError` for a file that is not the
    release. Shared by the sam and sam2 engines; see :func:`download_checkpoint`."""
    url = url or official.url
    expected = (sha256 or official.sha256 or "").lower()
    if not expected and verify is None:
        raise DownloadError(f"{url}: no checksum and no check for {official.filename}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / official.filename
    part = folder / (official.filename + ".part")

    def is_release(path: Path) -> bool:
        if expected:
            return sha256_of(path) == expected
        try:
            verify(path)
        except DownloadError:
            return False
        return True

    if target.is_file():
        if is_release(target):
            return target
        target.replace(part)  # a damaged file: start over below (resuming would keep the damage)
        part.unlink()

    _fetch(url, part, progress=progress, timeout_s=timeout_s, label=official.filename)
    if expected:
        got = sha256_of(part)
        if got != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url}: checksum mismatch (sha256 {got[:12]}..., expected {expected[:12]}...); "
                "the download was discarded"
            )
    else:
        try:
            verify(part)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, target)
    return target


def _fetch(url: str, part: Path, *, progress: bool, timeout_s: float, label: str) -> None:
    """Stream ``url`` into ``part``, continuing from its current size with an HTTP Range."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "geoalps"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the .part is complete (or junk)
            return
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason})") from None

    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range: start from scratch
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        written = offset
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
        ) as bar:
            try:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"{url}: download interrupted at {written} bytes ({exc}); "
                    "run the command again to resume"
                ) from None
    if total is not None and written < total:
        raise DownloadError(
            f"{url}: download interrupted at {written} of {total} bytes; "
            "run the command again to resume"
        )
