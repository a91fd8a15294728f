"""Official SAM 2.1 checkpoints: download into the cache, verify, resume, find again.

Checkpoints land in ``$GEOALPS_CACHE/sam2`` (beside the sam engine's ``sam`` folder). Meta
publishes no checksums for SAM 2 (facebookresearch/sam2's ``checkpoints/download_ckpts.sh``
fetches plain URLs), and geoalps pins none it cannot justify; a download is instead verified by
reading its tensors: it must be a SAM 2.1 state dict of the size asked for (config inferred from
the shapes, as ``load_sam2`` does). Downloads stream into ``.part``, resume with HTTP Range and
are renamed into place only once verified (:func:`geoalps.engines.sam.checkpoints.download_official`).
Cost: network time plus one ``torch.load`` of the file (memory mapped). Only the check imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path

from geoalps.engines.sam.checkpoints import OfficialCheckpoint, download_official
from geoalps.engines.sam.checkpoints import cache_dir as sam_cache_dir
from geoalps.errors import DownloadError, ModelError

_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
#: ``geoalps models download`` names: the SAM 2.1 releases (Meta's 2024-09-28 upload).
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    f"sam2.1_{size}": OfficialCheckpoint(f"sam2.1_{size}.pt", f"{_BASE}sam2.1_{size}.pt", "")
    for size in ("hiera_tiny", "hiera_small", "hiera_base_plus", "hiera_large")
}
#: ``--engine auto`` / ``sam2`` without --checkpoint prefer the best cached model.
AUTO_PREFERENCE = ("sam2.1_hiera_large", "sam2.1_hiera_base_plus", "sam2.1_hiera_small",
                   "sam2.1_hiera_tiny")


def cache_dir() -> Path:
    """``$GEOALPS_CACHE/sam2`` (the sibling of the sam engine's cache folder)."""
    return sam_cache_dir().parent / "sam2"


def find_cached_checkpoint(model_type: str = "auto", directory: str | Path | None = None) -> Path | None:
    """The cached release for ``model_type`` (``auto``, ``hiera_tiny`` ..., or a full release
    name ``sam2.1_hiera_tiny``), or None. Only complete (verified, renamed) files count."""
    folder = Path(directory) if directory is not None else cache_dir()
    if model_type in ("auto", None, ""):
        names = AUTO_PREFERENCE
    else:
        names = tuple(n for n in OFFICIAL_CHECKPOINTS if model_type in (n, n.split("_", 1)[1]))
    for name in names:
        path = folder / OFFICIAL_CHECKPOINTS[name].filename
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def require_sam2_checkpoint(option: str | os.PathLike | None = None, model_type: str = "auto") -> Path:
    """``--checkpoint``/``GEOALPS_SAM_CHECKPOINT``, else a cached SAM 2.1 release, else a ModelError."""
    from geoalps.options import explicit_checkpoint

    explicit, _ = explicit_checkpoint(option)
    found = explicit or find_cached_checkpoint("auto" if model_type.startswith("vit") else model_type)
    if not found:
        raise ModelError(
            "--engine sam2 needs a SAM 2 checkpoint: pass --checkpoint PATH (e.g. "
            "sam2.1_hiera_tiny.pt), set GEOALPS_SAM_CHECKPOINT, or run "
            "`geoalps models download sam2.1_hiera_tiny`"
        )
    if not Path(found).is_file():
        raise ModelError(f"{found}: SAM 2 checkpoint not found")
    return Path(found)


def download_sam2_checkpoint(
    name: str,
    directory: str | Path | None = None,
    *,
    url: str | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
) -> Path:
    """Download the SAM 2.1 release ``name`` (``sam2.1_hiera_tiny`` 156 MB, ``small`` 184 MB,
    ``base_plus`` 324 MB, ``large`` 898 MB) and verify it by its tensors (no published checksums).

    Raises:
        GeoAlpsError: unknown name, network failure (the ``.part`` is kept and resumed next
            time), or a file that is not that release (discarded).
    """
    try:
        official = OFFICIAL_CHECKPOINTS[name]
    except KeyError:
        raise ModelError(f"{name}: not an official SAM 2.1 checkpoint "
                         f"(expected {', '.join(OFFICIAL_CHECKPOINTS)})") from None
    folder = Path(directory) if directory is not None else cache_dir()
    return download_official(official, folder, url=url, progress=progress, timeout_s=timeout_s,
                             verify=lambda path: verify_release(path, name, url or official.url))


def verify_release(path: Path, name: str, source: str) -> None:
    """Raise DownloadError unless ``path`` holds the SAM 2 state dict of release ``name``."""
    from geoalps.engines.sam.models import _read_state_dict
    from geoalps.engines.sam2.models import infer_sam2_config

    try:
        state = _read_state_dict(path)
        got = infer_sam2_config(state).short_name
    except (ModelError, ValueError) as exc:
        raise DownloadError(f"{source}: not a SAM 2 checkpoint ({exc}); the download was discarded") from None
    if got != name:
        raise DownloadError(f"{source}: holds {got}, not {name}; the download was discarded")
