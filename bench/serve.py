"""Benchmark: `orchard serve` latency and throughput, against `orchard featurize` on the same photos.

    python bench/serve.py [--images 600] [--trained DIR] [--levels 1,4,16,64] [--max-batch 8] [--workers 0]

Builds a TRAINED output (8 Fruits-360 classes x 40 Test images: `orchard run` then `orchard train`),
or reuses --trained DIR when it holds classifier/model.parquet, and picks --images distinct Test
photos (100x100 JPEGs, evenly spread over the sorted Test folder). Then, one after the other:
  1. `orchard featurize` on a folder holding exactly those photos: its own images/s once the model
     is loaded (the base of the ratios; the wall-clock rate with start-up is printed too);
  2. `orchard serve` on 127.0.0.1, port 0, warmed up with a few requests, then
     - latency at 1 client (one keep-alive connection): p50/p99 of --latency-requests posts of one
       100x100 Test JPEG and of --big-requests posts of a 12-megapixel JPEG (4000x3000, that photo
       upscaled by Pillow with some noise, quality 90, 3-4 MiB, made once in the temporary folder);
     - throughput at each --levels concurrency: that many threads, each with its own http.client
       connection, post the distinct photos until --images posts are done or --max-seconds pass;
       images/s = answers / wall seconds; the mean batch size comes from /metrics
       (orchard_batch_size); the ratio to featurize's images/s is printed per level;
     - the server's peak RSS (VmHWM of /proc/PID/status) after the last level.
Every number is measured by a Python client on the same machine, which takes CPU from the server:
with few cores the higher levels are bounded by the client too. Prints the commands, the date and
the machine.
"""
import argparse
import datetime
import http.client
import itertools
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))
TEST_IMAGES = SHARED / "data" / "fruits-360" / "Test"
CLASSES = ["Banana 1", "Kiwi 1", "Apple Red 1", "Lemon 1", "Strawberry 1", "Avocado 1", "Eggplant 1",
           "Pear 1"]
LISTENING = re.compile(r"orchard serve: listening on http://(?P<host>[^:/\s]+):(?P<port>\d+)")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize import machine  # noqa: E402


# --------------------------------------------------------------------------- set-up
def run(cmd: list, log: Path) -> float:
    """Runs cmd (printed) with its output in log; returns the wall seconds; exits on failure."""
    print(f"$ {shlex.join(map(str, cmd))}", flush=True)
    t0 = time.perf_counter()
    with open(log, "wb") as lf:
        rc = subprocess.run(list(map(str, cmd)), stdout=lf, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        sys.exit(f"bench: exited {rc}: {shlex.join(map(str, cmd))}")
    return wall


def trained_output(args, work: Path) -> Path:
    out = Path(args.trained) if args.trained else work / "trained"
    if (out / "classifier" / "model.parquet").is_file():
        print(f"reusing TRAINED {out}")
        return out
    sample = work / "train-sample"
    for c in CLASSES:      # 40 photos evenly spaced over the class (all its videos), as tests/e2e/test_serve.py
        (sample / c).mkdir(parents=True, exist_ok=True)
        files = sorted((TEST_IMAGES / c).glob("*.jpg"))
        for f in (files[i * len(files) // 40] for i in range(40)):
            shutil.copyfile(f, sample / c / f.name)
    run([args.orchard, "run", sample, out, "--model", args.model], work / "run.log")
    run([args.orchard, "train", out, "--holdout", "0.2"], work / "train.log")
    return out


def pick_photos(n: int, folder: Path) -> list[bytes]:
    """n Test photos evenly spread over the sorted Test folder, copied to folder/<label>/; their bytes."""
    files = sorted(TEST_IMAGES.rglob("*.jpg"))
    step = max(1, len(files) // n)
    picked = files[::step][:n]
    for f in picked:
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, folder / f.parent.name / f.name)
    return [f.read_bytes() for f in picked]


def big_jpeg(path: Path) -> bytes:
    """A 4000x3000 JPEG (quality 90): a Test photo upscaled, with 12 % sensor-like noise so that it is
    about the size of a phone's photo (3-4 MiB; the smooth upscale alone compresses to 0.3 MiB)."""
    from PIL import Image
    src = sorted((TEST_IMAGES / "Banana 1").glob("*.jpg"))[0]
    up = Image.open(src).convert("RGB").resize((4000, 3000), Image.BICUBIC)
    Image.blend(up, Image.effect_noise((4000, 3000), 64).convert("RGB"), 0.12).save(path, format="JPEG", quality=90)
    return path.read_bytes()


# --------------------------------------------------------------------------- the server
class Server:
    def __init__(self, cmd: list, log: Path, timeout: float = 120):
        print(f"$ {shlex.join(map(str, cmd))}", flush=True)
        self._log = open(log, "wb")
        self.log = log
        self.proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=self._log, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        m = LISTENING.fullmatch((line or "").strip())
        if not m:
            self.stop()
            sys.exit(f"bench: no listening line from orchard serve (got {line!r}):\n"
                     f"{log.read_text(errors='replace')[-3000:]}")
        self.port = int(m["port"])

    def peak_rss(self) -> int:
        """VmHWM in bytes (0 when unreadable)."""
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, float]:
    """(status, seconds) of one POST /v1/classify on conn; status 0 for a transport error."""
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "image/jpeg"})
        r = conn.getresponse()
        r.read()
        status = r.status
    except (OSError, http.client.HTTPException):
        conn.close()
        status = 0
    return status, time.perf_counter() - t0


