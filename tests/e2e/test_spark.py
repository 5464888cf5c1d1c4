"""Orchard on a real Spark (spark/orchard_spark.py), on a small image set (4 classes x 12
Fruits-360 Test images, plus an empty and a truncated file; 9 shards of 6).

Tests 1, 4 and 5 run once per flavour of pyspark (spark_cluster.py), each giving spark-submit, the
driver and the Python workers:
- main: the test venv's pyspark 4.x;
- pyspark35: .venv-pyspark35's pyspark 3.5 alone, on Python 3.9 where the machine has one: what
  an EMR 7 node has. Its Python cannot import numpy, pyarrow or pandas (checked), so the run proves
  the application needs nothing but pyspark. Its S3 run also has no AWS region anywhere in its
  environment: orchard finds the bucket's region itself.
Both check that the driver and every Python worker that ran an orchard process were that
flavour's Python, and that _SUCCESS records that flavour's Spark version. Tests 2 and 3 run on the
main flavour only (2 runs in this process; 3 is the slowest).

1. `spark-submit --master local[2,4] --archives BUNDLE#orchard` (retries on; the worker binary
   from the shipped bundle, no --orchard): OUTPUT equal to `orchard run`'s on the same images: the
   same part names; features bit-identical for every path; errors identical; the same PCA k,
   explained-variance ratios within 1e-9 (CSV and model.parquet), projections within 1e-6
   relative; the same files (no moments/ part left); _SUCCESS the newest file; `orchard validate`
   passes.
2. `run(spark, ...)` called in this process on a SparkSession made here (local[2,4]), while the
   test SIGKILLs one `orchard featurize-shards` process of the run mid-task: Spark retries the
   task, the job completes, each input exactly once, same features as `orchard run`.
3. A standalone cluster on loopback (a master and two one-core workers from the venv's pyspark,
   tests/e2e/spark_cluster.py), spark-submit in client mode with a relative OUTPUT: one worker's
   JVM and its executor's JVM SIGKILLed mid-job; the job completes on the other worker, each
   input exactly once, validate passes.
4. INPUT and OUTPUT on a loopback S3 server (SeaweedFS), the worker shipped as the bundle
   (tools/bundle.sh, with its prepared model) through `--archives BUNDLE#orchard`, no --orchard and
   no --model: features identical to the same flavour's local-folder Spark run (by key relative to
   INPUT), the same PCA k, validate passes on the s3:// OUTPUT.
5. The driver's `classify` through spark-submit (local[2,4], --orchard): a classifier trained with
   the binary (`orchard run` + `orchard train` on 6 classes x 30 images) applied to other photos of
   those classes plus a corrupt .jpg gives the OUTPUT of `orchard classify` with the same options:
   the same files, the same prediction parts (rows, top labels, top probabilities), the same error
   rows, _classify.json claiming the same classifier, each input exactly once; every task was an
   `orchard featurize-shards --classifier` run by the flavour's Python.

Every number is read back with pyarrow, in this process (the test venv). Network: 127.0.0.1 only
(SPARK_LOCAL_IP, the S3 server's endpoint, AWS_EC2_METADATA_DISABLED)."""
import csv
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import MODEL_DIR, REPO, TEST_IMAGES, copy_sample, run_orchard
from spark_cluster import (MAIN, Flavour, StandaloneCluster, ancestors, cmdline, is_zombie_or_gone,
                           process_table, pyspark35, spark_env)

APP = REPO / "spark" / "orchard_spark.py"
BUNDLE_SH = REPO / "tools" / "bundle.sh"
CLASSES = ["Apple Braeburn 1", "Banana 1", "Kiwi 1", "Lemon 1"]
PER_CLASS = 12
SHARD_SIZE = 6
TABLES = ("features", "errors", "pca_features")
# Spark settings every run gets: no web UI (no port to find, less work), loopback only.
SPARK_CONF = ["--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1",
              "--conf", "spark.driver.bindAddress=127.0.0.1"]


# ---------------------------------------------------------------------------------------------
# Flavours, inputs, reference run, helpers

