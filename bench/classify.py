#!/usr/bin/env python3
"""Benchmark: `orchard classify` against `orchard featurize` on the same images, run alternately so
that the machine's drift hits both alike; and the block-holdout accuracy of `orchard train`.

    python bench/classify.py [--trained OUT/fruits-test] [--n 3000] [--rounds 3] [--seeds 0,1,2]

TRAINED is a finished OUTPUT of `orchard run` on the Test set (the README's first command makes
out/fruits-test). Accuracy: `orchard train` on a copy of TRAINED's classifier-free files for each
seed (different held-out blocks): holdout top-1 / top-5 and the training time. Throughput: for each
round, `orchard featurize INPUT TMP --limit N --quiet` and `orchard classify INPUT TMP --classifier
TRAINED --limit N --quiet` into fresh OUTPUTs with the defaults (the model prepared beforehand, not
timed). Prints images/s (N / wall seconds, start-up included) per run, the medians and the ratio
classify / featurize.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))


def timed(cmd: list) -> float:
    """Wall seconds of cmd, which must succeed."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr}")
    return time.monotonic() - t0


def accuracy(exe: str, trained: Path, seeds: list) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="orchard-bench-train-"))
    try:
        copy = tmp / "trained"
        shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("classifier", "report"))
        print(f"train: `{exe} train {trained} --seed S` (on a copy), block holdout:")
        print(f"{'seed':>5} {'holdout':>8} {'top-1':>7} {'top-5':>7} {'l2':>8} {'seconds':>8}")
        rows = []
        for s in seeds:
            seconds = timed([exe, "train", str(copy), "--seed", str(s)])
            m = json.loads((copy / "classifier" / "metrics.json").read_text())
            rows.append((m["holdout"]["top1"], m["holdout"]["top5"]))
            print(f"{s:>5} {m['sizes']['holdout_rows']:>8} {m['holdout']['top1']:>7.4f} {m['holdout']['top5']:>7.4f} "
                  f"{m['l2']:>8g} {seconds:>8.1f}")
        print(f"median top-1 {statistics.median(r[0] for r in rows):.4f}, worst {min(r[0] for r in rows):.4f}; "
              f"median top-5 {statistics.median(r[1] for r in rows):.4f}, worst {min(r[1] for r in rows):.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", default=str(REPO / "out" / "fruits-test"))
    ap.add_argument("--input", default=str(SHARED / "data" / "fruits-360" / "Test"))
    ap.add_argument("--model", default=str(SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"))
    ap.add_argument("--orchard", default=str(Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"))
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2", help="train seeds ('' skips the accuracy part)")
    a = ap.parse_args()
    exe, trained = a.orchard, Path(a.trained)
    print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} cores; "
          f"{subprocess.run([exe, '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"# python {' '.join(os.sys.argv)}")
    if a.seeds:
        accuracy(exe, trained, [int(s) for s in a.seeds.split(",")])
    model = subprocess.run([exe, "prepare-model", a.model, "--out", str(Path(tempfile.gettempdir()) / "orchard-bench-classify.ov")],
                           capture_output=True, text=True, check=True).stdout.strip()
    results = {"featurize": [], "classify": []}
    for r in range(a.rounds):
        for name in ("featurize", "classify"):
            out = Path(tempfile.mkdtemp(prefix=f"orchard-bench-{name}-"))
            try:
                cmd = [exe, name, a.input, str(out / "o"), "--model", model, "--limit", str(a.n), "--quiet"]
                if name == "classify":
                    cmd += ["--classifier", str(trained)]
                rate = a.n / timed(cmd)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            results[name].append(rate)
            print(f"round {r + 1}: {name:9} {rate:7.1f} images/s", flush=True)
    f, c = (statistics.median(results[k]) for k in ("featurize", "classify"))
    print(f"median: featurize {f:.1f} images/s, classify {c:.1f} images/s, classify / featurize = {c / f:.3f}")


if __name__ == "__main__":
    main()
