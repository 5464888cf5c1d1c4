"""Benchmark: `orchard featurize` from local disk vs from a loopback S3 store, with and without 40 ms
added to every request; the time to list a prefix of 10,000+ objects; requests per published part.

    .venv/bin/python bench/s3.py [--images 3000] [--repeats 3] [--latency-ms 40] [--list-objects 10000]

One invocation: starts SeaweedFS (a real S3 server) on loopback, uploads the first N Test images
(bytewise path order, the set `--limit N` picks), puts a FaultProxy in front of it, then runs
`orchard featurize` (same N images, fresh OUTPUT each time) round-robin `--repeats` times over:
local disk -> local OUTPUT; S3 -> S3 through the proxy with 0 ms; the same with --latency-ms added
to every request. Prints each run's images/s (orchard's own count, model loading excluded), wall
seconds, peak RSS, the CPU seconds the S3 server and the proxy spent, and the medians and the
latency/no-latency ratio. Then lists 10,000+ objects with `orchard plan` and counts ListObjectsV2
pages, and reports requests per published part (PutObject vs multipart) from the proxy's counts.
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from fault_proxy import FaultProxy  # noqa: E402
from s3_servers import SeaweedFS  # noqa: E402

SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))
TEST = SHARED / "data" / "fruits-360" / "Test"
MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"
ORCHARD = Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (and its reaped children) in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICKS


def run_featurize(args: list, env: dict) -> dict:
    """Runs orchard featurize; returns images/s (orchard's), wall s, peak RSS MiB of that process."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(ORCHARD), "featurize", *map(str, args), "--quiet"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"orchard featurize {' '.join(map(str, args))} failed:\n{err}")
    m = re.search(r"done: (\d+) embedded, (\d+) errors in ([\d.]+)s \(([\d.]+) images/s\)", err)
    return {"images_per_s": float(m.group(4)), "images": int(m.group(1)) + int(m.group(2)),
            "wall_s": wall, "rss_mib": usage.ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=40.0)
    ap.add_argument("--list-objects", type=int, default=10000)
    ap.add_argument("--shard-size", type=int, default=1000)
    a = ap.parse_args()

    print(f"# bench/s3.py {' '.join(sys.argv[1:])}")
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{os.cpu_count()} cores  {platform.platform()}")
    files = sorted((str(p) for p in TEST.rglob("*.jpg")), key=lambda s: s.encode())[:a.images]
    work = Path(tempfile.mkdtemp(prefix="orchard-bench-s3-"))
    base_env = dict(os.environ, ORCHARD_CACHE=str(work / "cache"))
    subprocess.run([str(ORCHARD), "prepare-model", str(MODEL), "--out", str(work / "model.ov")],
                   env=base_env, check=True, stdout=subprocess.DEVNULL)
    model = ["--model", str(work / "model.ov"), "--limit", str(a.images), "--shard-size", str(a.shard_size)]

    with SeaweedFS(workdir=work) as s3:
        s3.create_bucket("bench")
        t = time.monotonic()
        client = s3.client()
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda f: client.upload_file(f, "bench", "Test/" + os.path.relpath(f, TEST)), files))
        print(f"uploaded {len(files)} images in {time.monotonic() - t:.1f}s "
              f"(SeaweedFS started in {s3.startup_s:.1f}s)")
        proxy = FaultProxy(s3.endpoint)
        server_pid = s3.proc.pid
        env = dict(s3.env(proxy.endpoint), ORCHARD_CACHE=str(work / "cache"))
        configs = [("local disk", lambda i: [TEST, work / f"local-{i}"], base_env, None),
                   ("S3 via proxy, +0 ms", lambda i: ["s3://bench/Test", f"s3://bench/out0-{i}"], env, 0.0),
                   (f"S3 via proxy, +{a.latency_ms:g} ms", lambda i: ["s3://bench/Test", f"s3://bench/outL-{i}"],
                    env, a.latency_ms / 1000)]
        results = {name: [] for name, *_ in configs}
        print(f"\n{'config':<24} {'images/s':>9} {'wall s':>7} {'RSS MiB':>8} {'server CPU s':>13} "
              f"{'proxy CPU s':>12} {'PUT/obj':>9}")
        for i in range(a.repeats):
            for name, where, run_env, latency in configs:
                if latency is not None:
                    proxy.set(latency_s=latency)
                    proxy.reset_counts()
                srv0, px0 = cpu_seconds(server_pid), time.process_time()
                r = run_featurize([*where(i), *model], run_env)
                r["server_cpu_s"] = cpu_seconds(server_pid) - srv0
                r["proxy_cpu_s"] = time.process_time() - px0
                puts = "-"
                if latency is not None:
                    c = proxy.counts()
                    prefix = str(where(i)[1]).removeprefix("s3://bench/") + "/"
                    written = sum(p.get("KeyCount", 0) for p in client.get_paginator("list_objects_v2").paginate(
                        Bucket="bench", Prefix=prefix))
                    puts = f"{c.get('PutObject', 0) / written:.2f}"  # requests per object written
                    r["multipart"] = c.get("CreateMultipartUpload", 0) + c.get("UploadPart", 0)
                results[name].append(r)
                print(f"{name:<24} {r['images_per_s']:>9.1f} {r['wall_s']:>7.1f} {r['rss_mib']:>8.0f} "
                      f"{r['server_cpu_s']:>13.1f} {r['proxy_cpu_s']:>12.1f} {puts:>9}", flush=True)

        med = {n: statistics.median(x["images_per_s"] for x in rs) for n, rs in results.items()}
        names = list(med)
        print("\nmedians (images/s): " + ", ".join(f"{n}: {v:.1f}" for n, v in med.items()))
        print(f"ratio +{a.latency_ms:g} ms / +0 ms (same store, same run): {med[names[2]] / med[names[1]]:.3f}")
        print(f"ratio S3 (+0 ms) / local disk: {med[names[1]] / med[names[0]]:.3f}")
        srv = statistics.median(x["server_cpu_s"] / x["wall_s"] for x in results[names[1]])
        print(f"SeaweedFS CPU during an S3 run: {srv:.2f} cores on average (of {os.cpu_count()})")
        mp = sum(x.get("multipart", 0) for n in names[1:] for x in results[n])
        print(f"multipart requests (create/upload part) during the S3 runs: {mp}; every object written "
              f"(parts, manifest, JSON) took the PUT/obj requests above")

        # Listing 10,000+ objects.
        n = a.list_objects
        t = time.monotonic()
        s3.put_many("bench", "many/class", n)
        print(f"\nput {n} small objects in {time.monotonic() - t:.1f}s")
        for latency in (0.0, a.latency_ms / 1000):
            proxy.set(latency_s=latency)
            proxy.reset_counts()
            t = time.monotonic()
            p = subprocess.run([str(ORCHARD), "plan", "s3://bench/many", f"s3://bench/plan-{latency}", "--glob", "*"],
                               env=env, capture_output=True, text=True)
            wall = time.monotonic() - t
            if p.returncode != 0:
                sys.exit(p.stderr)
            c = proxy.counts()
            print(f"orchard plan over {n} objects, +{latency * 1000:g} ms: {wall:.2f}s wall "
                  f"(process start, listing, manifest PUT), {c.get('ListObjectsV2', 0)} ListObjectsV2 pages")
        proxy.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