@pytest.fixture(scope="module", params=["main", "pyspark35"])
def flavour(request) -> Flavour:
    """The pyspark that spark-submit, the driver and the Python workers come from (see above)."""
    if request.param == "main":
        return MAIN
    try:
        f = pyspark35()
    except RuntimeError as e:
        pytest.fail(str(e))
    assert f.version.startswith("3.5."), f
    for module in ("numpy", "pyarrow", "pandas"):  # what a cluster node lacks
        p = subprocess.run([str(f.python), "-c", f"import {module}"], env=spark_env(flavour=f),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode != 0, f"{f.python} can import {module}: .venv-pyspark35 must hold pyspark alone"
    print(f"flavour: {f}", flush=True)
    return f


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """4 classes x 12 images, plus Banana 1/empty.jpg (0 bytes) and Kiwi 1/truncated.jpg."""
    root = tmp_path_factory.mktemp("spark-in") / "fruits"
    copy_sample(root, CLASSES, PER_CLASS)
    (root / "Banana 1" / "empty.jpg").write_bytes(b"")
    first = sorted((TEST_IMAGES / "Kiwi 1").glob("*.jpg"))[-1].read_bytes()
    (root / "Kiwi 1" / "truncated.jpg").write_bytes(first[: len(first) // 3])
    return root


def inputs_of(images: Path) -> list:
    return sorted(str(p) for p in images.rglob("*.jpg"))


def n_shards(images: Path) -> int:
    return -(-len(inputs_of(images)) // SHARD_SIZE)


@pytest.fixture(scope="module")
def reference(orchard_bin, model_env, images, tmp_path_factory) -> Path:
    """`orchard run` on the images: what every Spark run must reproduce."""
    out = tmp_path_factory.mktemp("spark-ref") / "out"
    run_orchard(orchard_bin, model_env, "run", images, out, "--model", MODEL_DIR, "--shard-size", SHARD_SIZE,
                "--quiet")
    return out


def log_excerpt(text: str, n=60) -> str:
    """The lines of a Spark log worth reading when something failed."""
    keep = [l for l in text.splitlines()
            if re.search(r"orchard|Error|Exception|ERROR|WARN (TaskSetManager|TaskSchedulerImpl)", l)
            and not l.lstrip().startswith("at ")]
    return "\n".join(keep[-n:])


def submit_cmd(master, *app_args, conf=(), flavour=MAIN, command="run"):
    return [str(flavour.submit), "--master", master, *SPARK_CONF, *conf, str(APP), command, *map(str, app_args)]


def without_orchard(path: str) -> str:
    """PATH less every folder holding an orchard: only the shipped bundle can provide the binary."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if not (Path(d) / "orchard").exists())


def stop_group(p: subprocess.Popen):
    """SIGKILLs the process group of a spark-submit started with start_new_session (its JVM and
    the Python driver) if it is still running; reaps it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(30)


def spark_submit(cmd, env, log_path: Path, timeout=600, cwd=None, output=None):
    """Runs spark-submit to completion; returns (its output, a FeaturizeWatch of the orchard
    featurize-shards processes it ran when `output` is given); fails the test with the log's gist."""
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    watch = FeaturizeWatch([p.pid], output) if output is not None else None
    try:
        while p.poll() is None and time.monotonic() - t0 < timeout:
            if watch is not None:
                watch.scan()
            time.sleep(0.1)
        rc = p.wait(max(1, timeout - (time.monotonic() - t0)))
    finally:
        stop_group(p)
    text = log_path.read_text(errors="replace")
    print(f"spark-submit: {time.monotonic() - t0:.1f} s, exit {rc}", flush=True)
    if rc != 0:
        pytest.fail(f"spark-submit exited {rc} ({log_path}):\n{log_excerpt(text)}")
    return text, watch


def tables(out: Path, kind: str) -> dict:
    """{part file name: pyarrow table} of OUTPUT/kind."""
    return {p.name: pq.read_table(p) for p in sorted((out / kind).glob("part-*.parquet"))}


def rows(out: Path, kind: str) -> list:
    return [r for t in tables(out, kind).values() for r in t.to_pylist()]


def floats_bits(table, column) -> np.ndarray:
    """The float32 values of a list<float> column, as their bit patterns (exact comparison)."""
    values = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    assert values.dtype == np.float32
    return values.view(np.uint32)


def read_ratio_csv(path: Path):
    with open(path, newline="") as f:
        data = list(csv.DictReader(f))
    return (np.array([float(r["explained_variance_ratio"]) for r in data]),
            np.array([float(r["cumulative"]) for r in data]))


def assert_each_input_once(out: Path, expected: list, key=str):
    seen = [key(r["path"]) for r in rows(out, "features")] + [key(r["path"]) for r in rows(out, "errors")]
    assert sorted(seen) == sorted(expected), "every input exactly once in features/ + errors/"


def assert_features_identical(out: Path, ref: Path, key=str, ref_key=str):
    """Same path -> label and features (bit for bit) as the reference, and the same error rows."""
    got = {key(r["path"]): (r["label"], r["features"]) for r in rows(out, "features")}
    want = {ref_key(r["path"]): (r["label"], r["features"]) for r in rows(ref, "features")}
    assert got.keys() == want.keys()
    differ = [k for k in want if got[k][0] != want[k][0]
              or not np.array_equal(np.asarray(got[k][1], np.float32).view(np.uint32),
                                    np.asarray(want[k][1], np.float32).view(np.uint32))]
    assert not differ, f"{len(differ)} of {len(want)} feature rows differ from `orchard run`'s, e.g. {differ[:3]}"
    got_err = {key(r["path"]): r["error"] for r in rows(out, "errors")}
    want_err = {ref_key(r["path"]): r["error"] for r in rows(ref, "errors")}
    assert got_err == want_err and len(want_err) == 2


def shards_arg(argv: list) -> list:
    """The shard numbers of an `orchard featurize-shards ... --shards 0,3,5-7` argv."""
    spec = argv[argv.index("--shards") + 1]
    out = []
    for item in spec.split(","):
        a, _, b = item.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


class FeaturizeWatch:
    """Finds the `orchard featurize-shards OUTPUT` processes below the given root processes (a
    Spark run's) and remembers every one seen: {pid: (shards, ancestors, argv)}; also the Python
    of each (its parent: the Python worker that ran it) in worker_pythons, and the Python of the
    driver (the process running orchard_spark.py below the roots) in driver_pythons."""

    def __init__(self, roots, output: Path):
        self.roots = set(roots)
        self.output = str(output)
        self.seen = {}
        self.worker_pythons = set()
        self.driver_pythons = set()

    def scan(self) -> list:
        """[(pid, shards, ancestors)] of the live ones now."""
        table = process_table()
        live = []
        for pid in table:
            argv = cmdline(pid)
            if len(argv) >= 2 and Path(argv[1]).name == APP.name:
                if self.roots.intersection(ancestors(pid, table)):
                    self.driver_pythons.add(argv[0])
                continue
            if len(argv) < 3 or not argv[0].endswith("orchard") or argv[1] != "featurize-shards":
                continue
            if self.output not in argv or is_zombie_or_gone(pid):
                continue
            up = ancestors(pid, table)
            if not self.roots.intersection(up):
                continue
            shards = shards_arg(argv)
            if pid not in self.seen:
                self.seen[pid] = (shards, up, argv)
                parent = cmdline(up[0])
                if parent:
                    self.worker_pythons.add(parent[0])
            live.append((pid, shards, up))
        return live

    def parts_done(self, shards) -> int:
        return sum((Path(self.output) / "features" / f"part-{s:05d}.parquet").exists() for s in shards)

    def mid_task(self):
        """(pid, shards, ancestors, done) of a live process that has published at least one of its
        shards and has at least two left (so a kill now lands mid-task), else None."""
        for pid, shards, up in self.scan():
            done = self.parts_done(shards)
            if 1 <= done <= len(shards) - 2:
                return pid, shards, up, done
        return None


def assert_ran_on(flavour: Flavour, watch: "FeaturizeWatch", info: dict):
    """The run's driver and the Python workers that ran orchard were the flavour's Python, its
    Spark wrote _SUCCESS, and every featurize-shards process was the shipped bundle's orchard."""
    assert watch.driver_pythons == {str(flavour.python)}, f"driver: {watch.driver_pythons}, not {flavour}"
    assert watch.worker_pythons == {str(flavour.python)}, f"Python workers: {watch.worker_pythons}, not {flavour}"
    assert info["engine"]["name"] == "spark" and info["engine"]["version"] == flavour.version, info["engine"]
    assert watch.seen, "no featurize-shards process seen"
    for shards, _, argv in watch.seen.values():
        assert argv[0].endswith("/orchard/bin/orchard"), argv


# ---------------------------------------------------------------------------------------------
# 1. local[2,4] through spark-submit, the bundle shipped with --archives, vs `orchard run`

@pytest.fixture(scope="module")
def local_run(flavour, model_env, images, bundle, tmp_path_factory):
    """spark-submit --master local[2,4] --archives BUNDLE#orchard run over the local folder
    (default tasks per core, --model the TF-slim folder); (OUTPUT, FeaturizeWatch, seconds)."""
    tmp = tmp_path_factory.mktemp(f"spark-local-{flavour.name}")
    out = tmp / "out"
    env = spark_env(model_env, local_dirs=tmp / "spark-local", flavour=flavour)
    env["PATH"] = without_orchard(env["PATH"])
    t0 = time.monotonic()
    _, watch = spark_submit(submit_cmd("local[2,4]", images, out, "--model", MODEL_DIR, "--shard-size", SHARD_SIZE,
                                       conf=["--archives", f"{bundle}#orchard"], flavour=flavour),
                            env, tmp / "spark-submit.log", output=out)
    return out, watch, time.monotonic() - t0


def test_local_mode_matches_orchard_run(flavour, orchard_bin, model_env, images, reference, local_run):
    (out, watch, seconds), ref = local_run, reference
    print(f"{flavour}: spark-submit local[2,4] in {seconds:.1f} s", flush=True)

    # The same parts, each holding the same rows in the same order, features bit for bit.
    for kind in TABLES:
        assert sorted(tables(out, kind)) == sorted(tables(ref, kind)), f"{kind}/: part names differ"
        assert len(tables(ref, kind)) == n_shards(images)
    for name, want in tables(ref, "features").items():
        got = tables(out, "features")[name]
        assert got.column("path").to_pylist() == want.column("path").to_pylist(), name
        assert got.column("label").to_pylist() == want.column("label").to_pylist(), name
        assert np.array_equal(floats_bits(got, "features"), floats_bits(want, "features")), \
            f"features/{name}: not bit-identical to orchard run's"
    assert_features_identical(out, ref)
    assert_each_input_once(out, inputs_of(images))
    # The driver's plan recorded the model, as `orchard run` does: a rerun with another is refused.
    recorded = pq.read_schema(out / "_manifest.parquet").metadata[b"model"]
    assert recorded.startswith(b"openvino:mobilenet_v2-") and \
        recorded == pq.read_schema(ref / "_manifest.parquet").metadata[b"model"], recorded

    # PCA: same k, ratios within 1e-9 (CSV and model), projections within 1e-6 relative.
    model, ref_model = (pq.read_table(d / "pca" / "model.parquet").to_pylist()[0] for d in (out, ref))
    assert model["k"] == ref_model["k"] >= 2
    assert np.max(np.abs(np.subtract(model["explained_variance_ratio"], ref_model["explained_variance_ratio"]))) <= 1e-9
    ratio, cumulative = read_ratio_csv(out / "pca" / "explained_variance.csv")
    ref_ratio, ref_cumulative = read_ratio_csv(ref / "pca" / "explained_variance.csv")
    assert len(ratio) == len(ref_ratio) == 1280
    assert np.max(np.abs(ratio - ref_ratio)) <= 1e-9 and np.max(np.abs(cumulative - ref_cumulative)) <= 1e-9
    got = {r["path"]: np.asarray(r["pca"], np.float64) for r in rows(out, "pca_features")}
    want = {r["path"]: np.asarray(r["pca"], np.float64) for r in rows(ref, "pca_features")}
    assert got.keys() == want.keys() and len(want) == PER_CLASS * len(CLASSES)
    worst = max(np.max(np.abs(got[p] - want[p])) / np.max(np.abs(want[p])) for p in want)
    assert all(len(v) == model["k"] for v in got.values())
    assert worst <= 1e-6, f"projections differ by {worst:.3g} relative"
    print(f"pca: k = {model['k']}, worst projection difference {worst:.3g} relative")

    # The layout of `orchard run`'s OUTPUT, file for file, the stages' records included (the report
    # reads them: the same image count and a throughput).
    files_of = lambda d: {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}  # noqa: E731
    assert files_of(out) == files_of(ref)
    feat = json.loads((out / "_featurize.json").read_text())
    assert feat["images"] == json.loads((ref / "_featurize.json").read_text())["images"] and feat["images_per_s"] > 0
    assert json.loads((out / "_pca.json").read_text())["k"] == model["k"]

    # _SUCCESS last (the newest file of OUTPUT), a Spark record; validate reads everything back.
    files = [p for p in out.rglob("*") if p.is_file()]
    success = out / "_SUCCESS"
    assert success in files
    newer = [str(p) for p in files if p.stat().st_mtime_ns > success.stat().st_mtime_ns]
    assert not newer, f"written after _SUCCESS: {newer}"
    info = json.loads(success.read_text())
    assert info["engine"]["name"] == "spark" and info["engine"]["master"] == "local[2,4]"
    assert info["counts"]["inputs"] == len(inputs_of(images)) and info["counts"]["errors"] == 2
    assert_ran_on(flavour, watch, info)
    assert sorted(s for shards, _, _ in watch.seen.values() for s in shards) == list(range(n_shards(images)))
    assert not [p for p in files if ".tmp" in p.name], "no temporary left"
    run_orchard(orchard_bin, model_env, "validate", out)


# ---------------------------------------------------------------------------------------------
# 2. run(spark, ...) in this process; one orchard worker SIGKILLed mid-task

@pytest.fixture
def spark_session(model_env, monkeypatch, tmp_path):
    """A SparkSession in this process (local[2,4]: 2 cores, 4 attempts per task); its JVM is
    ended afterwards."""
    for k, v in spark_env(model_env, local_dirs=tmp_path / "spark-local").items():
        if os.environ.get(k) != v:
            monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(REPO / "spark"))
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[2,4]").appName("orchard-test")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    try:
        yield spark
    finally:
        spark.stop()
        gateway = SparkContext._gateway
        if gateway is not None:  # the JVM this process started exits when its stdin closes
            proc = getattr(gateway, "proc", None)
            gateway.shutdown()
            if proc is not None:
                proc.stdin.close()
                proc.wait(60)
            SparkContext._gateway = None
            SparkContext._jvm = None


def failed_task_count(sc) -> int:
    tracker = sc.statusTracker()
    total = 0
    for job in tracker.getJobIdsForGroup(None):
        info = tracker.getJobInfo(job)
        for stage in (info.stageIds if info else []):
            s = tracker.getStageInfo(stage)
            total += s.numFailedTasks if s else 0
    return total


def test_in_process_run_survives_a_killed_worker(orchard_bin, images, reference, spark_session, tmp_path):
    from orchard_spark import run
    out = tmp_path / "out"
    result = {}

    def job():
        try:
            result["info"] = run(spark_session, str(images), str(out), model=str(MODEL_DIR), shard_size=SHARD_SIZE,
                                 orchard=str(orchard_bin), tasks_per_core=1)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            result["error"] = e

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    watch = FeaturizeWatch([os.getpid()], out)
    killed = None
    deadline = time.monotonic() + 480
    while thread.is_alive() and time.monotonic() < deadline:
        if killed is None:
            hit = watch.mid_task()
            if hit:
                os.kill(hit[0], signal.SIGKILL)
                killed = hit
                print(f"SIGKILLed orchard featurize-shards pid {hit[0]} (shards {hit[1]}) "
                      f"after {hit[3]} of its {len(hit[1])} shards", flush=True)
        else:
            watch.scan()  # keep recording: the retry's process
        time.sleep(0.05)
    thread.join(60)
    assert not thread.is_alive(), "run() did not finish in time"
    assert "error" not in result, f"run() raised: {result.get('error')!r}"
    assert killed is not None, f"no featurize-shards process was caught mid-task (seen: {watch.seen})"
    pid, shards = killed[0], killed[1]
    assert 1 <= killed[3] < len(shards), "the kill landed mid-task"

    # Spark retried the failed task: a failed attempt on record, and a new process on the same shards.
    assert failed_task_count(spark_session.sparkContext) >= 1
    retries = [p for p, (s, _, _) in watch.seen.items() if s == shards and p != pid]
    assert retries, f"no retry of shards {shards} seen (processes: {watch.seen})"

    assert_each_input_once(out, inputs_of(images))
    assert_features_identical(out, reference)
    for kind in TABLES:
        assert sorted(tables(out, kind)) == sorted(tables(reference, kind))
    assert result["info"]["engine"]["master"] == "local[2,4]"
    assert (out / "_SUCCESS").is_file()
    run_orchard(orchard_bin, dict(os.environ), "validate", out)


# ---------------------------------------------------------------------------------------------
# 3. standalone cluster on loopback; one worker lost mid-job

@pytest.fixture
def cluster(model_env, tmp_path):
    """A master and two 1-core, 1 GiB workers on 127.0.0.1; every process stopped afterwards."""
    with StandaloneCluster(workers=2, cores=1, memory="1g", env=model_env, workdir=tmp_path) as c:
        yield c


def test_standalone_cluster_survives_a_lost_worker(orchard_bin, model_env, images, reference, cluster, tmp_path):
    work = tmp_path / "driver"
    work.mkdir()
    log_path = tmp_path / "spark-submit.log"
    # A relative OUTPUT: the driver must hand the executors (other working directories) an absolute one.
    cmd = submit_cmd(cluster.url, images, "out", "--model", MODEL_DIR, "--shard-size", SHARD_SIZE,
                     "--orchard", orchard_bin, "--tasks-per-core", "1",
                     conf=["--deploy-mode", "client", "--conf", "spark.task.maxFailures=8",
                           "--conf", "spark.cores.max=2", "--conf", "spark.executor.memory=512m",
                           "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0"])
    out = work / "out"
    workers = {w.pid: i for i, w in enumerate(cluster.workers)}
    watch = FeaturizeWatch(workers, out)
    killed = None
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=spark_env(model_env, local_dirs=tmp_path / "spark-local"), cwd=work,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # When a featurize-shards process under one worker is mid-task, kill that worker's JVM and
        # its executor's JVM (a lost machine); then keep recording the processes of the run.
        while proc.poll() is None and time.monotonic() - t0 < 480:
            hit = watch.mid_task() if killed is None else watch.scan()
            if killed is None and hit:
                worker = next(workers[p] for p in hit[2] if p in workers)
                executors = cluster.executor_pids(worker)
                assert any(e in hit[2] for e in executors), "the orchard process runs under the worker's executor"
                pids = cluster.kill_worker(worker)
                killed = (worker, pids, hit)
                print(f"SIGKILLed worker {worker} (JVMs {pids}) while its featurize-shards pid {hit[0]} "
                      f"had done {hit[3]} of shards {hit[1]}", flush=True)
            time.sleep(0.1)
        rc = proc.wait(max(1, 600 - (time.monotonic() - t0)))
    finally:
        stop_group(proc)
    text = log_path.read_text(errors="replace")
    print(f"spark-submit on the standalone cluster: {time.monotonic() - t0:.1f} s, exit {rc}")
    assert rc == 0, f"spark-submit exited {rc}:\n{log_excerpt(text)}"
    assert killed is not None, "no featurize task was caught mid-task on a worker"
    worker, pids, (pid, shards, _, done) = killed
    assert len(pids) >= 2, "the worker's JVM and its executor's JVM were both killed"
    assert 1 <= done < len(shards)
    assert re.search(r"Lost executor \d+|ExecutorLostFailure|executor \d+ .*lost", text, re.I), \
        "the driver saw the executor go"
    survivor = cluster.workers[1 - worker].pid
    retried = [p for p, (s, up, _) in watch.seen.items() if s == shards and survivor in up]
    assert retried, f"shards {shards} were not redone under the surviving worker (seen {watch.seen})"
    assert len(cluster.alive_workers()) == 1

    assert_each_input_once(out, inputs_of(images))
    assert_features_identical(out, reference)
    info = json.loads((out / "_SUCCESS").read_text())
    assert info["engine"]["master"] == cluster.url
    run_orchard(orchard_bin, model_env, "validate", out)


# ---------------------------------------------------------------------------------------------
# 4. S3 in and out, the worker shipped as the bundle

@pytest.fixture(scope="module")
def bundle(orchard_bin):
    """tools/bundle.sh's archive with the TF-slim model prepared inside (the same folder and
    options as test_bundle.py, so one build serves both)."""
    if not BUNDLE_SH.is_file():
        pytest.skip(f"{BUNDLE_SH.relative_to(REPO)} is missing: no bundle to ship with --archives")
    p = subprocess.run(["bash", str(BUNDLE_SH), "--out", str(orchard_bin.parent / "bundle-test"),
                        "--model", str(MODEL_DIR)],
                       capture_output=True, text=True, timeout=2400)
    assert p.returncode == 0, f"bundle.sh exited {p.returncode}:\n{p.stderr[-3000:]}"
    archive = Path(p.stdout.strip().splitlines()[-1])
    assert archive.is_file() and archive.name.endswith(".tar.gz")
    return archive


def s3_download(server, bucket, prefix, dest: Path) -> dict:
    """Downloads every object under bucket/prefix/ into dest; returns {relative key: LastModified}."""
    s3 = server.client()
    stamps = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) + 1:]
            if not rel or rel.endswith("/"):  # a folder marker Arrow leaves after deleting (no data)
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(dest / rel))
            stamps[rel] = obj["LastModified"]
    return stamps


