"""MLlib parity of `orchard pca`: the same features through `orchard pca` and through the notebooks'
PCA step in PySpark (reference/pca_spark.py) must give the same k for 0.90 and 0.95, explained-variance
ratios within 1e-6 (all components), components equal up to sign (|cos| > 1 - 1e-6, first k) and
projections equal up to sign within 1e-4 relative.

Environment:
  ORCHARD_BUILD          build folder holding the `orchard` binary (set by CTest).
  ORCHARD_FEATURES_DIR   optional: a real features folder (part-*.parquet, or an OUTPUT folder with
                         features/ inside), e.g. the Test set's; default: 4000 x 1280 synthetic rows.
  ORCHARD_SPARK_ARGS     optional extra arguments for reference/pca_spark.py (e.g. "--array-to-vector builtin").
"""
import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = os.environ.get("ORCHARD_BUILD")
REAL = os.environ.get("ORCHARD_FEATURES_DIR")
DIM = 1280


def synthetic_features(folder: Path, n=4000, parts=3, seed=2024):
    """Non-negative rows with a smoothly decaying spectrum, like averaged ReLU6 activations:
    a class-structured low-rank part with power-law factor scales plus small full-rank noise,
    clipped at 0. Written as part-00000.parquet... with the features/ schema."""
    rng = np.random.default_rng(seed)
    r, classes = 400, 30
    labels = rng.integers(0, classes, n)
    scale = np.arange(1, r + 1) ** -0.7
    centres = rng.normal(0, 1, (classes, r))
    w = rng.normal(0, 1, (r, DIM)) / np.sqrt(r)
    z = (0.8 * centres[labels] + rng.normal(0, 1, (n, r))) * scale
    base = rng.uniform(0.2, 1.2, DIM)
    x = np.maximum(base + 1.2 * (z @ w) + rng.normal(0, 0.05, (n, DIM)), 0).astype(np.float32)
    folder.mkdir(parents=True)
    for p, idx in enumerate(np.array_split(np.arange(n), parts)):
        table = pa.table({
            "path": pa.array([f"/fruits/class_{labels[i]:02d}/img_{i:05d}.jpg" for i in idx], pa.string()),
            "label": pa.array([f"class_{labels[i]:02d}" for i in idx], pa.string()),
            "features": pa.array(list(x[idx]), type=pa.list_(pa.float32())),
        })
        pq.write_table(table, folder / f"part-{p:05d}.parquet")


def k_for(cumulative, variance):
    """The notebooks' rule: smallest k with cumulative ratio >= variance."""
    hits = np.nonzero(np.asarray(cumulative) >= variance)[0]
    return int(hits[0]) + 1 if len(hits) else len(cumulative)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["component"]) for r in rows]),
            np.array([float(r["explained_variance_ratio"]) for r in rows]),
            np.array([float(r["cumulative"]) for r in rows]))


def run(cmd, **kw):
    print("$", " ".join(map(str, cmd)), flush=True)
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    if REAL:
        real = Path(REAL)
        return (real / "features") if (real / "features").is_dir() else real
    folder = tmp_path_factory.mktemp("synthetic") / "features"
    synthetic_features(folder)
    return folder


def orchard_pca(tmp_path_factory, features, *opts):
    if not BUILD:
        pytest.skip("ORCHARD_BUILD is not set (run through ctest, or export it)")
    exe = Path(BUILD) / "orchard"
    assert exe.is_file(), f"{exe} not found: build the orchard target first"
    out = tmp_path_factory.mktemp("orchard")
    (out / "features").symlink_to(features.resolve(), target_is_directory=True)
    run([exe, "pca", out, *opts])
    return out


@pytest.fixture(scope="module")
def orchard90(tmp_path_factory, features):
    return orchard_pca(tmp_path_factory, features, "--variance", "0.90")


@pytest.fixture(scope="module")
def orchard95(tmp_path_factory, features):
    return orchard_pca(tmp_path_factory, features, "--variance", "0.95")


@pytest.fixture(scope="module")
def mllib(tmp_path_factory, features):
    out = tmp_path_factory.mktemp("mllib")
    extra = shlex.split(os.environ.get("ORCHARD_SPARK_ARGS", ""))
    proc = run([sys.executable, ROOT / "reference" / "pca_spark.py", features, out, "--variance", "0.90", *extra],
               timeout=2400)
    print(proc.stdout[-2000:])
    return out


