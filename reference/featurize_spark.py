"""The "Fruits!" notebooks' featurization pipeline (PySpark + Pillow + Keras MobileNetV2), as the
reference Orchard is checked and benchmarked against.

    python reference/featurize_spark.py INPUT OUTPUT [--weights DIR] [--glob '*.jpg'] [--limit N]
        [--master local[*]] [--batch 64] [--repartition 20] [--tf-threads auto]

Reads INPUT (a folder; every file matching --glob, recursively) with Spark's binaryFile source,
labels each image with its parent folder's name, embeds it with a Scalar-Iterator pandas UDF that
builds MobileNetV2 once per partition from broadcast weights, and writes Parquet (path, label,
features array<float> of 1280) to OUTPUT. See reference/README.md for how each step maps to the
notebooks and where this script departs from them (weights, --limit, unreadable images).
"""
import argparse
import fnmatch
import io
import os
import shutil
import sys
import tempfile
import time
from typing import Iterator

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHTS = "/work/shared/models/mobilenet_v2_1.0_224_tfslim"
EMBEDDING_DIM = 1280


# ---------------------------------------------------------------------------------------------
# Input selection (--limit)
# ---------------------------------------------------------------------------------------------
def _spark_would_skip(name: str) -> bool:
    """Spark's InMemoryFileIndex ignores these names (hidden and _-prefixed files and folders)."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") \
        or name.endswith("._COPYING_")


def list_inputs(root: str, glob: str = "*.jpg") -> list[str]:
    """Every file under root whose name matches glob, as paths relative to root, sorted bytewise
    (the order Orchard sorts its listing in, so `[:N]` is Orchard's --limit N selection)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not _spark_would_skip(d)]
        for f in filenames:
            if not _spark_would_skip(f) and fnmatch.fnmatchcase(f, glob):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    out.sort(key=os.fsencode)
    return out


def make_limited_tree(root: str, rel_paths: list[str], dest: str) -> None:
    """Mirrors rel_paths of root under dest as symlinks (same Class/file.jpg structure), so Spark
    reads the chosen files through the notebook's own folder read."""
    for rel in rel_paths:
        link = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(root, rel), link)


# ---------------------------------------------------------------------------------------------
# Worker side: what the pandas UDF runs in Spark's Python workers
# ---------------------------------------------------------------------------------------------
def _configure_tf(threads: int) -> None:
    """Caps TensorFlow's thread pools in this worker (only possible before TF runs an op)."""
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # one model per partition retraces predict(); that is expected
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # a reused worker whose TF is already initialised keeps its settings (same ones)


def preprocess(content: bytes):
    """Raw file bytes -> 224x224x3 float32 in [-1, 1], as the notebooks do it (plus convert('RGB'))."""
    import numpy as np
    from PIL import Image
    from keras.applications.mobilenet_v2 import preprocess_input
    img = Image.open(io.BytesIO(content)).convert("RGB").resize((224, 224))
    arr = np.asarray(img, dtype=np.float32)
    return preprocess_input(arr)


def featurize_series(model, content_series):
    """pd.Series of image bytes -> pd.Series of float32[1280] (None where Pillow cannot read it)."""
    import numpy as np
    arrays, ok = [], []
    for i, content in enumerate(content_series):
        try:
            arrays.append(preprocess(content))
            ok.append(True)
        except Exception as e:  # the notebooks would crash here; the reference records a null
            print(f"featurize_spark: unreadable image in batch (row {i}): {type(e).__name__}: {e}",
                  file=sys.stderr)
            ok.append(False)
    preds = iter(model.predict(np.stack(arrays), verbose=0) if arrays else [])
    return pd.Series([next(preds).astype(np.float32).flatten() if good else None for good in ok])


