"""End to end: `orchard featurize/run/validate` on real Fruits-360 images plus bad inputs, read back
with pyarrow (a real Parquet reader). Checks the output contract of design.md."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import MODEL_DIR, TEST_IMAGES, copy_sample, run_orchard

CLASSES = ["Apple Braeburn 1", "Banana 1", "Kiwi 1", "Lemon 1"]


def sample_input(dest: Path, per_class: int) -> list[Path]:
    """Copies the first per_class images of CLASSES (sorted) into dest/<class>/."""
    return copy_sample(dest, CLASSES, per_class)


def read_dir(folder: Path) -> pa.Table:
    parts = sorted(folder.glob("part-*.parquet"))
    assert parts, f"no parts in {folder}"
    return pa.concat_tables([pq.read_table(p) for p in parts])


def all_rows(out: Path):
    return read_dir(out / "features"), read_dir(out / "errors")


def test_schema_labels_and_bad_inputs(orchard_bin, model_env, tmp_path):
    src = tmp_path / "in"
    good = sample_input(src, 6)
    bad = src / "Bad"
    bad.mkdir()
    real = (TEST_IMAGES / CLASSES[0]).glob("*.jpg").__next__().read_bytes()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(real[: len(real) // 2])
    (bad / "text.jpg").write_text("this is not an image\n")
    # A real JPEG whose SOF0 header claims 60000x60000 pixels.
    sof = real.index(b"\xff\xc0")
    bomb = bytearray(real)
    bomb[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    (bad / "bomb.jpg").write_bytes(bytes(bomb))
    # Odd but valid: a 4000x3000 JPEG and a 16-bit grayscale PNG named .jpg must embed.
    fruit = Image.open(good[0]).convert("RGB")
    fruit.resize((4000, 3000)).save(bad / "huge_4000x3000.jpg", quality=90)
    Image.fromarray((np.asarray(fruit.convert("L"), dtype=np.uint16) * 200)).save(bad / "gray16.jpg", format="PNG")
    (src / CLASSES[0] / "notes.txt").write_text("not matched by the glob")

    out = tmp_path / "out"
    p = run_orchard(orchard_bin, model_env, "featurize", src, out, "--model", MODEL_DIR, "--shard-size", "10")
    feats, errs = all_rows(out)

    assert feats.schema.field("path").type == pa.string()
    assert feats.schema.field("label").type == pa.string()
    assert feats.schema.field("features").type == pa.list_(pa.float32())
    assert errs.schema.names == ["path", "error"]

    paths = feats.column("path").to_pylist() + errs.column("path").to_pylist()
    expected = sorted(str(f) for f in src.rglob("*.jpg"))
    assert sorted(paths) == expected, "every input exactly once in features/ or errors/"
    assert len(set(paths)) == len(paths)

    vecs = np.array(feats.column("features").to_pylist(), dtype=np.float32)
    assert vecs.shape == (len(feats), 1280)
    assert np.isfinite(vecs).all() and (np.abs(vecs).sum(axis=1) > 0).all()
    for path, label in zip(feats.column("path").to_pylist(), feats.column("label").to_pylist()):
        assert label == Path(path).parent.name

    errors = dict(zip(errs.column("path").to_pylist(), errs.column("error").to_pylist()))
    assert set(Path(p).name for p in errors) == {"empty.jpg", "truncated.jpg", "text.jpg", "bomb.jpg"}
    by_name = {Path(p).name: e.lower() for p, e in errors.items()}
    assert "empty" in by_name["empty.jpg"]
    assert "truncated" in by_name["truncated.jpg"]
    assert "not a jpeg or png" in by_name["text.jpg"]
    assert "60000" in by_name["bomb.jpg"]


def test_resume_after_sigkill_gives_each_input_once(orchard_bin, model_env, tmp_path):
    src = tmp_path / "in"
    inputs = sample_input(src, 60)  # 240 images, 24 shards of 10
    out = tmp_path / "out"
    args = [str(orchard_bin), "featurize", str(src), str(out), "--model", str(MODEL_DIR), "--shard-size", "10", "--quiet"]
    proc = subprocess.Popen(args, env=model_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and len(list((out / "features").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "features").glob("part-*.parquet")))
    assert 3 <= done_before < 24, f"the kill should land midway ({done_before} of 24 parts)"

    p = run_orchard(orchard_bin, model_env, "featurize", src, out, "--model", MODEL_DIR, "--shard-size", "10")
    skipped = int(re.search(r"(\d+) of 24 shards were already finished", p.stderr).group(1))
    assert skipped >= done_before, "the rerun must skip every shard finished before the kill"
    feats, errs = all_rows(out)
    paths = feats.column("path").to_pylist() + errs.column("path").to_pylist()
    assert sorted(paths) == sorted(map(str, inputs)), "exactly one row per input after resume"
    assert not list(out.rglob("*.tmp-*")), "no half-written files left"

    # Same numbers as an uninterrupted run on one worker thread.
    clean = tmp_path / "clean"
    run_orchard(orchard_bin, model_env, "featurize", src, clean, "--model", MODEL_DIR, "--shard-size", "10",
                "--threads", "1", "--batch", "3")
    a = {r["path"]: r["features"] for r in feats.to_pylist()}
    b = {r["path"]: r["features"] for r in read_dir(clean / "features").to_pylist()}
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(np.array(a[k]) - np.array(b[k])))) for k in a)
    assert worst < 1e-5

    # A rerun with other options is refused instead of mixing two plans.
    p = run_orchard(orchard_bin, model_env, "featurize", src, out, "--model", MODEL_DIR, "--shard-size", "7", check=False)
    assert p.returncode != 0 and "--shard-size 10" in p.stderr
    other = tmp_path / "other"
    shutil.copytree(src, other)
    p = run_orchard(orchard_bin, model_env, "featurize", other, out, "--model", MODEL_DIR, "--shard-size", "10", check=False)
    assert p.returncode != 0 and "holds a run over INPUT" in p.stderr and str(src) in p.stderr


def test_run_then_validate_catches_damage(orchard_bin, model_env, tmp_path):
    src = tmp_path / "in"
    sample_input(src, 15)
    out = tmp_path / "out"
    p = run_orchard(orchard_bin, model_env, "run", src, out, "--model", MODEL_DIR, "--shard-size", "20", "--variance", "0.9")
    assert (out / "_SUCCESS").is_file() and (out / "report" / "index.html").is_file()
    assert run_orchard(orchard_bin, model_env, "validate", out).returncode == 0

    # A zeroed vector: validate names the file and the problem.
    part = out / "features" / "part-00001.parquet"
    t = pq.read_table(part)
    vecs = t.column("features").to_pylist()
    vecs[3] = [0.0] * 1280
    pq.write_table(t.set_column(2, "features", pa.array(vecs, pa.list_(pa.float32()))), part)
    p = run_orchard(orchard_bin, model_env, "validate", out, check=False)
    assert p.returncode != 0
    assert "part-00001.parquet" in p.stderr and "all-zero" in p.stderr

    # A removed part: validate names it and says how to repair.
    part.unlink()
    p = run_orchard(orchard_bin, model_env, "validate", out, check=False)
    assert p.returncode != 0 and "part-00001.parquet is missing" in p.stderr

    # A malformed manifest and PCA model: a clear message naming the file, not a crash.
    pq.write_table(pa.table({"x": [1]}), out / "_manifest.parquet")
    pq.write_table(pa.table({"k": pa.array([3], pa.int64())}), out / "pca" / "model.parquet")
    p = run_orchard(orchard_bin, model_env, "validate", out, check=False)
    assert p.returncode == 1, p.stderr
    assert "_manifest.parquet" in p.stderr and "model.parquet: column 'k'" in p.stderr


def test_job_level_errors_are_one_clear_line(orchard_bin, model_env, tmp_path):
    def one_line(p):
        lines = [line for line in p.stderr.splitlines() if line.startswith("orchard: ")]
        assert p.returncode == 1 and len(lines) == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        return lines[0]
    (tmp_path / "empty").mkdir()
    line = one_line(run_orchard(orchard_bin, model_env, "featurize", tmp_path / "nope", tmp_path / "o", "--model", MODEL_DIR, check=False))
    assert "nope" in line and "not a folder" in line
    line = one_line(run_orchard(orchard_bin, model_env, "featurize", tmp_path / "empty", tmp_path / "o2", "--model", MODEL_DIR, check=False))
    assert "no file matches --glob" in line
    line = one_line(run_orchard(orchard_bin, model_env, "featurize", tmp_path / "empty", tmp_path / "o3", "--model", tmp_path, check=False))
    assert "Conv_weights.npy" in line
    assert run_orchard(orchard_bin, model_env, "--help").stdout.count("featurize") >= 1


def test_featurize_shards_leaves_other_processes_temporaries(orchard_bin, model_env, tmp_path):
    """Spark runs several `featurize-shards` processes on one OUTPUT at once, and may run a
    speculative copy of a task: each deletes the half-written parts of its own shards that a dead
    process on this host left (untouched for a minute) or that nobody touched for a day, never a
    live process's, a fresh one's or another machine's."""
    src = tmp_path / "in"
    sample_input(src, 3)  # 12 images, 4 shards of 3
    out = tmp_path / "out"
    run_orchard(orchard_bin, model_env, "plan", src, out, "--shard-size", "3")
    (out / "features").mkdir()
    (out / "errors").mkdir()
    host = socket.gethostname()
    alive = subprocess.Popen(["sleep", "300"])  # a live writer: a concurrent or speculative attempt
    try:
        dead = 4194303  # above pid_max's usual limits: no such process
        stale = [out / "features" / f"part-00001.parquet.tmp-{host}-{dead}-1",
                 out / "errors" / f"part-00001.parquet.tmp-{host}-{dead}-2"]
        in_flight = [out / "features" / f"part-00002.parquet.tmp-{host}-{alive.pid}-1",
                     out / "errors" / f"part-00003.parquet.tmp-{host}-{dead}-2",
                     # the same shards as this process's, but a live attempt's, or another machine's
                     out / "features" / f"part-00001.parquet.tmp-{host}-{alive.pid}-7",
                     out / "errors" / f"part-00000.parquet.tmp-other-node-{dead}-3"]
        # An earlier version's name, untouched for two days: its writer is long gone.
        stale.append(out / "errors" / "part-00000.parquet.tmp-999999-5")
        # A dead writer's, but touched seconds ago: perhaps a live one in another PID namespace.
        in_flight.append(out / "features" / f"part-00000.parquet.tmp-{host}-{dead}-9")
        # An earlier version's name, fresh: kept.
        in_flight.append(out / "features" / "part-00001.parquet.tmp-999999-6")
        now = time.time()
        for f in stale + in_flight:
            f.write_bytes(b"half a part")
        for f, age in ((stale[0], 120), (stale[1], 120), (stale[2], 2 * 86400)):
            os.utime(f, (now - age, now - age))
        run_orchard(orchard_bin, model_env, "featurize-shards", out, "--shards", "0,1", "--model", MODEL_DIR, "--quiet")
    finally:
        alive.kill()
        alive.wait()
    assert not [f for f in stale if f.exists()], "a killed run's temporaries of the shards done here are removed"
    assert all(f.read_bytes() == b"half a part" for f in in_flight), "others' temporaries are untouched"
    assert sorted(p.name for p in (out / "features").glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