def test_s3_in_and_out_with_the_bundle(flavour, orchard_bin, images, local_run, bundle, tmp_path):
    from s3_servers import SeaweedFS
    local_out = local_run[0]
    with SeaweedFS() as server:
        server.create_bucket("orchard-in")
        server.create_bucket("orchard-out")
        uris = server.upload_tree(images, "orchard-in", "fruits")
        input_uri, output_uri = "s3://orchard-in/fruits", "s3://orchard-out/spark"
        aws_env = server.env()
        if flavour.isolated:
            # As on a cluster node with no region configured: none in the environment, no config
            # file, no instance metadata; orchard asks the store for the bucket's region.
            for k in ("AWS_REGION", "AWS_DEFAULT_REGION"):
                aws_env.pop(k)
            aws_env.update(AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_EC2_METADATA_DISABLED="true")
        env = spark_env(aws_env, local_dirs=tmp_path / "spark-local", flavour=flavour)
        env["ORCHARD_CACHE"] = str(tmp_path / "cache")  # nothing from the user's model cache
        # Only the bundle can provide the binary: no --orchard, and no orchard on PATH.
        env["PATH"] = without_orchard(env["PATH"])
        t0 = time.monotonic()
        text, watch = spark_submit(
            submit_cmd("local[2,4]", input_uri, output_uri, "--shard-size", SHARD_SIZE, "--tasks-per-core", "1",
                       conf=["--archives", f"{bundle}#orchard"], flavour=flavour),
            env, tmp_path / "spark-submit.log", output=output_uri)
        print(f"{flavour}: spark-submit local[2,4] on S3 in {time.monotonic() - t0:.1f} s", flush=True)
        assert "orchard-spark: done" in text
        run_orchard(orchard_bin, aws_env, "validate", output_uri)
        got = tmp_path / "got"
        stamps = s3_download(server, "orchard-out", "spark", got)

    # The driver and the tasks used the shipped bundle's binary and model (Spark unpacked it into
    # a folder named orchard: ./orchard/bin/orchard, ./orchard/share/orchard/model.ov).
    info = json.loads((got / "_SUCCESS").read_text())
    assert info["options"]["model"].endswith("/orchard/share/orchard/model.ov"), info["options"]
    assert_ran_on(flavour, watch, info)
    for shards, _, argv in watch.seen.values():
        assert argv[argv.index("--model") + 1] == str(Path(argv[0]).parents[1] / "share" / "orchard" / "model.ov"), argv
    assert sorted(s for shards, _, _ in watch.seen.values() for s in shards) == list(range(n_shards(images)))
    assert info["options"]["input"].rstrip("/") == input_uri
    assert max(stamps.values()) == stamps["_SUCCESS"], "_SUCCESS is the newest object"

    s3_key = lambda p: p.removeprefix(input_uri + "/")  # noqa: E731
    local_key = lambda p: str(Path(p).relative_to(images))  # noqa: E731
    assert sorted(map(s3_key, uris)) == sorted(map(local_key, inputs_of(images)))
    assert_each_input_once(got, [s3_key(u) for u in uris], key=s3_key)
    assert_features_identical(got, local_out, key=s3_key, ref_key=local_key)
    for kind in TABLES:
        assert sorted(tables(got, kind)) == sorted(tables(local_out, kind))
    # orchard fit removed the moments parts and their folder
    assert not [k for k in stamps if k.startswith("moments/")], sorted(stamps)
    model, ref_model = (pq.read_table(d / "pca" / "model.parquet").to_pylist()[0] for d in (got, local_out))
    assert model["k"] == ref_model["k"]
    assert np.max(np.abs(np.subtract(model["explained_variance_ratio"], ref_model["explained_variance_ratio"]))) <= 1e-9


