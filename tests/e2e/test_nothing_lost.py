"""Nothing lost, nothing mixed: an image is embedded or an error row for its own bytes, a rerun never
mixes two models or un-completes a finished OUTPUT, PCA never fits a subset, the CSV holds the
float32 values exactly. Each test drives the real binary on real Fruits-360 images (local disk;
the S3 variants are in test_s3.py)."""
import csv
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import MODEL_DIR, TEST_IMAGES, copy_sample, run_orchard

CLASSES = ["Banana 1", "Kiwi 1"]


def read_dir(folder: Path) -> pa.Table:
    parts = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


@pytest.fixture(scope="module")
def finished(orchard_bin, model_env, tmp_path_factory):
    """`orchard run` over 2 classes x 5 images in shards of 4, with --csv: (input, OUTPUT, csv)."""
    root = tmp_path_factory.mktemp("lost")
    src = root / "in"
    copy_sample(src, CLASSES, 5)
    out, csv_file = root / "out", root / "pca.csv"
    run_orchard(orchard_bin, model_env, "run", src, out, "--model", MODEL_DIR, "--shard-size", 4, "--k", 3,
                "--csv", csv_file, "--quiet")
    return src, out, csv_file


def test_a_rejected_rerun_leaves_a_finished_output_finished(orchard_bin, model_env, finished):
    src, out, _ = finished
    before = (out / "_SUCCESS").read_bytes()
    rejected = [
        ("featurize", src, out, "--model", MODEL_DIR, "--shard-size", 5),  # not the options it was started with
        ("run", src, out, "--model", MODEL_DIR, "--shard-size", 4, "--variance", 0),  # refused before any work
        ("pca", out, "--variance", 0),
        ("fit", out, "--moments-parts", "0"),  # no such moments file
    ]
    for args in rejected:
        p = run_orchard(orchard_bin, model_env, *args, check=False)
        assert p.returncode != 0, args
        assert (out / "_SUCCESS").is_file(), f"`orchard {' '.join(map(str, args))}` removed _SUCCESS: {p.stderr}"
        assert (out / "_SUCCESS").read_bytes() == before
    run_orchard(orchard_bin, model_env, "validate", out)


def test_a_rerun_with_another_model_is_refused(orchard_bin, model_env, finished, tmp_path):
    src, out, _ = finished
    other = tmp_path / "weights"
    shutil.copytree(MODEL_DIR, other)
    w = np.load(other / "Conv_1_weights.npy")
    np.save(other / "Conv_1_weights.npy", (w * 1.001).astype(w.dtype))  # another model, same shapes
    p = run_orchard(orchard_bin, model_env, "featurize", src, out, "--model", other, "--shard-size", 4, check=False)
    assert p.returncode == 1
    assert "another model" in p.stderr and "new OUTPUT" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    # The distributed steps check it too: a task given another model refuses to add its vectors.
    (out / "features" / "part-00001.parquet").rename(out / "part-00001.saved")
    try:
        p = run_orchard(orchard_bin, model_env, "featurize-shards", out, "--shards", "1", "--model", other, check=False)
        assert p.returncode == 1 and "another model" in p.stderr, p.stderr
        assert not (out / "features" / "part-00001.parquet").exists()
    finally:
        (out / "part-00001.saved").rename(out / "features" / "part-00001.parquet")
    # The original model, given as a file:// URI, resumes.
    model_file = run_orchard(orchard_bin, model_env, "prepare-model", MODEL_DIR, "--out", tmp_path / "m.ov").stdout.strip()
    run_orchard(orchard_bin, model_env, "featurize", src, out, "--model", "file://" + model_file, "--shard-size", 4)


def test_pca_refuses_an_incomplete_output(orchard_bin, model_env, tmp_path):
    src = tmp_path / "in"
    copy_sample(src, CLASSES, 5)  # 10 images, 3 shards of 4
    out = tmp_path / "out"
    run_orchard(orchard_bin, model_env, "plan", src, out, "--shard-size", 4)
    run_orchard(orchard_bin, model_env, "featurize-shards", out, "--shards", "0,2", "--model", MODEL_DIR, "--quiet")
    p = run_orchard(orchard_bin, model_env, "pca", out, "--k", 2, check=False)
    assert p.returncode == 1, "a PCA over 2 of 3 shards must be refused"
    assert "1 of 3 shards" in p.stderr and "part-00001.parquet" in p.stderr and "orchard featurize" in p.stderr
    assert not (out / "pca").exists() and not (out / "pca_features").exists()