def read_model(out):
    t = pq.read_table(out / "pca" / "model.parquet")
    assert t.num_rows == 1
    assert t.schema.field("k").type == pa.int32()
    assert t.schema.field("mean").type == pa.list_(pa.float64())
    assert t.schema.field("components").type == pa.list_(pa.list_(pa.float64()))
    assert t.schema.field("eigenvalues").type == pa.list_(pa.float64())
    row = t.to_pylist()[0]
    return row["k"], np.array(row["mean"]), np.array(row["components"]), np.array(row["eigenvalues"])


def read_projection(folder, column):
    parts = sorted(Path(folder).glob("*.parquet")) if Path(folder).is_dir() else [Path(folder)]
    t = pa.concat_tables([pq.read_table(p, columns=["path", "label", column]) for p in parts])
    values = np.stack(t.column(column).to_numpy(zero_copy_only=False)).astype(np.float64)
    order = np.argsort(np.array(t.column("path").to_pylist(), dtype=object))
    return np.array(t.column("path").to_pylist(), dtype=object)[order], values[order]


def test_same_k_and_explained_variance(orchard90, orchard95, mllib):
    comp, ratio, cum = read_csv(orchard90 / "pca" / "explained_variance.csv")
    ref_comp, ref_ratio, ref_cum = read_csv(mllib / "explained_variance.csv")
    assert len(ratio) == DIM and list(comp) == list(range(1, DIM + 1))
    assert len(ref_ratio) == DIM
    np.testing.assert_allclose(cum, np.cumsum(ratio), rtol=0, atol=1e-12)
    diff = np.abs(ratio - ref_ratio)
    print(f"max |ratio - MLlib ratio| = {diff.max():.3e} (component {diff.argmax() + 1})")
    assert diff.max() <= 1e-6
    for out, variance in ((orchard90, 0.90), (orchard95, 0.95)):
        k = read_model(out)[0]
        ref_k = k_for(ref_cum, variance)
        print(f"variance {variance}: orchard k = {k}, MLlib k = {ref_k}")
        assert k == ref_k
        _, values = read_projection(out / "pca_features", "pca")
        assert values.shape[1] == k


def test_components_equal_up_to_sign(orchard90, mllib):
    k, mean, components, eigenvalues = read_model(orchard90)
    ref = np.load(mllib / "components.npy")
    assert components.shape == (k, DIM) and ref.shape == (k, DIM)
    cos = np.abs(np.sum(components * ref, axis=1)) / (np.linalg.norm(components, axis=1) * np.linalg.norm(ref, axis=1))
    print(f"min |cos| over {k} components = {cos.min():.15f} (component {cos.argmin() + 1})")
    assert np.all(cos > 1 - 1e-6)
    # The model's eigenvalues give the CSV's ratios, and its mean is the features' mean.
    _, ratio, _ = read_csv(orchard90 / "pca" / "explained_variance.csv")
    np.testing.assert_allclose(np.abs(eigenvalues) / np.abs(eigenvalues).sum(), ratio, rtol=1e-9, atol=1e-15)
    assert np.all(np.diff(eigenvalues) <= 0)


def test_model_mean_and_total_variance(orchard90, features):
    """Spark exposes no eigenvalues, so check them (MLlib's 1/(n-1) covariance) and the mean
    against numpy on the same features: sum of eigenvalues = sum of column variances (ddof=1)."""
    _, mean, _, eigenvalues = read_model(orchard90)
    parts = sorted(Path(features).glob("*.parquet"))
    x = np.concatenate([np.stack(pq.read_table(p, columns=["features"]).column("features")
                                 .to_numpy(zero_copy_only=False)) for p in parts]).astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    total = x.var(axis=0, ddof=1).sum()
    print(f"sum of eigenvalues {eigenvalues.sum():.12g}, numpy total variance {total:.12g}")
    assert abs(eigenvalues.sum() - total) <= 1e-9 * total


def test_projections_equal_up_to_sign(orchard90, mllib):
    k, _, components, _ = read_model(orchard90)
    signs = np.sign(np.sum(components * np.load(mllib / "components.npy"), axis=1))
    paths, ours = read_projection(orchard90 / "pca_features", "pca")
    ref_paths, theirs = read_projection(mllib / "projected.parquet", "pca")
    assert len(set(paths)) == len(paths), "duplicate paths in pca_features"
    assert list(paths) == list(ref_paths), "orchard and MLlib projected different rows"
    theirs = theirs * signs
    # Relative to each value, with a floor of 1 % of the component's largest |value| for values near 0.
    scale = np.maximum(np.abs(theirs), 0.01 * np.abs(theirs).max(axis=0))
    rel = np.abs(ours - theirs) / scale
    print(f"max relative projection difference = {rel.max():.3e}")
    assert rel.max() <= 1e-4