# ---------------------------------------------------------------------------------------------
# 5. classify through spark-submit vs `orchard classify`

CLASSIFY_CLASSES = ["Apple Braeburn 1", "Banana 1", "Kiwi 1", "Lemon 1", "Orange 1", "Strawberry 1"]
TRAIN_PER_CLASS = 30    # the first 30 Test images of each class train the classifier
CLASSIFY_PER_CLASS = 8  # the last 8 (other photos of the same fruit) are classified
CLASSIFY_SHARD_SIZE = 8
TOP = 3


@pytest.fixture(scope="module")
def trained(orchard_bin, model_env, tmp_path_factory) -> Path:
    """TRAINED: `orchard run` then `orchard train --holdout 0.2` on 6 classes x 30 images."""
    tmp = tmp_path_factory.mktemp("spark-trained")
    copy_sample(tmp / "fruits", CLASSIFY_CLASSES, TRAIN_PER_CLASS)
    out = tmp / "out"
    run_orchard(orchard_bin, model_env, "run", tmp / "fruits", out, "--model", MODEL_DIR, "--quiet")
    run_orchard(orchard_bin, model_env, "train", out, "--holdout", "0.2")
    assert (out / "classifier" / "model.parquet").is_file()
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The last 8 Test images of each of the 6 classes (none of them trained on), plus Kiwi 1/corrupt.jpg."""
    import shutil
    root = tmp_path_factory.mktemp("spark-classify-in") / "photos"
    for c in CLASSIFY_CLASSES:
        (root / c).mkdir(parents=True)
        for f in sorted((TEST_IMAGES / c).glob("*.jpg"))[-CLASSIFY_PER_CLASS:]:
            shutil.copyfile(f, root / c / f.name)
    (root / "Kiwi 1" / "corrupt.jpg").write_bytes(b"this is not a JPEG\n" * 10)
    return root


@pytest.fixture(scope="module")
def classified(orchard_bin, model_env, trained, photos, tmp_path_factory) -> Path:
    """`orchard classify` on the photos: what the Spark driver's classify must reproduce."""
    out = tmp_path_factory.mktemp("spark-classify-ref") / "out"
    run_orchard(orchard_bin, model_env, "classify", photos, out, "--classifier", trained, "--top", TOP,
                "--model", MODEL_DIR, "--shard-size", CLASSIFY_SHARD_SIZE, "--quiet")
    return out


