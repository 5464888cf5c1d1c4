"""Recognition: `orchard train` on a finished OUTPUT and `orchard classify` of photo stores.

- train: the holdout accuracy of a 10-class sample clears a floor, on blocks of frames the fit never
  saw; metrics.json says what it measured; the same seed gives the same model; an unfinished
  OUTPUT is refused with the way forward; `--on features` trains too.
- classify: predictions/ parts (path, label, top_labels, top_probabilities) plus error rows, on a
  local disk and on a loopback S3 store (SeaweedFS), each resumed after SIGKILL with every input
  exactly once and the same rows as an uninterrupted run; a model, a PCA or a classifier other
  than the one TRAINED was made with is refused (classify and serve), naming the fix.
"""
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import MODEL_DIR, TEST_IMAGES, copy_sample, run_orchard

CLASSES = ["Banana 1", "Kiwi 1", "Apple Red 1", "Lemon 1", "Strawberry 1", "Avocado 1", "Eggplant 1", "Pear 1",
           "Cherry 1", "Pineapple 1"]
PER_CLASS_TO_CLASSIFY = 24   # photos per class in the classify INPUT
SHARD = 20                   # images per shard of a classify run (so a kill lands midway)
IN, OUT = "recognition-in", "recognition-out"


# ---- helpers ----

def predictions(folder: Path) -> pa.Table:
    """Every predictions part of a classify OUTPUT, sorted by path."""
    parts = sorted((folder / "predictions").glob("part-*.parquet"))
    assert parts, f"{folder}/predictions holds no part"
    return pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("path")


