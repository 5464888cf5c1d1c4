"""Benchmark: `orchard featurize` against the notebooks' PySpark + Keras pipeline on the same images.

    python bench/featurize.py [--n 2000] [--orchard-args "--batch 16 --threads 2"] [--skip-reference]

Runs, one after the other and each into a fresh temporary output, `orchard featurize INPUT OUT
--limit N` and `reference/featurize_spark.py INPUT OUT --limit N` (the same N files: the first N in
bytewise path order), and prints for each the wall time, images/s (images written / wall seconds,
start-up included), and the peak memory of the whole process tree (Spark: the Python driver, its
JVM and the Python workers), sampled from /proc every 0.2 s. Then the orchard/reference ratio and
the embedding parity of the two outputs. Prints the commands, the date and the machine.
"""
import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- process-tree memory
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process; PSS counts shared pages once across the tree."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process and all its descendants every `period` s."""

    def __init__(self, pid: int, period: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak_rss = self.peak_pss = 0
        self.peak_procs = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            procs = _tree(self.pid)
            vals = [_rss_pss(p) for p in procs]
            self.peak_rss = max(self.peak_rss, sum(v[0] for v in vals))
            self.peak_pss = max(self.peak_pss, sum(v[1] for v in vals))
            self.peak_procs = max(self.peak_procs, len(procs))
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join()


# --------------------------------------------------------------------------- runs
def timed_run(name: str, cmd: list[str], log: Path, env_extra: dict | None = None) -> dict:
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env_extra or {}).items())
    print(f"\n[{name}] $ {prefix}{shlex.join(cmd)}", flush=True)
    env = dict(os.environ, **(env_extra or {}))
    t0 = time.perf_counter()
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        mon = TreeMemory(proc.pid)
        mon.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        mon.stop()
    tail = log.read_text(errors="replace").strip().splitlines()[-6:]
    for line in tail:
        print(f"[{name}]   | {line}")
    return {"name": name, "rc": rc, "wall": wall, "peak_rss": mon.peak_rss, "peak_pss": mon.peak_pss,
            "procs": mon.peak_procs, "log": log}


def count_rows(folder: Path) -> tuple[int, int]:
    """(rows with features, rows without) in a Parquet folder or Orchard's features/ + errors/."""
    import pyarrow.parquet as pq
    def files(d):
        return [p for p in sorted(d.rglob("*.parquet")) if not p.name.startswith((".", "_"))] if d.is_dir() else []
    if (folder / "features").is_dir():
        good = sum(pq.read_metadata(f).num_rows for f in files(folder / "features"))
        bad = sum(pq.read_metadata(f).num_rows for f in files(folder / "errors"))
        return good, bad
    good = bad = 0
    for f in files(folder):
        col = pq.read_table(f, columns=["features"]).column("features")
        bad += col.null_count
        good += len(col) - col.null_count
    return good, bad


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()}: nproc {os.cpu_count()}, {model}{mem}, {platform.system()} "
            f"{platform.release()}; load average before the runs {load}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="number of images (default %(default)s)")
    ap.add_argument("--input", default=str(SHARED / "data" / "fruits-360" / "Test"))
    ap.add_argument("--model", default=str(SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"),
                    help="weights for both (orchard --model, reference --weights): the TF-slim folder")
    ap.add_argument("--orchard", default=str(Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"),
                    help="orchard binary (default $ORCHARD_BUILD/orchard or build/orchard)")
    ap.add_argument("--orchard-args", default="", help='extra orchard options, e.g. "--batch 16 --threads 2"')
    ap.add_argument("--reference-args", default="", help='extra reference options, e.g. "--master local[1]"')
    ap.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"), help="python for the reference")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-orchard", action="store_true")
    ap.add_argument("--cold-cache", action="store_true",
                    help="give orchard an empty ORCHARD_CACHE, so model preparation is timed too")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (printed) instead of deleting them")
    args = ap.parse_args(argv)

    print(f"bench/featurize.py  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"input: {args.input}, first {args.n} files in sorted path order; model: {args.model}")
    work = Path(tempfile.mkdtemp(prefix="orchard-bench-"))
    results = {}
    try:
        if not args.skip_orchard:
            if not os.access(args.orchard, os.X_OK):
                print(f"bench: {args.orchard}: no orchard binary (build it, or --skip-orchard)", file=sys.stderr)
                return 2
            out = work / "orchard"
            cmd = [args.orchard, "featurize", args.input, str(out), "--model", args.model,
                   "--limit", str(args.n)] + shlex.split(args.orchard_args)
            env_extra = {"ORCHARD_CACHE": str(work / "orchard-cache")} if args.cold_cache else None
            results["orchard"] = timed_run("orchard", cmd, work / "orchard.log", env_extra) | {"out": out}
        if not args.skip_reference:
            out = work / "reference"
            cmd = [args.python, str(REPO / "reference" / "featurize_spark.py"), args.input, str(out),
                   "--weights", args.model, "--limit", str(args.n)] + shlex.split(args.reference_args)
            results["reference"] = timed_run("reference", cmd, work / "reference.log") | {"out": out}

        print("\nresults")
        print(f"  {'':10} {'rc':>3} {'images':>7} {'failed':>6} {'wall s':>9} {'images/s':>9} "
              f"{'peak RSS MiB':>13} {'peak PSS MiB':>13} {'procs':>5}")
        for name, r in results.items():
            good, bad = count_rows(r["out"]) if r["rc"] == 0 and r["out"].exists() else (0, 0)
            r["images"] = good + bad
            r["rate"] = r["images"] / r["wall"] if r["wall"] > 0 else 0.0
            print(f"  {name:10} {r['rc']:>3} {good:>7} {bad:>6} {r['wall']:>9.1f} {r['rate']:>9.2f} "
                  f"{r['peak_rss'] / 2**20:>13.0f} {r['peak_pss'] / 2**20:>13.0f} {r['procs']:>5}")
        o, ref = results.get("orchard"), results.get("reference")
        if o and ref and o["rate"] > 0 and ref["rate"] > 0:
            print(f"  orchard/reference images/s: {o['rate'] / ref['rate']:.2f}x")
            sys.path.insert(0, str(REPO / "tools"))
            import embedding_parity
            print("\nembedding parity (tools/embedding_parity.py)")
            try:
                embedding_parity.run(str(o["out"]), str(ref["out"]))
            except (FileNotFoundError, ValueError) as e:
                print(f"  parity not computed: {e}")
        print("\nimages/s = images written (embedded + failed) / wall seconds of the whole command, "
              "start-up included. Peak RSS sums every process of the tree (shared pages counted "
              "once per process); PSS splits shared pages between them.")
        return 0 if all(r["rc"] == 0 for r in results.values()) else 1
    finally:
        if args.keep:
            print(f"outputs and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
