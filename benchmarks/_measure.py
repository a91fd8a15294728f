"""Shared helpers for the benchmark scripts (``benchmarks/<name>/run.py`` and friends), which put
this folder on ``sys.path`` and import from here:

- :func:`run_measured`: run a command, sample the peak memory of its whole process tree;
- :func:`commit` and :func:`append_rows`: every result row records the commit it was measured on
  (``results.jsonl`` beside the script, one JSON object a line);
- :func:`mosaic_vrt`: big test scenes as VRT mosaics of the sample scene (no pixels copied);
- :func:`mirrored_mosaic`: big scenes that mirror any scene, so a cover it has runs on unbroken.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
#: The shipped scene the mosaics repeat.
SOURCE = REPO / "sample_data/scene_rgbn_u16.tif"


def run_measured(cmd: list[str], env=None, interval: float = 0.1) -> dict:
    """Run ``cmd``; return wall seconds, exit code, stderr tail, the peak of the summed RSS of the
    process and all its descendants (dask workers included), sampled every ``interval`` s, and
    each process's own peak (``peak_rss_mb_by_process``: the command's own process as
    ``driver``, then its descendants' peaks, largest first), which says where a peak comes from."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    own_peaks: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    own_peaks[p.pid] = max(own_peaks.get(p.pid, 0), rss)
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, stderr = proc.communicate()
    stop.set()
    thread.join()
    children = sorted((rss for pid, rss in own_peaks.items() if pid != proc.pid), reverse=True)
    by_process = {"driver": round(own_peaks.get(proc.pid, 0) / 2**20, 1),
                  "descendants": [round(rss / 2**20, 1) for rss in children]}
    return {"seconds": time.perf_counter() - started, "returncode": proc.returncode,
            "peak_rss_mb": peak / 2**20, "peak_rss_mb_by_process": by_process,
            "stderr": stderr.strip().splitlines()[-3:]}


def commit(repo: Path = REPO) -> str:
    """The checkout's short commit, with ``+dirty`` when ``geoalps/`` or ``benchmarks/`` has
    uncommitted changes (the figures are then not those of the commit); "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "geoalps", "benchmarks") else "")


def append_rows(path: str | os.PathLike, rows: list[dict], **common) -> None:
    """Append ``rows`` to a ``results.jsonl``, each led by the UTC date, the commit, the load
    average (the machine is shared: read timings against it) and ``common`` (a tag, settings)."""
    stamp = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
             "commit": commit(), "load": [round(x, 1) for x in os.getloadavg()], **common}
    with open(path, "a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({**stamp, **row}) + "\n")


def mosaic_vrt(size_px: int, folder: Path) -> Path:
    """A size_px x size_px VRT that repeats the sample scene on a grid (same CRS, shifted origin)."""
    import rasterio

    with rasterio.open(SOURCE) as src:
        width, height, count, dtype, nodata = src.width, src.height, src.count, src.dtypes[0], src.nodata
        transform, crs_wkt = src.transform, src.crs.to_wkt()
    gdal_type = {"uint16": "UInt16", "uint8": "Byte"}[dtype]
    bands = []
    for band in range(1, count + 1):
        sources = []
        for row in range(0, size_px, height):
            for col in range(0, size_px, width):
                w, h = min(width, size_px - col), min(height, size_px - row)
                sources.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{SOURCE}</SourceFilename>'
                    f"<SourceBand>{band}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                    f'<DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/></SimpleSource>'
                )
        bands.append(f'<VRTRasterBand dataType="{gdal_type}" band="{band}"><NoDataValue>{nodata}</NoDataValue>'
                     + "".join(sources) + "</VRTRasterBand>")
    geotransform = ", ".join(str(v) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    xml = (f'<VRTDataset rasterXSize="{size_px}" rasterYSize="{size_px}"><SRS>{crs_wkt}</SRS>'
           f"<GeoTransform>{geotransform}</GeoTransform>" + "".join(bands) + "</VRTDataset>")
    path = folder / f"mosaic_{size_px}.vrt"
    path.write_text(xml)
    return path


def mirrored_mosaic(source: Path, size_px: int, folder: Path, strip_px: int = 1024) -> Path:
    """A size_px x size_px GeoTIFF of ``source`` mirrored at each of its edges, again and again
    (its CRS and pixel size, same origin). Unlike :func:`mosaic_vrt`'s repeats, a cover that reaches
    the source's edges (bare soil, a lake) meets itself at every copy's edge, so it runs on over the
    whole scene as one region. Written in strips: memory is the source plus one strip."""
    import numpy as np
    import rasterio

    with rasterio.open(source) as src:
        pixels = src.read()
        profile = src.profile
    _, height, width = pixels.shape

    def mirrored(n: int, period: int) -> np.ndarray:
        phase = np.arange(n) % (2 * period)
        return np.where(phase < period, phase, 2 * period - 1 - phase)

    rows, cols = mirrored(size_px, height), mirrored(size_px, width)
    path = folder / f"{Path(source).stem}_mirrored_{size_px}.tif"
    profile.update(driver="GTiff", width=size_px, height=size_px, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    with rasterio.open(path, "w", **profile) as out:
        for row0 in range(0, size_px, strip_px):
            strip = rows[row0:row0 + strip_px]
            out.write(pixels[:, strip][:, :, cols], window=rasterio.windows.Window(0, row0, size_px, len(strip)))
    return path