def test_classify_matches_orchard_classify(flavour, orchard_bin, model_env, trained, photos, classified, tmp_path):
    ref = classified
    out = tmp_path / "out"
    t0 = time.monotonic()
    text, watch = spark_submit(
        submit_cmd("local[2,4]", photos, out, "--classifier", trained, "--top", TOP, "--model", MODEL_DIR,
                   "--shard-size", CLASSIFY_SHARD_SIZE, "--orchard", orchard_bin, flavour=flavour,
                   command="classify"),
        spark_env(model_env, local_dirs=tmp_path / "spark-local", flavour=flavour), tmp_path / "spark-submit.log",
        output=out)
    print(f"{flavour}: spark-submit classify local[2,4] in {time.monotonic() - t0:.1f} s", flush=True)
    assert "orchard-spark: done" in text

    # The layout of `orchard classify`'s OUTPUT, file for file: predictions/ + errors/ parts, the
    # manifest, _classify.json; no features, no PCA, no _SUCCESS, no temporary.
    files_of = lambda d: {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}  # noqa: E731
    n_parts = -(-(len(CLASSIFY_CLASSES) * CLASSIFY_PER_CLASS + 1) // CLASSIFY_SHARD_SIZE)
    assert files_of(out) == files_of(ref)
    assert len(tables(ref, "predictions")) == len(tables(ref, "errors")) == n_parts
    claim, ref_claim = (json.loads((d / "_classify.json").read_text()) for d in (out, ref))
    assert claim["classifier"] == ref_claim["classifier"] and claim["embedding_model"] == ref_claim["embedding_model"]

    # The same rows in the same order in each part: labels, top labels, top probabilities (exact).
    for name, want in tables(ref, "predictions").items():
        got = tables(out, "predictions")[name]
        for column in ("path", "label", "top_labels", "top_probabilities"):
            assert got.column(column).to_pylist() == want.column(column).to_pylist(), f"predictions/{name}: {column}"
    predictions = rows(out, "predictions")
    assert all(len(r["top_labels"]) == len(r["top_probabilities"]) == TOP for r in predictions)
    assert all(set(r["top_labels"]) <= set(CLASSIFY_CLASSES) for r in predictions)
    errors = {r["path"]: r["error"] for r in rows(out, "errors")}
    assert errors == {r["path"]: r["error"] for r in rows(ref, "errors")}
    assert list(errors) == [str(photos / "Kiwi 1" / "corrupt.jpg")]

    # Every input exactly once, in predictions/ or errors/.
    seen = [r["path"] for r in predictions] + [r["path"] for r in rows(out, "errors")]
    assert sorted(seen) == inputs_of(photos)
    assert len(predictions) == len(CLASSIFY_CLASSES) * CLASSIFY_PER_CLASS

    # The tasks: classify runs of featurize-shards covering every shard once, by the flavour's Python.
    assert watch.driver_pythons == {str(flavour.python)}, watch.driver_pythons
    assert watch.worker_pythons == {str(flavour.python)}, watch.worker_pythons
    assert sorted(s for shards, _, _ in watch.seen.values() for s in shards) == list(range(n_parts))
    for _, _, argv in watch.seen.values():
        assert argv[argv.index("--classifier") + 1] == str(trained) and argv[argv.index("--top") + 1] == str(TOP), argv
