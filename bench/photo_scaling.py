#!/usr/bin/env python3
"""Benchmark: what decoding large JPEGs with libjpeg's DCT scaling costs in accuracy (the service's
path) against the full decode that batch classification uses (Pillow-identical, then the resize).

    python bench/photo_scaling.py [--trained out/fruits-test] [--per-class 2] [--side 3000]

Takes the first --per-class Test photos of every class, upscales each with Pillow (BICUBIC) to
--side x --side and saves it as a quality-90 JPEG (a phone-size photo of the same fruit). Then
classifies the same JPEGs twice: `orchard classify` (full decode, Pillow's resize) and `orchard
serve` (POST /v1/classify: DCT-scaled decode to the smallest size >= 224, then the same resize).
Prints the top-1 accuracy of each, how often their top-1 agree, the largest difference in the top-1
probability, and the service's median decode time for these photos.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))


def make_photos(root: Path, test: Path, per_class: int, side: int) -> list:
    out = []
    for c in sorted(p.name for p in test.iterdir() if p.is_dir()):
        (root / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((test / c).glob("*.jpg"))[:per_class]:
            dst = root / c / f.name
            Image.open(f).convert("RGB").resize((side, side), Image.BICUBIC).save(dst, quality=90)
            out.append(dst)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", default=str(REPO / "out" / "fruits-test"))
    ap.add_argument("--model", default=str(SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"))
    ap.add_argument("--orchard", default=str(Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"))
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--side", type=int, default=3000)
    a = ap.parse_args()
    print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cores; python {' '.join(os.sys.argv)}")
    tmp = Path(tempfile.mkdtemp(prefix="orchard-photo-scaling-"))
    photos = make_photos(tmp / "photos", SHARED / "data" / "fruits-360" / "Test", a.per_class, a.side)
    print(f"{len(photos)} photos of {a.side}x{a.side} ({sum(p.stat().st_size for p in photos) / len(photos) / 1e6:.1f} MB each)")
    subprocess.run([a.orchard, "classify", str(tmp / "photos"), str(tmp / "out"), "--classifier", a.trained,
                    "--model", a.model, "--quiet"], check=True, stderr=subprocess.DEVNULL)
    t = pa.concat_tables([pq.read_table(p) for p in sorted((tmp / "out" / "predictions").glob("*.parquet"))])
    full = {p: (l[0], q[0]) for p, l, q in zip(t["path"].to_pylist(), t["top_labels"].to_pylist(),
                                                 t["top_probabilities"].to_pylist())}
    server = subprocess.Popen([a.orchard, "serve", "--classifier", a.trained, "--model", a.model, "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline().strip().rsplit(":", 1)[1])
        scaled, decode_ms = {}, []
        for p in photos:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("POST", "/v1/classify?top=1", body=p.read_bytes())
            r = json.loads(c.getresponse().read())
            c.close()
            scaled[str(p)] = (r["predictions"][0]["label"], r["predictions"][0]["probability"])
            decode_ms.append(r["timings_ms"]["decode"])
    finally:
        server.terminate()
        server.wait()
    labels = {str(p): p.parent.name for p in photos}
    acc_full = sum(full[p][0] == labels[p] for p in labels) / len(labels)
    acc_scaled = sum(scaled[p][0] == labels[p] for p in labels) / len(labels)
    agree = sum(full[p][0] == scaled[p][0] for p in labels) / len(labels)
    worst = max(abs(full[p][1] - scaled[p][1]) for p in labels if full[p][0] == scaled[p][0])
    print(f"top-1 accuracy: full decode {acc_full:.4f}, DCT-scaled decode {acc_scaled:.4f} "
          f"(cost {acc_full - acc_scaled:+.4f}); top-1 agree on {agree:.4f} of photos; "
          f"largest top-1 probability difference where they agree {worst:.4f}")
    print(f"service decode time, median {statistics.median(decode_ms):.1f} ms per {a.side}x{a.side} JPEG")
    subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
