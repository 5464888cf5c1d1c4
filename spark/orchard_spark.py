"""Orchard on Spark: the notebooks' job (images -> MobileNetV2 features -> PCA, Parquet) with Spark
scheduling native Orchard workers, as img2dataset's distributors do; and the distributed form of
`orchard classify` (a trained classifier applied to a photo store).

    spark-submit [spark options] spark/orchard_spark.py run INPUT OUTPUT [--model M] [--glob G]
        [--shard-size N] [--variance F | --k K] [--center] [--orchard PATH]
    spark-submit [spark options] spark/orchard_spark.py classify INPUT OUTPUT --classifier TRAINED
        [--model M] [--top K] [--glob G] [--shard-size N] [--orchard PATH]

or, from a notebook:  from orchard_spark import run, classify; run(spark, INPUT, OUTPUT, model=...);
classify(spark, INPUT, OUTPUT, classifier=TRAINED, model=...)

The driver only schedules and collects: `orchard plan` writes the manifest; the unfinished shards
are grouped into tasks (a few per core), each task runs one `orchard featurize-shards` process
(the model loaded once per process, spark.task.cpus threads); `orchard moments` tasks write the
PCA moments of their features parts under OUTPUT/moments/ and return the part's number; `orchard
fit` on the driver merges those parts, fits and removes them; `orchard project` runs as tasks; then
`orchard commit` validates, writes the report and _SUCCESS last.
classify: `orchard plan --classifier TRAINED` writes the manifest and claims OUTPUT for that
classifier (OUTPUT/_classify.json; an OUTPUT claimed by another classifier is refused); the
unfinished shards run as `orchard featurize-shards --classifier TRAINED --top K` tasks, each writing
OUTPUT/predictions/part-NNNNN.parquet (+ errors/): the OUTPUT of `orchard classify` (no PCA, no
commit). TRAINED is an OUTPUT of `orchard run` (or of run here) that `orchard train` finished.
Every task output is deterministic and published atomically, so Spark's retries and speculative
copies are safe, and a stopped job resumes on the same OUTPUT. INPUT and OUTPUT are local paths
(visible to every executor) or s3:// URIs; S3 is configured by the AWS environment of the driver
and executors (instance role or keys, AWS_ENDPOINT_URL_S3; no region needed: orchard finds each
bucket's, and AWS_REGION, when set, wins).

The worker binary: --orchard PATH, else the bundle shipped with `--archives BUNDLE#orchard`
(./orchard/bin/orchard), else `orchard` on PATH. The driver and the executors need nothing but
pyspark and this file (standard library only: no numpy, no pyarrow; Python 3.9+, Spark 3.5+): every
number is computed and every Parquet file read or written by the orchard binary.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

ARCHIVE_NAME = "orchard"  # the #name given to --archives
TASKS_PER_CORE = 3        # shards are grouped so that each core gets a few tasks (balance, retries)


# ---------------------------------------------------------------------------------------------
# The worker binary and how a task calls it (these run on executors as well as on the driver).

def find_orchard(explicit=None):
    """The orchard binary: explicit path, else the shipped bundle, else PATH; raises if none."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"--orchard {explicit}: not an executable file")
        return os.path.abspath(explicit)
    roots = [os.getcwd()]
    try:
        from pyspark import SparkFiles
        roots.append(SparkFiles.getRootDirectory())
    except Exception:  # noqa: BLE001 - no SparkContext here (a plain process)
        pass
    for root in roots:
        exe = os.path.join(root, ARCHIVE_NAME, "bin", "orchard")
        if os.access(exe, os.X_OK):
            return exe
    exe = shutil.which("orchard")
    if exe:
        return exe
    raise RuntimeError("no orchard binary: pass --orchard PATH, ship the bundle with "
                       "--archives orchard-VERSION-linux-x86_64.tar.gz#orchard, or put orchard on PATH")


def bundled_model(exe):
    """The prepared model a bundle carries next to its binary (share/orchard/model.ov), or None."""
    path = os.path.join(os.path.dirname(os.path.dirname(exe)), "share", "orchard", "model.ov")
    return path if os.path.isfile(path) else None


