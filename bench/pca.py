#!/usr/bin/env python3
"""PCA benchmark: wall time and peak RSS of `orchard pca` (fit + transform) against the notebooks'
MLlib PCA (reference/pca_spark.py), and of `orchard pca` alone on a generated large feature set.

  bench/pca.py compare FEATURES_DIR [--variance 0.90 | --k K] [--orchard BIN] [--spark-args "..."]
      Both tools on the same features (a folder of part-*.parquet, or an OUTPUT folder with features/).
      orchard runs on a temporary OUTPUT whose features/ links to FEATURES_DIR; nothing is written there.

  bench/pca.py scale [--rows 1000000] [--part-rows 50000] [--tmp DIR] [--keep]
      Writes ROWS x 1280 synthetic non-negative features into a temporary folder (parts of PART_ROWS
      rows; about 5.2 GB for 1M rows, never inside the repository), runs `orchard pca` on it and
      deletes it. Shows that PCA memory does not grow with the number of rows.

Peak RSS is sampled every 20 ms from /proc over the whole process tree (Spark's JVM and its Python
workers included) and summed per sample; "largest process RSS" is the largest single process seen
(for the direct child also its kernel high-water mark, ru_maxrss from wait4). Prints the command, the date, the machine and the figures.
"""
import argparse
import datetime
import json
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM = 1280


def machine():
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    mem_gib = int(mem.group(1)) / 2**20 if mem else 0
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs, {mem_gib:.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}; orchard commit {commit}")


def tree_rss_kib(root):
    """(sum of VmRSS over root and all its descendants, largest single VmRSS)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    total, largest, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            m = re.search(r"VmRSS:\s*(\d+)", Path(f"/proc/{pid}/status").read_text())
            rss = int(m.group(1)) if m else 0
            total, largest = total + rss, max(largest, rss)
        except OSError:
            pass
    return total, largest


def measure(cmd, env=None):
    """Runs cmd; returns wall seconds, sampled peak tree RSS (MiB), ru_maxrss (MiB), stdout+stderr."""
    print("$", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    log = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=env)
    peak = [0, 0]
    done = threading.Event()

    def poll():
        while not done.is_set():
            total, largest = tree_rss_kib(proc.pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], largest)
            done.wait(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    out = log.read()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {cmd}\n{out[-3000:]}")
    # The largest single process: sampled, or the kernel's high-water mark of the direct child.
    return wall, peak[0] / 1024, max(peak[1], usage.ru_maxrss) / 1024, out


def features_folder(path):
    p = Path(path).resolve()
    return p / "features" if (p / "features").is_dir() else p


def orchard_bin(arg):
    exe = Path(arg or os.path.join(os.environ.get("ORCHARD_BUILD", ROOT / "build"), "orchard"))
    if not exe.is_file():
        sys.exit(f"{exe} not found: build orchard or pass --orchard / set ORCHARD_BUILD")
    return exe


def run_orchard(exe, features, opts, tmp):
    out = Path(tempfile.mkdtemp(prefix="orchard-bench-", dir=tmp))
    try:
        (out / "features").symlink_to(features, target_is_directory=True)
        wall, peak, maxrss, log = measure([exe, "pca", out, *opts])
        k = None
        try:
            import pyarrow.parquet as pq
            k = pq.read_table(out / "pca" / "model.parquet", columns=["k"]).column("k")[0].as_py()
        except Exception as e:  # the figures stand without k
            print("could not read k:", e)
        result = {"wall_s": wall, "peak_tree_rss_mib": peak, "max_process_rss_mib": maxrss, "k": k,
                  "log_tail": log.strip().splitlines()[-5:]}
        for stage in ("fit", "transform"):  # orchard prints e.g. "fit 1.8s, transform 0.4s"
            m = re.search(rf"\b{stage} ([0-9.]+) ?s\b", log)
            if m:
                result[f"{stage}_s"] = m.group(1)
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def count_rows(features):
    import pyarrow.parquet as pq
    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(features.glob("*.parquet")))


def report(title, command, rows, results):
    print()
    print(f"## {title}")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- machine: {machine()}")
    print(f"- command: {command}")
    print(f"- rows: {rows} x {DIM}")
    print()
    print("| tool | k | wall s | fit s | transform s | peak RSS, process tree MiB | largest process RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.get('k')} | {r['wall_s']:.1f} | {r.get('fit_s', '-')} | {r.get('transform_s', '-')} "
              f"| {r['peak_tree_rss_mib']:.0f} | {r['max_process_rss_mib']:.0f} |")
    print()
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "log_tail"} for k, v in results.items()}))


def compare(args):
    features = features_folder(args.features_dir)
    rows = count_rows(features)
    opts = ["--k", str(args.k)] if args.k else ["--variance", str(args.variance)]
    results = {"orchard pca": run_orchard(orchard_bin(args.orchard), features, opts, args.tmp)}
    ref_out = Path(tempfile.mkdtemp(prefix="mllib-bench-", dir=args.tmp))
    try:
        cmd = [sys.executable, ROOT / "reference" / "pca_spark.py", features, ref_out, *opts,
               *shlex.split(args.spark_args)]
        wall, peak, maxrss, log = measure(cmd)
        timings = json.loads((ref_out / "summary.json").read_text())
        t = timings["timings_s"]
        results["MLlib (reference/pca_spark.py)"] = {
            "wall_s": wall, "peak_tree_rss_mib": peak, "max_process_rss_mib": maxrss, "k": timings["k"],
            "fit_s": f"{t.get('fit_all_s', 0) + t['fit_s']:.1f}", "transform_s": f"{t['transform_s']:.1f}",
            "load_s": t["load_s"]}
    finally:
        shutil.rmtree(ref_out, ignore_errors=True)
    report("PCA: orchard vs MLlib", " ".join(map(shlex.quote, sys.argv)), rows, results)


def write_synthetic(folder, rows, part_rows, seed=7):
    """Non-negative rows with a decaying spectrum, written part by part (memory ~ one part)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    r = 256
    w = (rng.normal(0, 1, (r, DIM)) * (np.arange(1, r + 1) ** -0.7)[:, None] / np.sqrt(r)).astype(np.float32)
    base = rng.uniform(0.2, 1.2, DIM).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for p, start in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - start)
        x = base + 1.2 * (rng.standard_normal((n, r), dtype=np.float32) @ w)
        x += rng.normal(0, 0.05, (n, DIM)).astype(np.float32)
        np.maximum(x, 0, out=x)
        ids = np.arange(start, start + n)
        values = pa.array(x.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, (n + 1) * DIM, DIM, dtype=np.int32))
        table = pa.table({
            "path": pa.array([f"/synthetic/c{i % 100:03d}/{i:07d}.jpg" for i in ids], pa.string()),
            "label": pa.array([f"c{i % 100:03d}" for i in ids], pa.string()),
            "features": pa.ListArray.from_arrays(offsets, values, type=pa.list_(pa.float32())),
        })
        pq.write_table(table, folder / f"part-{p:05d}.parquet")
        print(f"\rwrote {start + n}/{rows} rows", end="", flush=True)
    print()


