"""Pack downloaded wheels into one small archive for the device tool (64 MiB per call, tree included).

    python benchmarks/gpu/pack_wheels.py RAW_DIR OUT.tar.xz

The geo wheels are mostly shared libraries (rasterio and pyogrio each bundle a GDAL) that ship
with their debug sections and are deflate-compressed: about 85 MB for the set fetch_wheels.sh
downloads. Here each wheel is rewritten with

- ``strip --strip-debug`` on every ELF member that still has debug sections (symbols kept; the
  loader, RPATHs and Python's imports are untouched), with the RECORD hashes and sizes updated,
- members stored uncompressed,

and all wheels go into one tar compressed with xz -9, which sees across files: about 50 MB for
the same set. On the device ``tar -xJf`` gives back valid wheels that pip installs as usual.
Costs: a few minutes of xz on 2 cores (about 210 MB to compress), about 5 s to unpack.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def _is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _strip_debug(data: bytes, scratch: Path) -> bytes:
    """The ELF ``data`` without debug sections, or ``data`` itself when strip is missing or fails."""
    if shutil.which("strip") is None:
        return data
    source, target = scratch / "in.so", scratch / "out.so"
    source.write_bytes(data)
    proc = subprocess.run(["strip", "--strip-debug", "-o", str(target), str(source)], capture_output=True)
    if proc.returncode != 0 or not target.exists():
        return data
    stripped = target.read_bytes()
    return stripped if 0 < len(stripped) < len(data) else data


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def repack_wheel(wheel: Path, out_dir: Path, scratch: Path) -> tuple[int, int]:
    """Write ``wheel`` to ``out_dir`` stripped and stored; returns (bytes before, bytes after)."""
    members, changed = [], {}
    with zipfile.ZipFile(wheel) as src:
        for info in src.infolist():
            data = src.read(info)
            if not info.is_dir() and _is_elf(data):
                smaller = _strip_debug(data, scratch)
                if smaller is not data:
                    changed[info.filename] = smaller
                    data = smaller
            members.append((info, data))
    record_name = next((i.filename for i, _ in members if i.filename.endswith(".dist-info/RECORD")), None)
    if record_name is not None and changed:
        rows = []
        record = next(d for i, d in members if i.filename == record_name).decode()
        for row in csv.reader(io.StringIO(record)):
            if row and row[0] in changed:
                row = [row[0], _record_hash(changed[row[0]]), str(len(changed[row[0]]))]
            rows.append(row)
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        members = [(i, text.getvalue().encode() if i.filename == record_name else d) for i, d in members]
    target = out_dir / wheel.name
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as dst:
        for info, data in members:
            clone = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            clone.external_attr = info.external_attr
            clone.compress_type = zipfile.ZIP_STORED
            dst.writestr(clone, data)
    return wheel.stat().st_size, target.stat().st_size


def compress(stage: Path, archive: Path) -> None:
    """tar of ``stage``'s wheels, xz -9 (multi-threaded xz when there, else Python's lzma)."""
    names = sorted(p.name for p in stage.glob("*.whl"))
    tmp = archive.with_name(archive.name + ".part")
    if shutil.which("xz") and shutil.which("tar"):
        with open(tmp, "wb") as out:
            tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(stage), *names], stdout=subprocess.PIPE)
            xz = subprocess.run(["xz", "-9", "-T0", "-c"], stdin=tar.stdout, stdout=out)
            tar.stdout.close()
            if tar.wait() != 0 or xz.returncode != 0:
                raise SystemExit("tar | xz failed")
    else:
        with tarfile.open(tmp, "w:xz", preset=9) as tar:
            for name in names:
                tar.add(stage / name, arcname=name)
    tmp.replace(archive)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    raw, archive = Path(sys.argv[1]), Path(sys.argv[2])
    wheels = sorted(raw.glob("*.whl"))
    if not wheels:
        print(f"no wheels in {raw}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as tmp:
        stage, scratch = Path(tmp) / "stage", Path(tmp) / "scratch"
        stage.mkdir()
        scratch.mkdir()
        before = after = 0
        for wheel in wheels:
            b, a = repack_wheel(wheel, stage, scratch)
            before, after = before + b, after + a
        print(f"repacked {len(wheels)} wheels: {before / 2**20:.1f} MiB as downloaded, "
              f"{after / 2**20:.1f} MiB stripped and uncompressed; compressing (xz -9) ...", flush=True)
        compress(stage, archive)
    print(f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