def make_featurize_udf(bc_weights, tf_threads: int):
    """The Scalar-Iterator pandas UDF: one model per partition, weights from the broadcast."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def featurize_udf(content_series_iter: Iterator[pd.Series]) -> Iterator[pd.Series]:
        t0 = time.time()
        _configure_tf(tf_threads)
        from keras.applications import MobileNetV2
        t1 = time.time()
        model = MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg",
                            weights=None)
        model.set_weights(bc_weights.value)
        t2 = time.time()
        n = 0
        for content_series in content_series_iter:
            n += len(content_series)
            yield featurize_series(model, content_series)
        if os.environ.get("ORCHARD_REF_TIMING"):
            print(f"featurize_spark: worker {os.getpid()}: import {t1 - t0:.1f} s, model {t2 - t1:.1f} s, "
                  f"{n} images {time.time() - t2:.1f} s", file=sys.stderr)

    return featurize_udf


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _local_slots(master: str) -> int:
    """How many tasks run at once for a local master (local, local[N], local[*], local[N,F])."""
    n = os.cpu_count() or 1
    if master == "local":
        return 1
    if master.startswith("local[") and master.endswith("]"):
        inner = master[6:-1].split(",")[0]
        return n if inner == "*" else max(1, int(inner))
    return 1


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="folder of images (read recursively)")
    ap.add_argument("output", help="Parquet output folder (overwritten)")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="TF-slim .npy folder (default %(default)s)")
    ap.add_argument("--glob", default="*.jpg", help="pathGlobFilter on file names (default %(default)s)")
    ap.add_argument("--limit", type=int, default=0,
                    help="only the first N files in bytewise-sorted path order (Orchard's --limit)")
    ap.add_argument("--master", default="local[*]", help="Spark master (default %(default)s)")
    ap.add_argument("--batch", type=int, default=64,
                    help="spark.sql.execution.arrow.maxRecordsPerBatch (default %(default)s)")
    ap.add_argument("--repartition", type=int, default=20,
                    help="images.repartition(N) before the UDF, as the notebooks do (default "
                         "%(default)s; 0 keeps Spark's file partitions)")
    ap.add_argument("--tf-threads", default="auto",
                    help="TensorFlow intra-op threads per Python worker; auto = cores / concurrent tasks")
    ap.add_argument("--driver-memory", default="2g", help="spark.driver.memory (default %(default)s)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    input_root = os.path.abspath(args.input)
    output = os.path.abspath(args.output)
    if not os.path.isdir(input_root):
        print(f"featurize_spark: {args.input}: no such folder", file=sys.stderr)
        return 2
    slots = _local_slots(args.master)
    tf_threads = max(1, (os.cpu_count() or 1) // slots) if args.tf_threads == "auto" else int(args.tf_threads)

    # Workers are forked by Spark from this environment: same Python, same thread caps.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(tf_threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))

    # --limit: choose the files like Orchard does, mirror them into a temporary folder of symlinks
    # with the same Class/file.jpg structure, and let Spark read that folder exactly as the notebook
    # reads its INPUT. Paths are mapped back to INPUT before anything is written.
    tmp_tree = None
    read_root = input_root
    if args.limit > 0:
        chosen = list_inputs(input_root, args.glob)[: args.limit]
        tmp_tree = tempfile.mkdtemp(prefix="orchard-ref-input-")
        make_limited_tree(input_root, chosen, tmp_tree)
        read_root = tmp_tree
        print(f"featurize_spark: --limit {args.limit}: {len(chosen)} files (first in sorted order)")

    sys.path.insert(0, HERE)
    from keras_model import build_model  # noqa: E402
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, concat, element_at, lit, split, substring

    try:
        spark = (SparkSession.builder
                 .appName("orchard-reference")
                 .master(args.master)
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", args.driver_memory)
                 .config("spark.sql.parquet.writeLegacyFormat", "true")
                 .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch))
                 .getOrCreate())
        sc = spark.sparkContext
        sc.setLogLevel("ERROR")
        t_spark = time.time()

        model = build_model(args.weights)
        bc_weights = sc.broadcast(model.get_weights())
        del model

        images = (spark.read.format("binaryFile")
                  .option("pathGlobFilter", args.glob)
                  .option("recursiveFileLookup", "true")
                  .load(read_root))
        if tmp_tree is not None:
            prefix_tmp = "file:" + tmp_tree
            images = images.withColumn(
                "path", concat(lit("file:" + input_root), substring(col("path"), len(prefix_tmp) + 1, 1 << 30)))
        images = images.withColumn("label", element_at(split(images["path"], "/"), -2))
        if args.repartition > 0:
            images = images.repartition(args.repartition)

        featurize_udf = make_featurize_udf(bc_weights, tf_threads)
        features_df = images.select(col("path"), col("label"), featurize_udf("content").alias("features"))
        t_job = time.time()
        features_df.write.mode("overwrite").parquet(output)
        t_done = time.time()

        written = spark.read.parquet(output)
        n = written.count()
        n_null = written.filter(col("features").isNull()).count()
        n_outside = written.filter(~col("path").startswith("file:" + input_root + "/")).count()
        spark.stop()
    finally:
        if tmp_tree is not None:
            shutil.rmtree(tmp_tree, ignore_errors=True)
    if n_outside:
        print(f"featurize_spark: {n_outside} output paths are not under {input_root}", file=sys.stderr)
        return 1

    job_s = t_done - t_job
    total_s = t_done - t_start
    print(f"featurize_spark: {n} images ({n_null} unreadable -> null features) -> {output}")
    print(f"featurize_spark: master={args.master} tasks={slots} tf_intra_op_threads={tf_threads} "
          f"arrow_batch={args.batch} repartition={args.repartition}")
    print(f"featurize_spark: start-up (Spark {t_spark - t_start:.1f} s, then weights + broadcast) "
          f"{t_job - t_start:.1f} s, job {job_s:.1f} s, total {total_s:.1f} s")
    print(f"featurize_spark: {n / job_s:.2f} images/s (job), {n / total_s:.2f} images/s (end to end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