def batch_totals(port: int) -> tuple[float, float]:
    """(orchard_batch_size_sum, orchard_batch_size_count) from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = count = 0.0
    for line in text.splitlines():
        m = re.match(r"orchard_batch_size_(sum|count)(?:\{.*\})?\s+(\S+)", line)
        if m:
            if m[1] == "sum":
                total += float(m[2])
            else:
                count += float(m[2])
    return total, count


# --------------------------------------------------------------------------- measurements
def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))] if s else float("nan")


def latency(port: int, body: bytes, n: int, max_s: float) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    secs, bad, t_end = [], 0, time.perf_counter() + max_s
    try:
        for _ in range(n):
            status, s = post(conn, body)
            secs.append(s)
            bad += status != 200
            if time.perf_counter() > t_end:
                break
    finally:
        conn.close()
    return {"n": len(secs), "p50": percentile(secs, 50), "p99": percentile(secs, 99), "non200": bad}


def throughput(port: int, photos: list[bytes], clients: int, n: int, max_s: float) -> dict:
    counter = itertools.count()
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    t_end = [0.0]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        start.wait()
        try:
            while time.perf_counter() < t_end[0]:
                i = next(counter)
                if i >= n:
                    break
                mine.append(post(conn, photos[i % len(photos)]))
        finally:
            conn.close()
            with lock:
                results.extend(mine)

    b0 = batch_totals(port)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    t_end[0] = time.perf_counter() + max_s
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    b1 = batch_totals(port)
    ok = sum(1 for s, _ in results if s == 200)
    secs = [x for _, x in results]
    batches = b1[1] - b0[1]
    return {"clients": clients, "n": len(results), "ok": ok, "non200": len(results) - ok, "wall": wall,
            "rate": ok / wall if wall > 0 else 0.0, "p50": percentile(secs, 50), "p99": percentile(secs, 99),
            "batch": (b1[0] - b0[0]) / batches if batches else float("nan")}


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600,
                    help="distinct photos, and posts per concurrency level (default %(default)s)")
    ap.add_argument("--trained", help="TRAINED output to reuse, or to build there (default: a temporary one)")
    ap.add_argument("--model", default=str(SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"))
    ap.add_argument("--orchard", default=str(Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"),
                    help="orchard binary (default $ORCHARD_BUILD/orchard or build/orchard)")
    ap.add_argument("--max-batch", type=int, default=8, help="orchard serve --max-batch (default %(default)s)")
    ap.add_argument("--workers", type=int, default=0, help="orchard serve --workers (default %(default)s)")
    ap.add_argument("--serve-args", default="", help='extra orchard serve options, e.g. "--max-delay-ms 10"')
    ap.add_argument("--levels", default="1,4,16,64", help="concurrent clients (default %(default)s)")
    ap.add_argument("--max-seconds", type=float, default=30, help="time bound of each measurement (default 30)")
    ap.add_argument("--latency-requests", type=int, default=200, help="100x100 posts at 1 client")
    ap.add_argument("--big-requests", type=int, default=30, help="12-megapixel posts at 1 client")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    print(f"bench/serve.py  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {machine()}")
    if not os.access(args.orchard, os.X_OK):
        print(f"bench: {args.orchard}: no orchard binary (build it first)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="orchard-bench-serve-"))
    server = None
    try:
        trained = trained_output(args, work)
        photos = pick_photos(args.images, work / "photos")
        big = big_jpeg(work / "big-4000x3000.jpg")
        print(f"{len(photos)} distinct Test photos (100x100 JPEG, mean {sum(map(len, photos)) / len(photos) / 1024:.1f}"
              f" KiB); 12-megapixel JPEG {len(big) / 2**20:.1f} MiB")

        feat_wall = run([args.orchard, "featurize", work / "photos", work / "featurized", "--model", args.model],
                        work / "featurize.log")
        # The ratio uses featurize's own rate, model loading excluded (the server is measured warm too).
        feat_rate = float(re.search(r"\(([\d.]+) images/s\)", (work / "featurize.log").read_text()).group(1))
        print(f"featurize: {len(photos)} photos in {feat_wall:.1f} s wall ({len(photos) / feat_wall:.1f} images/s "
              f"start-up included); {feat_rate:.1f} images/s once the model is loaded (the ratio's base)")

        server = Server([args.orchard, "serve", "--classifier", trained, "--model", args.model,
                         "--host", "127.0.0.1", "--port", "0", "--max-batch", args.max_batch,
                         "--workers", args.workers, *shlex.split(args.serve_args)], work / "serve.log")
        warm = latency(server.port, photos[0], 10, args.max_seconds)
        if warm["non200"]:
            print(f"bench: {warm['non200']} of 10 warm-up requests failed:\n{server.log.read_text()[-2000:]}",
                  file=sys.stderr)
            return 1
        small = latency(server.port, photos[0], args.latency_requests, args.max_seconds)
        large = latency(server.port, big, args.big_requests, args.max_seconds)
        rows = [throughput(server.port, photos, c, args.images, args.max_seconds) for c in levels]
        peak = server.peak_rss()
        rc = server.stop()
        server = None

        print("\nlatency at 1 client (keep-alive)")
        print(f"  {'image':22} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>7}")
        for name, r in (("100x100 JPEG", small), (f"4000x3000 JPEG {len(big) / 2**20:.1f} MiB", large)):
            print(f"  {name:22} {r['n']:>8} {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} {r['non200']:>7}")
        print(f"\nthroughput (--max-batch {args.max_batch} --workers {args.workers}"
              f"{' ' + args.serve_args if args.serve_args else ''}); featurize {feat_rate:.1f} images/s")
        print(f"  {'clients':>7} {'requests':>8} {'non-200':>7} {'wall s':>7} {'images/s':>9} {'/featurize':>10} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10}")
        for r in rows:
            print(f"  {r['clients']:>7} {r['n']:>8} {r['non200']:>7} {r['wall']:>7.1f} {r['rate']:>9.1f} "
                  f"{r['rate'] / feat_rate:>9.2f}x {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} {r['batch']:>10.2f}")
        print(f"\nserver peak RSS (VmHWM) after {levels[-1]} clients: {peak / 2**20:.0f} MiB; "
              f"exit status after SIGTERM: {rc}")
        print("images/s = answers / wall seconds of the level; /featurize = that / featurize's images/s once its "
              "model is loaded. The client is Python on the same machine.")
        return 0 if rc == 0 else 1
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
