#!/usr/bin/env python3
"""Benchmark: `orchard featurize` images/s and peak RSS over a grid of --batch and --threads.

    python bench/featurize_sweep.py [--n 2000] [--batches 1,2,4,8] [--threads 1,2,3]

Each point runs `orchard featurize INPUT TMP --limit N --batch B --threads T --quiet` into a fresh
temporary OUTPUT (the model is prepared once beforehand, so preparation is not timed) and prints the
wall time, images/s (N / wall seconds, start-up included) and the process's peak RSS (wait4).
This is how the default --batch and --threads were chosen (docs/benchmarks.md).
"""
import argparse
import datetime
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--input", default=str(SHARED / "data" / "fruits-360" / "Test"))
    ap.add_argument("--model", default=str(SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"))
    ap.add_argument("--orchard", default=str(Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"))
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--threads", default="1,2,3")
    a = ap.parse_args()

    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  nproc={os.cpu_count()}")
    print(f"# bench/featurize_sweep.py --n {a.n} --batches {a.batches} --threads {a.threads}")
    model = subprocess.run([a.orchard, "prepare-model", a.model], check=True, capture_output=True, text=True).stdout.strip()
    print(f"{'batch':>5} {'threads':>7} {'wall s':>7} {'images/s':>9} {'peak RSS MiB':>13}")
    for t in map(int, a.threads.split(",")):
        for b in map(int, a.batches.split(",")):
            out = Path(tempfile.mkdtemp(prefix="orchard-sweep-"))
            cmd = [a.orchard, "featurize", a.input, str(out / "o"), "--model", model, "--limit", str(a.n),
                   "--batch", str(b), "--threads", str(t), "--quiet"]
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(p.pid, 0)
            wall = time.monotonic() - t0
            shutil.rmtree(out)
            if status != 0:
                raise SystemExit(f"failed: {' '.join(cmd)}")
            print(f"{b:>5} {t:>7} {wall:>7.1f} {a.n / wall:>9.1f} {usage.ru_maxrss / 1024:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