def call_orchard(exe, *args):
    """Runs orchard with args; returns its JSON stdout. Raises RuntimeError with its stderr's tail
    when it fails or dies, so that Spark retries the task."""
    cmd = [exe, *map(str, args)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        how = f"was killed by signal {-p.returncode}" if p.returncode < 0 else f"exited {p.returncode}"
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"orchard {args[0]} {how}: {tail}")
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def absolute(path):
    """A local INPUT/OUTPUT made absolute: tasks run in other working directories (an
    executor's); URIs (s3://...) as given."""
    return path if not path or "://" in str(path) else os.path.abspath(path)


def shard_list(shards):
    """'0,1,2,7' for a list of shard numbers."""
    return ",".join(str(s) for s in shards)


def groups_of(shards, n_groups):
    """shards cut into at most n_groups consecutive, near-equal groups (none empty)."""
    n_groups = max(1, min(n_groups, len(shards)))
    size, extra = divmod(len(shards), n_groups)
    out, i = [], 0
    for g in range(n_groups):
        j = i + size + (1 if g < extra else 0)
        out.append(shards[i:j])
        i = j
    return out


# The per-task functions. Each is the same CLI step the in-process run uses, on a group of shards.

def featurize_task(exe, output, model, threads, batch, shards, classifier=None, top=None):
    """Featurizes a group of shards in one orchard process (with classifier: classifies them,
    keeping the top classes, into predictions/); its stats plus task_seconds (the process's wall
    time, start-up and model loading included)."""
    args = ["featurize-shards", output, "--shards", shard_list(shards), "--threads", threads, "--quiet"]
    if classifier:
        args += ["--classifier", classifier]
        if top:
            args += ["--top", top]
    if model:
        args += ["--model", model]
    if batch:
        args += ["--batch", batch]
    t = time.monotonic()
    stats = call_orchard(exe, *args)
    stats["task_seconds"] = time.monotonic() - t
    return stats


def moments_task(exe, output, threads, shards):
    """Writes the PCA moments (count, sum, packed Gram) of a group's features parts as
    OUTPUT/moments/part-FIRST.parquet in one orchard process; returns FIRST, the part's number
    (the group's first shard), for `orchard fit --moments-parts`."""
    out = call_orchard(exe, "moments", output, "--shards", shard_list(shards), "--threads", threads)
    if "part" not in out:
        raise RuntimeError(f"orchard moments printed no part number ({out}): the orchard binary is older "
                           "than orchard_spark.py; ship a bundle of the same version")
    return int(out["part"])


def project_task(exe, output, threads, shards):
    return call_orchard(exe, "project", output, "--shards", shard_list(shards), "--threads", threads)


# ---------------------------------------------------------------------------------------------
# The driver.

class Progress:
    """Prints 'featurize: shards done/total, images, images/s' (or 'classify: ...') every few
    seconds from an accumulator the tasks add to when they finish."""

    def __init__(self, sc, total_shards, every_s=5.0, stage="featurize"):
        self.shards = sc.accumulator(0)
        self.images = sc.accumulator(0)
        self.total = total_shards
        self.stage = stage
        self.every_s = every_s
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def line(self):
        s = time.monotonic() - self.t0
        return (f"{self.stage}: {self.shards.value}/{self.total} shards, {self.images.value} images, "
                f"{self.images.value / s if s > 0 else 0:.1f} images/s")

    def _loop(self):
        while not self._stop.wait(self.every_s):
            log(self.line())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        log(self.line())


def log(msg):
    print(f"orchard-spark: {msg}", file=sys.stderr, flush=True)


