"""Benchmark: `orchard run` vs the same job on Spark (`spark-submit --master local[2]
spark/orchard_spark.py run`), and Orchard-on-Spark vs the notebooks' PySpark + Keras pipeline, on
the same images and master, in one invocation.

    .venv/bin/python bench/spark.py [--n 0 (all 23,619)] [--master local[2]] [--skip-reference]

Each run starts from a fresh OUTPUT with the model prepared beforehand (so no run pays for it).
images/s = images / wall seconds, start-up included (Spark's JVM and Python workers too). Prints the
ratio Spark / orchard run, the per-task overhead of the Spark run (process start + model load +
Parquet writes, i.e. task wall minus featurizing, as a share of task time, summed over the
featurize tasks: from _SUCCESS), checks that both OUTPUTs hold identical features, and, unless
--skip-reference, the reference's featurize-only run on the same master and the ratio.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize import REPO, SHARED, count_rows, machine, timed_run  # noqa: E402

TEST = SHARED / "data" / "fruits-360" / "Test"
MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"
VENV_BIN = REPO / ".venv" / "bin"


def features(out: Path) -> dict:
    import pyarrow.parquet as pq
    t = pq.read_table(sorted((out / "features").glob("part-*.parquet")))
    return dict(zip(t.column("path").to_pylist(), t.column("features").to_pylist()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=0, help="first N images in path order (0 = all)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--skip-reference", action="store_true")
    a = ap.parse_args()
    print(f"# bench/spark.py {' '.join(sys.argv[1:])}\n# {machine()}")
    orchard = REPO / "build" / "orchard"
    work = Path(tempfile.mkdtemp(prefix="orchard-bench-spark-"))
    env = {"ORCHARD_CACHE": str(work / "cache"), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    pt = work / "model.ov"
    r = timed_run("prepare", [str(orchard), "prepare-model", str(MODEL), "--out", str(pt)], work / "prep.log", env)
    assert r["rc"] == 0
    limit = ["--limit", str(a.n)] if a.n else []

    runs = [timed_run("orchard run", [str(orchard), "run", str(TEST), str(work / "local"), "--model", str(pt),
                                      "--quiet", *limit], work / "local.log", env),
            timed_run("spark-submit run", [str(VENV_BIN / "spark-submit"), "--master", a.master,
                                           "--conf", "spark.ui.enabled=false",
                                           str(REPO / "spark" / "orchard_spark.py"), "run", str(TEST),
                                           str(work / "spark"), "--model", str(pt), "--orchard", str(orchard),
                                           *limit], work / "spark.log", env)]
    if not a.skip_reference:
        runs.append(timed_run("reference featurize", [str(VENV_BIN / "python"),
                                                      str(REPO / "reference" / "featurize_spark.py"), str(TEST),
                                                      str(work / "reference"), "--master", a.master,
                                                      *(["--limit", str(a.n)] if a.n else [])],
                              work / "reference.log", env))
    print(f"\n{'run':<22} {'images':>7} {'wall s':>8} {'images/s':>9} {'peak RSS MiB':>13}")
    rate = {}
    for r, out in zip(runs, ["local", "spark", "reference"]):
        if r["rc"] != 0:
            sys.exit(f"{r['name']} failed: see {r['log']}")
        good, bad = count_rows(work / out)
        rate[r["name"]] = (good + bad) / r["wall"]
        print(f"{r['name']:<22} {good + bad:>7} {r['wall']:>8.1f} {rate[r['name']]:>9.1f} {r['peak_rss'] / 2**20:>13.0f}")
    success = json.loads((work / "spark" / "_SUCCESS").read_text())
    print(f"\nspark-submit run / orchard run: {rate['spark-submit run'] / rate['orchard run']:.3f}")
    print(f"Spark per-task overhead (process start + model load + writes) / featurize task time: "
          f"{100 * success['engine']['task_overhead_share']:.1f}% over {success['engine']['featurize_tasks']} tasks")
    print(f"Spark run timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in success["timings_s"].items()))
    if "reference featurize" in rate:
        print(f"Orchard-on-Spark (whole job) / reference featurize only, master {a.master}: "
              f"{rate['spark-submit run'] / rate['reference featurize']:.2f}x")
    fa, fb = features(work / "local"), features(work / "spark")
    same = fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    print(f"features of the two Orchard runs identical: {same} ({len(fa)} rows)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