def scale(args):
    exe = orchard_bin(args.orchard)
    need = args.rows * DIM * 4 * 1.1
    base = Path(args.tmp or tempfile.gettempdir())
    if shutil.disk_usage(base).free < need * 1.2:
        sys.exit(f"{base} has less than {need * 1.2 / 2**30:.1f} GiB free; pass --tmp DIR on a larger disk")
    work = Path(tempfile.mkdtemp(prefix="orchard-pca-scale-", dir=base))
    if (ROOT in work.parents):
        sys.exit("refusing to generate data inside the repository; pass --tmp outside it")
    try:
        t0 = time.perf_counter()
        # In a child process: the parent's memory would otherwise count in orchard's ru_maxrss
        # (Linux carries a forked process's high-water mark across exec).
        gen = multiprocessing.get_context("spawn").Process(
            target=write_synthetic, args=(work / "data", args.rows, args.part_rows))
        gen.start()
        gen.join()
        if gen.exitcode != 0:
            sys.exit(f"generating the data failed (exit {gen.exitcode})")
        print(f"generated {args.rows} rows in {time.perf_counter() - t0:.0f} s under {work}")
        opts = ["--k", str(args.k)] if args.k else ["--variance", str(args.variance)]
        results = {"orchard pca": run_orchard(exe, work / "data", opts, base)}
        report(f"PCA: orchard alone, {args.rows} generated rows", " ".join(map(shlex.quote, sys.argv)), args.rows,
               results)
    finally:
        if args.keep:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("compare", "scale"):
        p = sub.add_parser(name)
        if name == "compare":
            p.add_argument("features_dir")
            p.add_argument("--spark-args", default="", help='extra reference/pca_spark.py options, quoted')
        else:
            p.add_argument("--rows", type=int, default=1_000_000)
            p.add_argument("--part-rows", type=int, default=50_000)
            p.add_argument("--keep", action="store_true", help="keep the generated data")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--variance", type=float, default=0.90)
        g.add_argument("--k", type=int)
        p.add_argument("--orchard", help="orchard binary (default $ORCHARD_BUILD/orchard or build/orchard)")
        p.add_argument("--tmp", help="where temporary folders go (default: the system temp dir)")
    args = ap.parse_args()
    compare(args) if args.mode == "compare" else scale(args)


if __name__ == "__main__":
    main()