def start(spark, orchard):
    """What a job needs of `spark` on the driver: (SparkContext, the driver's orchard binary,
    spark.task.cpus, task slots). Ships this module to the executors when it was imported."""
    sc = spark.sparkContext
    if __name__ != "__main__":  # imported (a notebook): executors need this module for the tasks
        try:
            sc.addPyFile(os.path.abspath(__file__))
        except Exception:  # noqa: BLE001 - already added by an earlier run in this session
            pass
    exe = find_orchard(orchard)
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    slots = max(1, sc.defaultParallelism // task_cpus)
    return sc, exe, task_cpus, slots


def plan_and_featurize(sc, exe, input, output, model, task_model, glob, shard_size, limit, orchard, batch,
                       task_cpus, slots, tasks_per_core, classifier=None, top=None):
    """`orchard plan` (with classifier: claiming OUTPUT for it), then the unfinished shards as
    `orchard featurize-shards` tasks (a few per slot), with progress lines. Returns (the plan,
    the shards already finished, the tasks' stats, plan seconds, tasks' seconds)."""
    stage = "classify" if classifier else "featurize"
    t = time.monotonic()
    plan_args = ["plan", input, output, "--glob", glob, "--shard-size", shard_size, "--limit", limit]
    if model:  # the manifest records its fingerprint: no task (nor a later rerun) mixes in another model
        plan_args += ["--model", model]
    if classifier:  # OUTPUT/_classify.json: no later run mixes in another classifier or --top
        plan_args += ["--classifier", classifier, "--top", top]
    plan = call_orchard(exe, *plan_args)
    finished = set(plan["finished"])
    todo = [s for s in range(plan["shards"]) if s not in finished]
    log(f"{plan['images']} images in {plan['shards']} shards, {len(finished)} already finished; "
        f"{slots} task slots of {task_cpus} cpu(s)")
    plan_seconds = time.monotonic() - t

    t = time.monotonic()
    stats = []
    if todo:
        groups = groups_of(todo, slots * tasks_per_core)
        with Progress(sc, len(todo), stage=stage) as progress:
            shards_acc, images_acc = progress.shards, progress.images

            def featurize_group(shards):
                task_exe = find_orchard(orchard)
                stats = featurize_task(task_exe, output, task_model or bundled_model(task_exe), task_cpus,
                                       batch, shards, classifier=classifier, top=top)
                shards_acc.add(len(shards))
                images_acc.add(stats.get("images", 0))
                return stats

            sc.setJobDescription(f"orchard {stage}: {len(todo)} shards in {len(groups)} tasks")
            stats = sc.parallelize(groups, len(groups)).map(featurize_group).collect()
    return plan, finished, stats, plan_seconds, time.monotonic() - t


def run(spark, input, output, model=None, glob="*.jpg", shard_size=1000, variance=0.90, k=None,
        center=False, orchard=None, limit=0, batch=None, tasks_per_core=TASKS_PER_CORE):
    """Runs the whole job on `spark` and returns the _SUCCESS record (a dict). Produces exactly
    the OUTPUT of `orchard run INPUT OUTPUT`; rerunning on the same OUTPUT resumes it."""
    sc, exe, task_cpus, slots = start(spark, orchard)
    input, output = absolute(input), absolute(output)
    task_model = model  # None: each task takes the model of the bundle it found (paths differ per node)
    model = model or bundled_model(exe)
    timings, t_all = {}, time.monotonic()

    plan, finished, featurize_stats, timings["plan"], timings["featurize"] = plan_and_featurize(
        sc, exe, input, output, model, task_model, glob, shard_size, limit, orchard, batch, task_cpus, slots,
        tasks_per_core)

    t = time.monotonic()
    parts = list(range(plan["shards"]))
    # Moments and projection are quick per part: one task (one process start) per slot.
    groups = groups_of(parts, slots)
    sc.setJobDescription(f"orchard pca moments: {len(parts)} parts")
    moment_parts = (sc.parallelize(groups, len(groups))
                    .map(lambda shards: moments_task(find_orchard(orchard), output, task_cpus, shards))
                    .collect())
    # fit merges OUTPUT/moments/part-N for each N, fits, writes pca/, then removes those parts.
    fit_args = ["fit", output, "--moments-parts", shard_list(sorted(moment_parts))]
    fit_args += ["--k", k] if k else ["--variance", variance]
    fit = call_orchard(exe, *(fit_args + (["--center"] if center else [])))
    log(f"pca: {fit['rows']} rows, k = {fit['k']} ({100 * fit['cumulative_explained_variance']:.2f}% of the variance)")
    timings["pca_fit"] = time.monotonic() - t

    t = time.monotonic()
    sc.setJobDescription(f"orchard pca projection: {len(parts)} parts")
    sc.parallelize(groups, len(groups)).map(
        lambda shards: project_task(find_orchard(orchard), output, task_cpus, shards)).collect()
    timings["pca_transform"] = time.monotonic() - t

    timings["total_before_commit"] = time.monotonic() - t_all
    images_done = sum(x.get("embedded", 0) + x.get("errors", 0) for x in featurize_stats)
    task_seconds = sum(x.get("task_seconds", 0) for x in featurize_stats)
    overhead = sum(x.get("task_seconds", 0) - x.get("featurize_seconds", 0) for x in featurize_stats)
    info = {"featurize": {"images": plan["images"], "shards": plan["shards"], "shards_skipped": len(finished),
                          "seconds": timings["featurize"],
                          "images_per_s": images_done / timings["featurize"] if timings["featurize"] else 0,
                          "engine": "spark"},
            "pca": {"rows": fit["rows"], "k": fit["k"], "cumulative_explained_variance": fit["cumulative_explained_variance"],
                    "fit_seconds": timings["pca_fit"], "transform_seconds": timings["pca_transform"]},
            "engine": {"name": "spark", "version": spark.version, "master": sc.master, "task_slots": slots,
                       "task_cpus": task_cpus, "featurize_tasks": len(featurize_stats),
                       # process start, library loading, model load, manifest: task wall - featurizing
                       "task_overhead_share": overhead / task_seconds if task_seconds else 0},
            "timings_s": timings,
            "options": {"input": plan["input"], "glob": glob, "shard_size": shard_size, "limit": limit,
                        "model": model, "variance": variance, "k": k, "center": center}}
    t = time.monotonic()
    counts = call_orchard(exe, "commit", output, "--info", json.dumps(info))  # validate, report, _SUCCESS
    timings["commit"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t_all
    log(f"done in {timings['total']:.1f}s: {output} ({counts.get('embedded')} embedded, "
        f"{counts.get('errors')} errors, k = {counts.get('k')})")
    return info


def classify(spark, input, output, classifier, model=None, top=5, glob="*.jpg", shard_size=1000, limit=0,
             orchard=None, batch=None, tasks_per_core=TASKS_PER_CORE):
    """Classifies every photo of INPUT with TRAINED's classifier on `spark`: the OUTPUT of
    `orchard classify INPUT OUTPUT --classifier TRAINED --top K` (predictions/part-NNNNN.parquet,
    errors/, and _classify.json, which `orchard plan` writes); rerunning on the same OUTPUT
    resumes it. Returns the counts and timings of this run (a dict); writes nothing else."""
    sc, exe, task_cpus, slots = start(spark, orchard)
    input, output, classifier = absolute(input), absolute(output), absolute(classifier)
    task_model = model  # None: each task takes the model of the bundle it found (paths differ per node)
    model = model or bundled_model(exe)
    timings, t_all = {}, time.monotonic()

    plan, finished, stats, timings["plan"], timings["classify"] = plan_and_featurize(
        sc, exe, input, output, model, task_model, glob, shard_size, limit, orchard, batch, task_cpus, slots,
        tasks_per_core, classifier=classifier, top=top)
    timings["total"] = time.monotonic() - t_all

    classified = sum(x.get("embedded", 0) for x in stats)
    errors = sum(x.get("errors", 0) for x in stats)
    task_seconds = sum(x.get("task_seconds", 0) for x in stats)
    overhead = sum(x.get("task_seconds", 0) - x.get("featurize_seconds", 0) for x in stats)
    info = {"classify": {"images": plan["images"], "shards": plan["shards"], "shards_skipped": len(finished),
                         "classified_this_run": classified, "errors_this_run": errors,
                         "seconds": timings["classify"],
                         "images_per_s": (classified + errors) / timings["classify"] if timings["classify"] else 0,
                         "engine": "spark"},
            "engine": {"name": "spark", "version": spark.version, "master": sc.master, "task_slots": slots,
                       "task_cpus": task_cpus, "classify_tasks": len(stats),
                       "task_overhead_share": overhead / task_seconds if task_seconds else 0},
            "timings_s": timings,
            "options": {"input": plan["input"], "output": plan["output"], "classifier": classifier, "top": top,
                        "glob": glob, "shard_size": shard_size, "limit": limit, "model": model}}
    log(f"done in {timings['total']:.1f}s: {output} ({classified} classified, {errors} errors this run; "
        f"{len(finished)} of {plan['shards']} shards were already finished)")
    return info


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="orchard_spark.py",
        description="Orchard on Spark: the same OUTPUT as `orchard run` (or `orchard classify`), "
                    "with shards as Spark tasks.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="featurize INPUT into OUTPUT, fit and apply PCA, validate, report")
    r.add_argument("input", metavar="INPUT", help="folder (visible to every executor) or s3://bucket/prefix")
    r.add_argument("output", metavar="OUTPUT", help="folder or s3://bucket/prefix; a rerun resumes it")
    r.add_argument("--model", help="weights or prepared .ov (local to every node, or s3://); "
                                   "default: the bundle's model.ov")
    r.add_argument("--glob", default="*.jpg", help="file-name pattern (default *.jpg)")
    r.add_argument("--shard-size", type=int, default=1000, help="images per shard/part (default 1000)")
    r.add_argument("--limit", type=int, default=0, help="only the first N files (default all)")
    r.add_argument("--batch", type=int, help="images per forward pass (default: orchard's)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--variance", type=float, default=0.90, help="PCA: keep this share of variance (0.90)")
    g.add_argument("--k", type=int, help="PCA: keep exactly K components")
    r.add_argument("--center", action="store_true", help="PCA: mean-centred scores")
    r.add_argument("--orchard", help="path of the orchard binary on every node")
    r.add_argument("--tasks-per-core", type=int, default=TASKS_PER_CORE, help="featurize tasks per core (3)")
    c = sub.add_parser("classify", help="classify every photo of INPUT with TRAINED's classifier: "
                                        "OUTPUT/predictions/ (+ errors/, _classify.json), as `orchard classify`")
    c.add_argument("input", metavar="INPUT", help="folder (visible to every executor) or s3://bucket/prefix")
    c.add_argument("output", metavar="OUTPUT", help="folder or s3://bucket/prefix; a rerun resumes it")
    c.add_argument("--classifier", metavar="TRAINED", required=True,
                   help="an OUTPUT holding pca/ and classifier/ (`orchard train`), visible to every node, or s3://")
    c.add_argument("--model", help="weights or prepared .ov (local to every node, or s3://); "
                                   "default: the bundle's model.ov")
    c.add_argument("--top", type=int, default=5, help="classes kept per photo, best first (default 5)")
    c.add_argument("--glob", default="*.jpg", help="file-name pattern (default *.jpg)")
    c.add_argument("--shard-size", type=int, default=1000, help="images per shard/part (default 1000)")
    c.add_argument("--limit", type=int, default=0, help="only the first N files (default all)")
    c.add_argument("--batch", type=int, help="images per forward pass (default: orchard's)")
    c.add_argument("--orchard", help="path of the orchard binary on every node")
    c.add_argument("--tasks-per-core", type=int, default=TASKS_PER_CORE, help="classify tasks per core (3)")
    a = p.parse_args(argv)

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName("orchard").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")  # the driver's own progress lines stay readable
    try:
        if a.command == "classify":
            classify(spark, a.input, a.output, a.classifier, model=a.model, top=a.top, glob=a.glob,
                     shard_size=a.shard_size, limit=a.limit, orchard=a.orchard, batch=a.batch,
                     tasks_per_core=a.tasks_per_core)
        else:
            run(spark, a.input, a.output, model=a.model, glob=a.glob, shard_size=a.shard_size,
                variance=a.variance, k=a.k, center=a.center, orchard=a.orchard, limit=a.limit, batch=a.batch,
                tasks_per_core=a.tasks_per_core)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
