#!/usr/bin/env python3
"""Pixel parity of orchard-pixels with Pillow over every image under a folder.

For each image compares the 224x224x3 bytes orchard-pixels writes (decode + resize) with
    np.asarray(Image.open(f).convert('RGB').resize((224, 224)))
and prints the number of images, how many are identical, the worst max-abs difference and the
first mismatching files. An image both refuse counts as agreeing; one refused by only one side is
a mismatch.

Usage (with the project venv):
    .venv/bin/python tools/pixel_parity.py [FOLDER] [--limit N] [--chunk N] [--pixels BINARY]
FOLDER defaults to /work/shared/data/fruits-360/Test; BINARY to $ORCHARD_BUILD/tools/orchard-pixels
(ORCHARD_BUILD defaults to ./build).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 224
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def default_binary() -> Path:
    build = Path(os.environ.get("ORCHARD_BUILD", "build"))
    for cand in (build / "tools" / "orchard-pixels", build / "orchard-pixels"):
        if cand.exists():
            return cand
    return build / "tools" / "orchard-pixels"


def pillow_pixels(path: Path) -> tuple[np.ndarray | None, str | None]:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((SIDE, SIDE))), None
    except Exception as e:  # noqa: BLE001 - any refusal counts
        return None, f"{type(e).__name__}: {e}"


def run_chunk(binary: Path, paths: list[Path], out_dir: Path) -> dict[int, str]:
    proc = subprocess.run([str(binary), str(out_dir), "-"],
                          input="".join(f"{p}\n" for p in paths), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"pixel_parity: {binary} failed with status {proc.returncode}: "
                 f"{proc.stderr.strip()}")
    errors = {}
    for line in proc.stdout.splitlines():
        if line.startswith("ERROR "):
            _, idx, msg = line.split(" ", 2)
            errors[int(idx)] = msg
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="/work/shared/data/fruits-360/Test")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (sorted)")
    ap.add_argument("--chunk", type=int, default=1000, help="images per orchard-pixels run")
    ap.add_argument("--pixels", type=Path, default=None, help="path of orchard-pixels")
    args = ap.parse_args()

    binary = args.pixels or default_binary()
    if not binary.exists():
        sys.exit(f"pixel_parity: {binary} not found; build the project or pass --pixels")
    folder = Path(args.folder)
    if not folder.is_dir():
        sys.exit(f"pixel_parity: {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if args.limit:
        files = files[: args.limit]
    if not files:
        sys.exit(f"pixel_parity: no JPEG or PNG files under {folder}")

    start = time.monotonic()
    identical = 0
    both_refused = 0
    worst, worst_file = 0, None
    mismatches: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pixel_parity_") as tmp:
        for c in range(0, len(files), args.chunk):
            chunk = files[c : c + args.chunk]
            out_dir = Path(tmp) / f"chunk{c}"
            out_dir.mkdir()
            errors = run_chunk(binary, chunk, out_dir)
            for i, path in enumerate(chunk):
                expected, pil_error = pillow_pixels(path)
                ours_error = errors.get(i)
                if pil_error or ours_error:
                    if pil_error and ours_error:
                        identical += 1
                        both_refused += 1
                    else:
                        mismatches.append(f"{path}: Pillow {pil_error or 'decodes it'}; "
                                          f"orchard-pixels {ours_error or 'decodes it'}")
                    continue
                got = np.fromfile(out_dir / f"{i}.rgb", dtype=np.uint8)
                if got.size != SIDE * SIDE * 3:
                    mismatches.append(f"{path}: orchard-pixels wrote {got.size} bytes")
                    continue
                diff = int(np.abs(got.reshape(SIDE, SIDE, 3).astype(np.int16)
                                  - expected.astype(np.int16)).max())
                if diff == 0:
                    identical += 1
                else:
                    mismatches.append(f"{path}: max abs difference {diff}")
                    if diff > worst:
                        worst, worst_file = diff, path
                (out_dir / f"{i}.rgb").unlink(missing_ok=True)

    n = len(files)
    print(f"images: {n} (under {folder})")
    print(f"identical: {identical} ({100.0 * identical / n:.3f} %)"
          + (f", of which refused by both: {both_refused}" if both_refused else ""))
    print(f"worst max-abs difference: {worst}" + (f" ({worst_file})" if worst_file else ""))
    print(f"mismatching files: {len(mismatches)}")
    for line in mismatches[:10]:
        print(f"  {line}")
    print(f"time: {time.monotonic() - start:.1f} s (orchard-pixels {binary})")
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