def errors(folder: Path) -> pa.Table:
    parts = sorted((folder / "errors").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else pa.table({"path": [], "error": []})


def rows_of(table: pa.Table, strip: str = "") -> list:
    """(relative path, label, top_labels, top_probabilities) of each row."""
    return [(p.removeprefix(strip), l, tuple(t), tuple(q)) for p, l, t, q in
            zip(*(table[c].to_pylist() for c in ("path", "label", "top_labels", "top_probabilities")))]


def kill_after_parts(args, env, count_parts, want=2, timeout=300) -> int:
    """Starts orchard with args, SIGKILLs it once count_parts() >= want; returns the parts then."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and count_parts() < want:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return count_parts()


def classify_args(input, output, trained, *extra):
    return ["classify", input, output, "--classifier", trained, "--model", MODEL_DIR, "--shard-size", SHARD,
            "--threads", 1, "--quiet", *extra]


# ---- fixtures ----

@pytest.fixture(scope="module")
def trained(orchard_bin, model_env, tmp_path_factory) -> Path:
    """Every Test photo of CLASSES through `orchard run`, then `orchard train` with the defaults."""
    images = tmp_path_factory.mktemp("recognition-images") / "fruits"
    copy_sample(images, CLASSES, 10_000)
    out = tmp_path_factory.mktemp("recognition-trained") / "out"
    run_orchard(orchard_bin, model_env, "run", images, out, "--model", MODEL_DIR, "--quiet")
    run_orchard(orchard_bin, model_env, "train", out)
    return out


@pytest.fixture(scope="module")
def to_classify(tmp_path_factory) -> Path:
    """A photo store to classify: PER_CLASS_TO_CLASSIFY photos of each class, and one corrupt file."""
    root = tmp_path_factory.mktemp("recognition-input") / "photos"
    copy_sample(root, CLASSES, PER_CLASS_TO_CLASSIFY)
    (root / "Banana 1" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


@pytest.fixture(scope="module")
def reference(orchard_bin, model_env, trained, to_classify, tmp_path_factory) -> Path:
    """An uninterrupted classify of to_classify on local disk."""
    out = tmp_path_factory.mktemp("recognition-reference") / "out"
    run_orchard(orchard_bin, model_env, *classify_args(to_classify, out, trained))
    return out


# ---- train ----

def test_train_clears_the_floor_on_held_out_frames(trained):
    m = json.loads((trained / "classifier" / "metrics.json").read_text())
    images = sum(len(list((TEST_IMAGES / c).glob("*.jpg"))) for c in CLASSES)
    sizes = m["sizes"]
    assert sizes["rows"] == images and sizes["classes"] == len(CLASSES) and sizes["on"] == "pca"
    assert sizes["holdout_rows"] > 0.05 * images and sizes["guard_rows"] > 0, "blocks held out, with a guard band"
    assert sizes["train_rows"] + sizes["guard_rows"] + sizes["holdout_rows"] == images
    assert "block" in m["holdout"]["method"]
    assert m["holdout"]["top1"] >= 0.95, m["holdout"]
    assert m["holdout"]["top5"] >= 0.99, m["holdout"]
    assert len(m["per_class"]) == len(CLASSES)
    assert {c["class"] for c in m["per_class"]} == set(CLASSES)
    assert all(0 <= c["f1"] <= 1 for c in m["per_class"])
    assert m["l2"] in [t["l2"] for t in m["l2_tried"]] and len(m["l2_tried"]) >= 3
    page = (trained / "report" / "index.html").read_text()
    assert "Classifier" in page and f"{100 * m['holdout']['top1']:.2f}" in page, "train rewrites the report"
    head = pq.read_table(trained / "classifier" / "model.parquet")
    meta = head.schema.metadata
    assert head["classes"][0].as_py() == sorted(CLASSES)
    assert meta[b"embedding_model"].startswith(b"openvino:mobilenet_v2-")
    assert meta[b"pca_fingerprint"] and int(meta[b"pca_k"]) == len(head["mean"][0].as_py())


def test_train_is_deterministic_for_a_seed(orchard_bin, model_env, trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    run_orchard(orchard_bin, model_env, "train", copy)
    a = pq.read_table(trained / "classifier" / "model.parquet")
    b = pq.read_table(copy / "classifier" / "model.parquet")
    assert a.equals(b) and a.schema.metadata == b.schema.metadata
    run_orchard(orchard_bin, model_env, "train", copy, "--seed", 7)
    m0 = json.loads((trained / "classifier" / "metrics.json").read_text())
    m7 = json.loads((copy / "classifier" / "metrics.json").read_text())
    assert m7["holdout"]["seed"] == 7
    assert m0["sizes"]["holdout_rows"] != m7["sizes"]["holdout_rows"] or m0["misclassified"] != m7["misclassified"]


def test_train_refuses_an_unfinished_output(orchard_bin, model_env, to_classify, tmp_path):
    out = tmp_path / "featurized-only"
    run_orchard(orchard_bin, model_env, "featurize", to_classify, out, "--model", MODEL_DIR, "--quiet")
    p = run_orchard(orchard_bin, model_env, "train", out, check=False)
    assert p.returncode == 1
    assert "not a finished OUTPUT" in p.stderr and "orchard run" in p.stderr
    assert not (out / "classifier").exists()


def test_train_on_features_and_classify_with_it(orchard_bin, model_env, trained, to_classify, tmp_path):
    copy = tmp_path / "features-head"
    shutil.copytree(trained, copy)
    run_orchard(orchard_bin, model_env, "train", copy, "--on", "features")
    m = json.loads((copy / "classifier" / "metrics.json").read_text())
    assert m["sizes"]["inputs"] == 1280 and m["holdout"]["top1"] >= 0.95
    out = tmp_path / "classified"
    run_orchard(orchard_bin, model_env, *classify_args(to_classify, out, copy, "--top", 3))
    t = predictions(out)
    assert all(len(x) == 3 for x in t["top_labels"].to_pylist())
    assert np.mean([l == t[0] for l, t in zip(t["label"].to_pylist(), t["top_labels"].to_pylist())]) >= 0.9


# ---- classify ----

def test_classify_writes_predictions_and_error_rows(reference, to_classify, trained):
    t = predictions(reference)
    assert t.schema.field("top_labels").type == pa.list_(pa.string())
    assert t.schema.field("top_probabilities").type == pa.list_(pa.float32())
    photos = sorted(str(p) for p in to_classify.rglob("*.jpg"))
    e = errors(reference)
    assert e["path"].to_pylist() == [str(to_classify / "Banana 1" / "zz_corrupt.jpg")]
    assert sorted(t["path"].to_pylist() + e["path"].to_pylist()) == photos, "every input exactly once"
    assert t.num_rows == len(CLASSES) * PER_CLASS_TO_CLASSIFY
    for label, path, top, probs in zip(*(t[c].to_pylist() for c in ("label", "path", "top_labels", "top_probabilities"))):
        assert label == Path(path).parent.name
        assert len(top) == 5 and len(set(top)) == 5 and set(top) <= set(CLASSES)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    right = np.mean([l == top[0] for l, top in zip(t["label"].to_pylist(), t["top_labels"].to_pylist())])
    assert right >= 0.95, f"top-1 on training photos {right}"
    record = json.loads((reference / "_classify.json").read_text())
    head = pq.read_table(trained / "classifier" / "model.parquet").schema.metadata
    assert record["classifier"] == head[b"fingerprint"].decode()
    assert record["classified_this_run"] == t.num_rows and record["errors_this_run"] == 1


def test_classify_on_disk_resumes_after_sigkill(orchard_bin, model_env, trained, to_classify, reference, tmp_path):
    out = tmp_path / "killed"
    args = [str(orchard_bin), *map(str, classify_args(to_classify, out, trained))]
    done = kill_after_parts(args, model_env, lambda: len(list((out / "predictions").glob("part-*.parquet"))))
    shards = -(-(len(CLASSES) * PER_CLASS_TO_CLASSIFY + 1) // SHARD)
    assert 2 <= done < shards, f"the kill should land midway ({done} of {shards} parts)"
    p = run_orchard(orchard_bin, model_env, *classify_args(to_classify, out, trained))
    skipped = int(re.search(rf"(\d+) of {shards} shards were already finished", p.stderr).group(1))
    assert done <= skipped < shards, "the rerun skips every shard finished before the kill, and only those"
    assert rows_of(predictions(out)) == rows_of(predictions(reference))
    assert errors(out).sort_by("path").equals(errors(reference).sort_by("path"))
    assert not [f for f in out.rglob("*") if ".tmp-" in f.name], "no temporary file left"


def test_classify_on_s3_resumes_after_sigkill(seaweedfs, orchard_bin, model_env, trained, to_classify, reference):
    from fault_proxy import FaultProxy
    seaweedfs.create_bucket(IN)
    seaweedfs.create_bucket(OUT)
    seaweedfs.upload_tree(to_classify, IN, "photos")
    seaweedfs.upload_tree(trained, IN, "trained")  # TRAINED read from the store too
    c = seaweedfs.client()
    count = lambda: len(c.list_objects_v2(Bucket=OUT, Prefix="killed/predictions/").get("Contents", []))
    with FaultProxy(seaweedfs.endpoint, latency_s=0.03) as proxy:  # slow enough for the kill to land midway
        env = seaweedfs.env(proxy.endpoint)
        env["ORCHARD_CACHE"] = model_env["ORCHARD_CACHE"]
        args = classify_args(f"s3://{IN}/photos", f"s3://{OUT}/killed", f"s3://{IN}/trained")
        done = kill_after_parts([str(orchard_bin), *map(str, args)], env, count)
        shards = -(-(len(CLASSES) * PER_CLASS_TO_CLASSIFY + 1) // SHARD)
        assert 2 <= done < shards, f"the kill should land midway ({done} of {shards} parts)"
        run_orchard(orchard_bin, env, *args)
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=OUT, Prefix="killed/").get("Contents", [])]
    parts = sorted(k for k in keys if k.startswith("killed/predictions/"))
    assert len(parts) == shards
    table = pa.concat_tables([pq.read_table(pa.BufferReader(c.get_object(Bucket=OUT, Key=k)["Body"].read()))
                              for k in parts]).sort_by("path")
    assert rows_of(table, f"s3://{IN}/photos/") == rows_of(predictions(reference), f"{to_classify}/")
    assert "killed/_classify.json" in keys


def perturbed_weights(tmp_path: Path) -> Path:
    """A copy of the weights with one value changed: another model (another fingerprint)."""
    copy = tmp_path / "other-weights"
    shutil.copytree(MODEL_DIR, copy)
    f = sorted(copy.glob("*.npy"))[0]
    a = np.load(f)
    a.flat[0] += 0.5
    np.save(f, a)
    return copy


def test_another_model_is_refused_by_classify_and_serve(orchard_bin, model_env, trained, to_classify, tmp_path):
    other = perturbed_weights(tmp_path)
    p = run_orchard(orchard_bin, model_env, "classify", to_classify, tmp_path / "out", "--classifier", trained,
                    "--model", other, check=False)
    assert p.returncode == 1 and "the classifier was trained on" in p.stderr and "--model" in p.stderr
    assert not (tmp_path / "out" / "predictions").exists()
    p = run_orchard(orchard_bin, model_env, "serve", "--classifier", trained, "--model", other, "--port", 0,
                    check=False, timeout=120)
    assert p.returncode == 1 and "the classifier was trained on" in p.stderr


def test_a_changed_pca_is_refused(orchard_bin, model_env, trained, to_classify, tmp_path):
    copy = tmp_path / "refit"
    shutil.copytree(trained, copy)
    run_orchard(orchard_bin, model_env, "pca", copy, "--k", 10)
    p = run_orchard(orchard_bin, model_env, *classify_args(to_classify, tmp_path / "out", copy), check=False)
    assert p.returncode == 1 and "another PCA" in p.stderr and "orchard train" in p.stderr


def test_resuming_with_another_classifier_is_refused(orchard_bin, model_env, trained, to_classify, reference, tmp_path):
    other = tmp_path / "other-classifier"
    shutil.copytree(trained, other)
    run_orchard(orchard_bin, model_env, "train", other, "--seed", 3, "--holdout", 0.2)
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    p = run_orchard(orchard_bin, model_env, *classify_args(to_classify, out, other), check=False)
    assert p.returncode == 1 and "another classifier" in p.stderr
    assert rows_of(predictions(out)) == rows_of(predictions(reference)), "nothing changed"


def test_resuming_with_another_top_is_refused(orchard_bin, model_env, trained, to_classify, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    p = run_orchard(orchard_bin, model_env, *classify_args(to_classify, out, trained, "--top", 3), check=False)
    assert p.returncode == 1 and "--top 5" in p.stderr and "_classify.json" in p.stderr
    assert rows_of(predictions(out)) == rows_of(predictions(reference)), "nothing changed"
