#!/usr/bin/env python3
"""The notebooks' PCA step in PySpark MLlib, for parity tests and benchmarks.

Reads a features Parquet folder (path: string, label: string, features: array<float>), turns the
array into an MLlib vector with a UDF as the notebooks do, fits pyspark.ml.feature.PCA, and writes:

  OUT_DIR/explained_variance.csv   component,explained_variance_ratio,cumulative (component from 1)
  OUT_DIR/components.npy           k x d float64 (row i = principal component i+1, MLlib's sign)
  OUT_DIR/projected.parquet/       path, label, pca: array<double>  (PCAModel.transform: pc^T x, no centring)
  OUT_DIR/summary.json             k, variance, timings

Without --k it first fits PCA(k=d) to get every explained-variance ratio, picks the smallest k whose
cumulative ratio reaches --variance (the notebooks' np.argmax(cumsum >= v) + 1), then fits PCA(k)
and transforms with it, as the notebooks do. With --k K it fits PCA(k=K) once (the CSV then has K
rows; MLlib's ratios are already normalised by the total variance).

Usage: pca_spark.py INPUT_FEATURES_DIR OUT_DIR [--k K | --variance F] [--array-to-vector udf|builtin]
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features_dir")
    ap.add_argument("out_dir")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--k", type=int, help="number of components (fit once)")
    g.add_argument("--variance", type=float, default=0.90, help="pick k for this explained variance (default 0.90)")
    ap.add_argument("--array-to-vector", choices=["udf", "builtin"], default="udf",
                    help="udf: the notebooks' Python UDF returning Vectors.dense (default); "
                         "builtin: pyspark.ml.functions.array_to_vector (faster, same values)")
    ap.add_argument("--master", default=os.environ.get("SPARK_MASTER", "local[*]"))
    ap.add_argument("--driver-memory", default=os.environ.get("SPARK_DRIVER_MEMORY", "6g"))
    args = ap.parse_args(argv)
    if args.k is None and not (0 < args.variance <= 1):
        ap.error("--variance must be in (0, 1]")

    # Spark's Python workers must run this interpreter (the venv with numpy), not the system one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master(args.master).appName("orchard-reference-pca")
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.sql.parquet.enableVectorizedReader", "true")
             .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    os.makedirs(args.out_dir, exist_ok=True)

    df = spark.read.parquet(args.features_dir)
    if args.array_to_vector == "udf":
        to_vector = F.udf(lambda a: Vectors.dense(a), VectorUDT())  # as in the notebooks
    else:
        to_vector = array_to_vector
    df = df.withColumn("features_vec", to_vector("features")).select("path", "label", "features_vec")
    df.cache()
    t0 = time.perf_counter()
    n = df.count()
    t_load = time.perf_counter() - t0
    d = len(df.first()["features_vec"])
    print(f"rows {n}, dimension {d}, load+convert {t_load:.2f} s", flush=True)

    timings = {"load_s": t_load}
    if args.k is None:
        t0 = time.perf_counter()
        full = PCA(k=d, inputCol="features_vec", outputCol="pca_vec").fit(df)
        timings["fit_all_s"] = time.perf_counter() - t0
        ratios = np.asarray(full.explainedVariance.toArray(), dtype=np.float64)
        cumulative = np.cumsum(ratios)
        hits = np.nonzero(cumulative >= args.variance)[0]
        k = int(hits[0]) + 1 if len(hits) else d
        print(f"fit PCA(k={d}) {timings['fit_all_s']:.2f} s; k = {k} for variance {args.variance}", flush=True)
    else:
        k = args.k
    t0 = time.perf_counter()
    model = PCA(k=k, inputCol="features_vec", outputCol="pca_vec").fit(df)
    timings["fit_s"] = time.perf_counter() - t0
    print(f"fit PCA(k={k}) {timings['fit_s']:.2f} s", flush=True)
    if args.k is not None:
        ratios = np.asarray(model.explainedVariance.toArray(), dtype=np.float64)
        cumulative = np.cumsum(ratios)

    with open(os.path.join(args.out_dir, "explained_variance.csv"), "w") as f:
        f.write("component,explained_variance_ratio,cumulative\n")
        for i, (r, c) in enumerate(zip(ratios, cumulative)):
            f.write(f"{i + 1},{float(r)!r},{float(c)!r}\n")
    np.save(os.path.join(args.out_dir, "components.npy"), model.pc.toArray().T.copy())  # pc is d x k

    t0 = time.perf_counter()
    out = model.transform(df).select("path", "label", vector_to_array("pca_vec", "float64").alias("pca"))
    out.write.mode("overwrite").parquet(os.path.join(args.out_dir, "projected.parquet"))
    timings["transform_s"] = time.perf_counter() - t0
    print(f"transform + write {timings['transform_s']:.2f} s", flush=True)

    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump({"rows": n, "dim": d, "k": k, "variance": None if args.k else args.variance,
                   "array_to_vector": args.array_to_vector, "timings_s": timings,
                   "spark": spark.version}, f, indent=1)
    print(json.dumps({"k": k, **timings}), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
