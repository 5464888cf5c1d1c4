#!/usr/bin/env python3
"""Benchmark: two orchard binaries (say, before and after an engine or compiler change) on the same
images, run alternately so that the machine's drift hits both alike.

    python bench/compare_builds.py BASELINE_ORCHARD [CANDIDATE_ORCHARD (default build/orchard)]
                                   [--n 2000] [--rounds 3]

Each binary prepares its own model from the TF-slim weights first (`prepare-model` into a cache of
its own: a prepared model belongs to the engine that will run it, LibTorch's .pt or OpenVINO's .ov;
not timed). --n 0 takes every image of INPUT. Then, for each round, each binary runs
`orchard featurize INPUT TMP --model ITS_MODEL --limit N --quiet` into a fresh OUTPUT with the
defaults (--batch, --threads). Prints images/s (N / wall seconds, start-up included) and peak RSS
(wait4) per run, the medians, and the ratio candidate / baseline of the medians.
"""
import argparse
import datetime
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


def version(exe: str) -> str:
    """`orchard --version`, plus the inference engine it links (LibTorch or OpenVINO, from ldd)."""
    v = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    engine = next((line.split("=>")[1].split("(")[0].strip() for line in ldd.splitlines()
                   if "libtorch_cpu" in line or "libopenvino.so" in line), "?")
    return f"{v}, {engine}"


def run_once(exe: str, model: str, input_dir: str, n: int) -> tuple[float, float]:
    """One featurize run: (images/s, peak RSS MiB)."""
    out = Path(tempfile.mkdtemp(prefix="orchard-compare-"))
    try:
        cmd = [exe, "featurize", input_dir, str(out / "o"), "--model", model, "--quiet"] + (["--limit", str(n)] if n else [])
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        if status != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr.read().decode(errors='replace')}")
        done = n or sum(1 for _ in Path(input_dir).rglob("*.jpg"))
        return done / wall, usage.ru_maxrss / 1024
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("baseline")
    ap.add_argument("candidate", nargs="?", default=str(Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--input", default=str(SHARED / "data" / "fruits-360" / "Test"))
    ap.add_argument("--weights", default=str(SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"))
    a = ap.parse_args()

    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  nproc={os.cpu_count()}")
    print(f"# bench/compare_builds.py {a.baseline} {a.candidate} --n {a.n} --rounds {a.rounds}")
    builds = {"baseline": a.baseline, "candidate": a.candidate}
    tmp = Path(tempfile.mkdtemp(prefix="orchard-compare-models-"))
    models = {}
    try:
        for name, exe in builds.items():
            print(f"# {name}: {version(exe)}")
            models[name] = subprocess.run([exe, "prepare-model", a.weights], check=True, capture_output=True, text=True,
                                          env=dict(os.environ, ORCHARD_CACHE=str(tmp / name))).stdout.strip()
        rates = {name: [] for name in builds}
        print(f"{'round':>5} {'build':>9} {'images/s':>9} {'peak RSS MiB':>13}")
        for r in range(1, a.rounds + 1):
            for name, exe in builds.items():
                rate, rss = run_once(exe, models[name], a.input, a.n)
                rates[name].append(rate)
                print(f"{r:>5} {name:>9} {rate:>9.1f} {rss:>13.0f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"median images/s: baseline {med['baseline']:.1f}, candidate {med['candidate']:.1f}")
    print(f"ratio candidate / baseline: {med['candidate'] / med['baseline']:.3f}")


if __name__ == "__main__":
    main()