def test_inputs_changed_after_planning_are_error_rows(orchard_bin, model_env, tmp_path):
    src = tmp_path / "in"
    images = copy_sample(src, CLASSES, 5)
    out = tmp_path / "out"
    run_orchard(orchard_bin, model_env, "plan", src, out, "--shard-size", 4)
    deleted, grown, shrunk = images[1], images[5], images[9]
    deleted.unlink()
    grown.write_bytes(grown.read_bytes() + b"\0" * 5000)
    shrunk.write_bytes(shrunk.read_bytes()[:2000])
    p = run_orchard(orchard_bin, model_env, "featurize", src, out, "--model", MODEL_DIR, "--shard-size", 4, "--quiet",
                    check=False)
    assert p.returncode == 0, p.stderr
    errors = read_dir(out / "errors").to_pydict()
    why = dict(zip(errors["path"], errors["error"]))
    assert set(why) == {str(deleted), str(grown), str(shrunk)}, why
    assert all(w.startswith("changed since planning") for w in why.values()), why
    assert "no longer exists" in why[str(deleted)]
    assert "now" in why[str(grown)] and "now 2000" in why[str(shrunk)], why
    assert read_dir(out / "features").num_rows == 7
    run_orchard(orchard_bin, model_env, "validate", out)


def test_csv_holds_the_float32_values_exactly(finished):
    _, out, csv_file = finished
    pca = read_dir(out / "pca_features").to_pydict()
    want = {p: (l, np.asarray(v, dtype=np.float32)) for p, l, v in zip(pca["path"], pca["label"], pca["pca"])}
    with open(csv_file, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label", "pca_1", "pca_2", "pca_3"]
    assert len(rows) - 1 == len(want), "each row once"
    for path, label, *values in rows[1:]:
        assert want[path][0] == label
        got = np.asarray([np.float32(v) for v in values], dtype=np.float32)
        assert np.array_equal(got, want[path][1]), f"{path}: {values} vs {want[path][1].tolist()}"
        assert all(len(v) <= 16 for v in values), "the shortest round-trip text, not 17 digits"


def test_shard_lists_are_strict(orchard_bin, model_env, finished):
    _, out, _ = finished
    for bad in ("1x", "0-1-2", "0,a"):  # within the 3 shards, so only the syntax is wrong
        p = run_orchard(orchard_bin, model_env, "featurize-shards", out, "--shards", bad, "--model", MODEL_DIR, check=False)
        assert p.returncode == 1 and "shard list" in p.stderr and bad.split(",")[-1] in p.stderr, (bad, p.stderr)


def test_usage_errors_exit_2_with_the_usage_line(orchard_bin, model_env, tmp_path):
    for args, usage in ((["featurize"], "orchard featurize"), (["pca", tmp_path, "--variance", "2"], "orchard pca"),
                        (["run", tmp_path, tmp_path, "--no-such-flag"], "orchard run"), ([], "orchard"),
                        (["fit", tmp_path], "orchard fit"),
                        (["fit", tmp_path, "--moments", "m.parquet", "--moments-parts", "0"], "orchard fit")):
        p = run_orchard(orchard_bin, model_env, *args, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert f"Usage: {usage}" in p.stderr and f"Run `{usage} --help`" in p.stderr, p.stderr
    assert run_orchard(orchard_bin, model_env, "featurize", "--help").returncode == 0


def _limit_address_space(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _runs_within(orchard_bin, env, args, limit) -> bool:
    p = subprocess.run([str(orchard_bin), *map(str, args)], env=env, capture_output=True, text=True,
                       preexec_fn=_limit_address_space(limit), timeout=300)
    return p.returncode == 0


def test_out_of_memory_fails_the_shard_never_an_error_row(orchard_bin, model_env, tmp_path):
    """Out of memory is the machine's problem, not the image's: the shard fails (exit 1, no part),
    so a rerun with more memory embeds the image, instead of a permanent "bad image" row."""
    env = dict(model_env)
    small = tmp_path / "small"
    copy_sample(small, CLASSES[:1], 2)
    model_file = run_orchard(orchard_bin, env, "prepare-model", MODEL_DIR, "--out", tmp_path / "m.ov").stdout.strip()
    base = ["--model", model_file, "--threads", 1, "--io-depth", 1, "--quiet"]
    # The least address space `featurize` needs for ordinary images (binary search, 16 MiB steps).
    lo, hi = 256 << 20, 16 << 30
    assert _runs_within(orchard_bin, env, ["featurize", small, tmp_path / "probe-hi", *base], hi)
    n = 0
    while hi - lo > 16 << 20:
        mid = (lo + hi) // 2
        n += 1
        (lo, hi) = (lo, mid) if _runs_within(orchard_bin, env, ["featurize", small, tmp_path / f"probe{n}", *base], mid) \
            else (mid, hi)
    # A valid 12,000 x 12,000 photo (below Pillow's decompression-bomb limit) needs 432 MB decoded.
    src = tmp_path / "in"
    copy_sample(src, CLASSES[:1], 2)
    Image.new("RGB", (12000, 12000), (200, 180, 40)).save(src / CLASSES[0] / "zz_big.jpg", quality=50)
    out = tmp_path / "out"
    limit = hi + (160 << 20)
    p = subprocess.run([str(orchard_bin), "featurize", str(src), str(out), "--shard-size", "2", *map(str, base)],
                       env=env, capture_output=True, text=True, preexec_fn=_limit_address_space(limit), timeout=300)
    assert p.returncode == 1, f"exit {p.returncode}; {p.stderr}"
    assert (out / "features" / "part-00000.parquet").exists(), "the shard of ordinary images is done"
    assert not (out / "features" / "part-00001.parquet").exists(), "the big image's shard is not published"
    errors = read_dir(out / "errors")
    assert errors is None or errors.num_rows == 0, f"no error row for an image that is fine: {errors.to_pydict()}"
    # With enough memory the rerun embeds it.
    run_orchard(orchard_bin, env, "featurize", src, out, "--shard-size", 2, *base)
    assert read_dir(out / "features").num_rows == 3


def test_concurrent_prepare_model_runs_never_clobber_each_other(orchard_bin, model_env, tmp_path):
    """Every Spark executor of a node may run `prepare-model` at once: each writes under its own
    temporary name, so none fails and default.ov is always one whole model (the previous build's
    fixed default.pt.tmp failed 3 of 18 such runs)."""
    env = dict(model_env, ORCHARD_CACHE=str(tmp_path / "cache"))
    failures = []
    for _ in range(3):
        procs = [subprocess.Popen([str(orchard_bin), "prepare-model", str(MODEL_DIR)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            if p.returncode != 0:
                failures.append(err.strip())
    assert not failures, failures
    assert not [f for f in (tmp_path / "cache").iterdir() if ".tmp" in f.name], "no temporary left"
    src = tmp_path / "in"
    copy_sample(src, CLASSES[:1], 2)
    run_orchard(orchard_bin, env, "featurize", src, tmp_path / "out", "--quiet")  # default.ov loads


def test_an_earlier_engines_model_never_loads(orchard_bin, model_env, tmp_path):
    """Prepared models are versioned by engine: an earlier Orchard's LibTorch .pt (passed, or left
    as the cache's default.pt) is refused with the way forward, and a cached file that is not a
    whole prepared model under the current name is prepared again, never loaded."""
    import zipfile
    env = dict(model_env, ORCHARD_CACHE=str(tmp_path / "cache"))
    src = tmp_path / "in"
    copy_sample(src, CLASSES[:1], 2)
    old = tmp_path / "cache" / "default.pt"
    old.parent.mkdir()
    with zipfile.ZipFile(old, "w") as z:  # what LibTorch's torch.jit.save writes: a zip
        z.writestr("archive/extra/orchard_fingerprint", "libtorch:mobilenet_v2-g2-0123456789abcdef")
    for args in (["--model", str(old)], []):
        p = subprocess.run([str(orchard_bin), "featurize", str(src), str(tmp_path / "out"), "--quiet", *args],
                           env=env, capture_output=True, text=True)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert "default.pt: a LibTorch model prepared by an earlier Orchard" in p.stderr and \
            "orchard prepare-model" in p.stderr, p.stderr
    assert not (tmp_path / "out" / "features").exists()
    cached = Path(run_orchard(orchard_bin, env, "prepare-model", MODEL_DIR).stdout.strip())
    assert cached.parent == tmp_path / "cache" and "-openvino" in cached.name and cached.suffix == ".ov", cached
    whole = cached.read_bytes()
    assert whole.startswith(b"orchard prepared model 1\nopenvino:mobilenet_v2-g3-"), whole[:80]
    cached.write_bytes(whole[: len(whole) // 2])  # as a full disk or a killed copy could leave it
    again = Path(run_orchard(orchard_bin, env, "prepare-model", MODEL_DIR).stdout.strip())
    assert again == cached and again.read_bytes() == whole, "prepared again, the same bytes"
    run_orchard(orchard_bin, env, "featurize", src, tmp_path / "out", "--quiet")  # default.ov loads
    # A prepared file that is not what its header says is refused in one line, never half loaded.
    magic, fingerprint, sizes, rest = whole.split(b"\n", 3)
    for name, data in {"negative": b"\n".join([magic, fingerprint, b"-1 5", rest]),
                       "huge": b"\n".join([magic, fingerprint, b"99999999999999999999 5", rest]),
                       "trailing": whole + b"x", "cut": whole[:100]}.items():
        bad = tmp_path / f"{name}.ov"
        bad.write_bytes(data)
        p = subprocess.run([str(orchard_bin), "featurize", str(src), str(tmp_path / name), "--model", str(bad), "--quiet"],
                           env=env, capture_output=True, text=True)
        assert p.returncode == 1 and "a damaged prepared model" in p.stderr and len(p.stderr.splitlines()) == 1, \
            (name, p.returncode, p.stderr)
