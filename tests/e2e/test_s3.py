"""End to end on S3 (issue 6, "End to end"): `orchard` reading and writing s3:// on a real S3-speaking
server on loopback (SeaweedFS; moto too for the main run), with a fault-injecting proxy in between.

Every orchard process is given the server's env() (keys, region, AWS_ENDPOINT_URL_S3 on
127.0.0.1, EC2 metadata off), so nothing talks to AWS. The features from S3 are compared bit for bit
with a run of the same images from local disk."""
import csv
import io
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import MODEL_DIR, copy_sample, run_orchard
from fault_proxy import FaultProxy

CLASSES = ["Apple Braeburn 1", "Banana 1", "Kiwi 1", "Lemon 1"]
PER_CLASS = 12
SHARD = 4  # 48 images -> 12 shards: several parts, resume and faults hit shards in the middle
SHARDS = len(CLASSES) * PER_CLASS // SHARD
IN, OUT = "orchard-in", "orchard-out"
INPUT = f"s3://{IN}/fruits"

SDK_ATTEMPTS = 3  # the AWS SDK's own attempts per request (src/orchard/storage/s3.cpp: standard strategy, 3)

LOGS = []  # stdout + stderr of every orchard run in this module (the secret must be in none)


def orchard(orchard_bin, env, *args, check=True, timeout=600):
    """run_orchard that keeps the run's output in LOGS (never its arguments: they may hold keys)."""
    p = run_orchard(orchard_bin, env, *args, check=False, timeout=timeout)
    LOGS.append(p.stdout + p.stderr)
    if check and p.returncode != 0:
        pytest.fail(f"orchard {args[0]} exited {p.returncode}:\n{p.stderr}")
    return p


def orchard_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("orchard:")]


# ---- reading the store ----

def keys(client, bucket, prefix) -> list:
    """Every key under bucket/prefix/ (prefix '': the whole bucket), sorted (ListObjectsV2, paginated)."""
    out = []
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def get(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def read_parquet(client, bucket, key) -> pa.Table:
    return pq.read_table(pa.BufferReader(get(client, bucket, key)))


def read_parts(client, bucket, prefix, folder) -> pa.Table:
    """The part-*.parquet of OUTPUT/folder, concatenated in part order (empty parts included)."""
    parts = [k for k in keys(client, bucket, f"{prefix}/{folder}") if re.search(r"/part-\d{5}\.parquet$", k)]
    assert parts, f"no parts under s3://{bucket}/{prefix}/{folder}"
    return pa.concat_tables([read_parquet(client, bucket, k) for k in parts])


def feature_rows(table: pa.Table) -> list:
    """(path, label, the float32 vector's bytes) of every row, in order: equal means bit-identical."""
    paths, labels = table.column("path").to_pylist(), table.column("label").to_pylist()
    vecs = table.column("features").combine_chunks()
    flat = np.asarray(vecs.flatten(), dtype=np.float32).reshape(len(table), -1)
    assert flat.shape[1] == 1280
    return [(p, lab, flat[i].tobytes()) for i, (p, lab) in enumerate(zip(paths, labels))]


def as_s3(rows, local_root: Path, uri_prefix: str) -> list:
    """Local rows with their paths rewritten to the S3 URIs of the same files."""
    return [(uri_prefix + "/" + Path(p).relative_to(local_root).as_posix(), lab, v) for p, lab, v in rows]


def s3_tables(client, bucket, prefix):
    """(features, errors) of an OUTPUT on S3."""
    return read_parts(client, bucket, prefix, "features"), read_parts(client, bucket, prefix, "errors")


def local_tables(out: Path):
    """(features, errors) of an OUTPUT on local disk."""
    return tuple(pa.concat_tables([pq.read_table(p) for p in sorted((out / d).glob("part-*.parquet"))])
                 for d in ("features", "errors"))


def assert_features_match(tables, reference, uri_prefix=INPUT):
    """The features are the reference rows (same order, same labels, same bits); no errors."""
    feats, errs = tables
    got = feature_rows(feats)
    want = as_s3(reference["rows"], reference["root"], uri_prefix)
    assert [r[:2] for r in got] == [r[:2] for r in want], "same rows, in the same order"
    differ = [r[0] for r, w in zip(got, want) if r[2] != w[2]]
    assert not differ, f"{len(differ)} vectors differ from the local-disk run, e.g. {differ[:3]}"
    assert errs.num_rows == 0


def assert_each_input_once(tables, expected_paths):
    feats, errs = tables
    paths = feats.column("path").to_pylist() + errs.column("path").to_pylist()
    assert sorted(paths) == sorted(expected_paths), "every input exactly once in features/ or errors/"
    return feats, errs


def featurize_args(input_uri, output_uri, model, *extra):
    return ["featurize", input_uri, output_uri, "--model", model, "--shard-size", SHARD, "--quiet", *extra]


def copy_prefix(client, src, dst):
    """Copies every object of OUT/src/ to OUT/dst/ on the server (a second OUTPUT to damage freely)."""
    for k in keys(client, OUT, src):
        if k.endswith("/"):  # a "directory" marker (Arrow makes them), not part of OUTPUT
            continue
        client.copy_object(Bucket=OUT, Key=dst + k[len(src):], CopySource={"Bucket": OUT, "Key": k})


def assert_csv_is_pca_features(text: str, pca: pa.Table):
    """The CSV is pca_features/ exactly: header path,label,pca_1..pca_k, then every row of the parts in
    part order, its path and label, and each value read back as a float32 equal to the Parquet one."""
    k = len(pca.column("pca")[0].as_py())
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows and rows[0] == ["path", "label"] + [f"pca_{j}" for j in range(1, k + 1)], rows[:1]
    body = rows[1:]
    assert len(body) == pca.num_rows, f"{len(body)} CSV rows for {pca.num_rows} pca_features rows"
    assert [tuple(r[:2]) for r in body] == \
        list(zip(pca.column("path").to_pylist(), pca.column("label").to_pylist())), "same rows, same order"
    assert all(len(r) == 2 + k for r in body), "k values on every row"
    got = np.array([[float(v) for v in r[2:]] for r in body], dtype=np.float64).astype(np.float32)
    want = np.asarray(pca.column("pca").combine_chunks().flatten(), dtype=np.float32).reshape(pca.num_rows, k)
    differ = np.argwhere(got.view(np.uint32) != want.view(np.uint32))
    assert not len(differ), (f"{len(differ)} of {got.size} CSV values are not the Parquet float32, e.g. row "
                             f"{differ[0][0]}: {body[differ[0][0]][2 + differ[0][1]]!r} vs "
                             f"{want[tuple(differ[0])]!r}")


def statuses(proxy, method, path) -> list:
    """The statuses of the proxy's requests with that method and path (None: reset), in order."""
    return [status for m, t, status in proxy.requests() if m == method and urlsplit(t).path == path]


OK = (200, 206)  # a whole or a ranged GET answered


# ---- fixtures ----

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """PER_CLASS images of each of CLASSES, copied to a local folder (one subfolder per label)."""
    root = tmp_path_factory.mktemp("s3-images") / "fruits"
    copy_sample(root, CLASSES, PER_CLASS)
    return root


@pytest.fixture(scope="module")
def prepared_model(orchard_bin, model_env, tmp_path_factory) -> Path:
    """The model prepared once into a local .ov (every run here uses it: no re-preparing)."""
    path = tmp_path_factory.mktemp("s3-model") / "mobilenet_v2.ov"
    orchard(orchard_bin, model_env, "prepare-model", MODEL_DIR, "--out", path)
    return path


@pytest.fixture(scope="module")
def reference(orchard_bin, model_env, images, prepared_model, tmp_path_factory) -> dict:
    """The same images featurized from local disk (same options): the rows S3 runs must equal."""
    out = tmp_path_factory.mktemp("s3-reference") / "out"
    orchard(orchard_bin, model_env, *featurize_args(images, out, prepared_model))
    table = pa.concat_tables([pq.read_table(p) for p in sorted((out / "features").glob("part-*.parquet"))])
    rows = feature_rows(table)
    assert len(rows) == len(CLASSES) * PER_CLASS
    return {"root": images, "rows": rows, "out": out}


@pytest.fixture(scope="module")
def input_uris(images) -> list:
    return sorted(f"{INPUT}/{p.relative_to(images).as_posix()}" for p in images.rglob("*.jpg"))


def _stock(server, images, prepared_model):
    """Buckets IN (the images under fruits/, the model under models/) and OUT on `server`."""
    server.create_bucket(IN)
    server.create_bucket(OUT)
    server.upload_tree(images, IN, "fruits")
    server.client().upload_file(str(prepared_model), IN, "models/mobilenet_v2.ov")
    return server


@pytest.fixture(scope="module")
def sw(seaweedfs, images, prepared_model):
    """The SeaweedFS server, stocked."""
    return _stock(seaweedfs, images, prepared_model)


@pytest.fixture(scope="module")
def moto(moto_s3, images, prepared_model):
    """The moto server, stocked."""
    return _stock(moto_s3, images, prepared_model)


def env_for(server, model_env, endpoint=None, **extra) -> dict:
    """The server's AWS env (endpoint: a proxy's, default the server) with the module's model cache."""
    env = server.env(endpoint)
    env["ORCHARD_CACHE"] = model_env["ORCHARD_CACHE"]
    env.update({k: str(v) for k, v in extra.items()})
    return env


def s3_run(orchard_bin, model_env, server, prepared_model, prefix) -> dict:
    """`orchard run INPUT s3://OUT/prefix` through a fault-free proxy that counts the requests."""
    with FaultProxy(server.endpoint) as proxy:
        p = orchard(orchard_bin, env_for(server, model_env, proxy.endpoint),
                    "run", INPUT, f"s3://{OUT}/{prefix}", "--model", prepared_model, "--shard-size", SHARD,
                    "--quiet", "--k", 5)
        counts = proxy.counts()
    return {"server": server, "prefix": prefix, "counts": counts, "stderr": p.stderr}


@pytest.fixture(scope="module")
def sw_run(orchard_bin, model_env, sw, prepared_model) -> dict:
    return s3_run(orchard_bin, model_env, sw, prepared_model, "run")


@pytest.fixture(params=["seaweedfs", "moto"])
def main_run(request, orchard_bin, model_env, prepared_model) -> dict:
    if request.param == "seaweedfs":
        return request.getfixturevalue("sw_run")
    return s3_run(orchard_bin, model_env, request.getfixturevalue("moto"), prepared_model, "run")


# ---- tests ----

def test_run_s3_to_s3_matches_local_disk(main_run, reference, orchard_bin, model_env):
    """run s3:// -> s3://: bit-identical to local disk, s3:// paths, s3:// manifest input, one
    PutObject per published object (no multipart, no copy, no delete), validate and report on S3."""
    server, prefix, counts = main_run["server"], main_run["prefix"], main_run["counts"]
    c = server.client()
    assert_features_match(s3_tables(c, OUT, prefix), reference)

    manifest = read_parquet(c, OUT, f"{prefix}/_manifest.parquet")
    assert manifest.schema.metadata[b"input"] == INPUT.encode(), "the manifest records INPUT with its scheme"
    assert all(p.startswith(f"{INPUT}/") for p in manifest.column("path").to_pylist())

    written = keys(c, OUT, prefix)
    assert f"{prefix}/report/index.html" in written and f"{prefix}/_SUCCESS" in written
    assert not any(".tmp-" in k for k in written), "no temporaries on an object store"
    for multipart in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
        assert counts.get(multipart, 0) == 0, f"{multipart}: small parts must go out in one request ({counts})"
    assert counts.get("PutObject", 0) == len(written), f"one PutObject per object written ({counts}, {written})"
    assert counts.get("DELETE", 0) == 0, f"a fresh run deletes nothing (no copy + delete 'rename'): {counts}"

    html = get(c, OUT, f"{prefix}/report/index.html").decode()
    assert all(name in html for name in CLASSES), "the report names every class"
    success = json.loads(get(c, OUT, f"{prefix}/_SUCCESS"))
    assert success["counts"]["inputs"] == len(reference["rows"]) and success["counts"]["errors"] == 0

    # validate and report on their own, on the s3:// OUTPUT
    env = env_for(server, model_env)
    assert "validate: ok: 48 inputs" in orchard(orchard_bin, env, "validate", f"s3://{OUT}/{prefix}").stderr
    c.delete_object(Bucket=OUT, Key=f"{prefix}/report/index.html")
    orchard(orchard_bin, env, "report", f"s3://{OUT}/{prefix}")
    assert all(name in get(c, OUT, f"{prefix}/report/index.html").decode() for name in CLASSES)

    # ... and validate reads it for real: a missing part is caught, named, on S3
    part = f"{prefix}/features/part-00003.parquet"
    saved = get(c, OUT, part)
    c.delete_object(Bucket=OUT, Key=part)
    try:
        p = orchard(orchard_bin, env, "validate", f"s3://{OUT}/{prefix}", check=False)
        assert p.returncode == 1 and "part-00003" in p.stderr, p.stderr
    finally:
        c.put_object(Bucket=OUT, Key=part, Body=saved)
    orchard(orchard_bin, env, "validate", f"s3://{OUT}/{prefix}")


def test_pca_csv_on_s3(sw, sw_run, orchard_bin, model_env):
    """pca --csv s3://... writes one CSV object that is pca_features/ exactly: header
    path,label,pca_1..pca_k, one row per pca_features row in part order, each value the shortest text
    that reads back as the very float32 of the Parquet part."""
    c = sw.client()
    env = env_for(sw, model_env)
    orchard(orchard_bin, env, "pca", f"s3://{OUT}/run", "--k", 3, "--csv", f"s3://{OUT}/csv/pca.csv")
    text = get(c, OUT, "csv/pca.csv").decode()
    assert text.splitlines()[0] == "path,label,pca_1,pca_2,pca_3"
    pca = read_parts(c, OUT, "run", "pca_features")
    feats = read_parts(c, OUT, "run", "features")
    assert sorted(pca.column("path").to_pylist()) == sorted(feats.column("path").to_pylist()), "one per feature row"
    assert_csv_is_pca_features(text, pca)
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert all(r[0].startswith(f"{INPUT}/") and r[1] in CLASSES for r in rows)
    orchard(orchard_bin, env, "validate", f"s3://{OUT}/run")


def test_sigkill_then_rerun_gives_each_input_once(sw, reference, input_uris, orchard_bin, model_env, prepared_model):
    c = sw.client()
    prefix = "killed"
    with FaultProxy(sw.endpoint, latency_s=0.05) as proxy:  # slow enough for the kill to land midway
        env = env_for(sw, model_env, proxy.endpoint)
        args = [str(orchard_bin), *map(str, featurize_args(INPUT, f"s3://{OUT}/{prefix}", prepared_model))]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        done = []
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            done = keys(c, OUT, f"{prefix}/features")
            if len(done) >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        LOGS.append((out + err).decode(errors="replace"))
        done = keys(c, OUT, f"{prefix}/features")
        assert 2 <= len(done) < SHARDS, f"the kill should land midway ({len(done)} of {SHARDS} parts)"

        p = orchard(orchard_bin, env, *featurize_args(INPUT, f"s3://{OUT}/{prefix}", prepared_model))
    skipped = int(re.search(rf"(\d+) of {SHARDS} shards were already finished", p.stderr).group(1))
    assert skipped >= len(done), "the rerun skips every shard finished before the kill"
    assert skipped < SHARDS
    assert_each_input_once(s3_tables(c, OUT, prefix), input_uris)
    assert_features_match(s3_tables(c, OUT, prefix), reference)
    expected = {f"{prefix}/{d}/part-{s:05d}.parquet" for d in ("features", "errors") for s in range(SHARDS)}
    expected |= {f"{prefix}/_manifest.parquet", f"{prefix}/_featurize.json"}
    assert set(keys(c, OUT, prefix)) == expected, "no stray or half objects"
    uploads = c.list_multipart_uploads(Bucket=OUT, Prefix=prefix).get("Uploads", [])
    assert not uploads, f"no multipart upload left open: {uploads}"


def test_injected_faults_change_nothing(sw, reference, input_uris, orchard_bin, model_env, prepared_model):
    c = sw.client()
    with FaultProxy(sw.endpoint, slowdown_rate=0.1, reset_rate=0.05, seed=6) as proxy:
        env = env_for(sw, model_env, proxy.endpoint)
        orchard(orchard_bin, env, *featurize_args(INPUT, f"s3://{OUT}/faults", prepared_model))
        orchard(orchard_bin, env, "validate", f"s3://{OUT}/faults")  # reads every part, under faults
        counts = proxy.counts()
    assert counts.get("faults_503", 0) > 0 and counts.get("resets", 0) > 0, counts
    assert_each_input_once(s3_tables(c, OUT, "faults"), input_uris)
    assert_features_match(s3_tables(c, OUT, "faults"), reference)


def test_csv_written_under_faults_is_the_fault_free_csv(sw, reference, input_uris, orchard_bin, model_env,
                                                        prepared_model):
    """`orchard run ... --csv s3://...` through a proxy that refuses (503 SlowDown) and resets requests
    at random, and fails the first SDK_ATTEMPTS PUTs of every pca_features part (503, reset, 503) so
    that orchard itself retries each part's write: the CSV is byte for byte the one a fault-free run
    of the same images wrote (no row twice, none lost), and pca_features/ and features/ are the same
    tables."""
    c = sw.client()

    def run_args(prefix):
        return ["run", INPUT, f"s3://{OUT}/{prefix}", "--model", prepared_model, "--shard-size", SHARD, "--quiet",
                "--k", 3, "--csv", f"s3://{OUT}/{prefix}.csv"]

    orchard(orchard_bin, env_for(sw, model_env), *run_args("csv-clean"))
    pca_part = re.compile(rf"/{OUT}/csv-faults/pca_features/part-\d{{5}}\.parquet")
    forced = ("503", "reset", "503")  # one orchard attempt's worth of SDK attempts, all failing

    def fate(method, path, n):
        if method == "PUT" and pca_part.fullmatch(path):
            return forced[n] if n < len(forced) else "ok"
        return None

    with FaultProxy(sw.endpoint, slowdown_rate=0.05, reset_rate=0.03, seed=14, fate=fate) as proxy:
        orchard(orchard_bin, env_for(sw, model_env, proxy.endpoint), *run_args("csv-faults"))
        counts = proxy.counts()
        part_puts = {}
        for method, target, status in proxy.requests():
            if method == "PUT" and pca_part.fullmatch(urlsplit(target).path):
                part_puts.setdefault(urlsplit(target).path, []).append(status)
    assert counts["faults_503"] > 0 and counts["resets"] > 0, counts
    assert len(part_puts) == SHARDS, sorted(part_puts)
    for path, statuses in sorted(part_puts.items()):
        assert statuses == [503, None, 503, 200], f"{path}: the write was not retried as planned: {statuses}"

    clean, faulty = get(c, OUT, "csv-clean.csv"), get(c, OUT, "csv-faults.csv")
    assert faulty == clean, (f"the CSV written under faults differs from the fault-free one: "
                             f"{len(faulty.splitlines())} lines vs {len(clean.splitlines())}")
    pca_keys = lambda prefix: [k[len(prefix):] for k in keys(c, OUT, f"{prefix}/pca_features")]  # noqa: E731
    assert pca_keys("csv-faults") == pca_keys("csv-clean")
    pca = read_parts(c, OUT, "csv-faults", "pca_features")
    assert pca.equals(read_parts(c, OUT, "csv-clean", "pca_features")), "pca_features/ differs from the fault-free run"
    assert_csv_is_pca_features(faulty.decode(), pca)
    assert_each_input_once(s3_tables(c, OUT, "csv-faults"), input_uris)
    assert_features_match(s3_tables(c, OUT, "csv-faults"), reference)


def test_failed_checks_are_never_taken_for_absent(sw, sw_run, input_uris, orchard_bin, model_env, prepared_model):
    """Rerunning featurize on a finished S3 OUTPUT while the store fails half of the requests (one
    orchard attempt): each run either fails with one line or finds every shard finished; none
    re-plans, rewrites the manifest or redoes a shard. A rerun that fails before changing anything
    (a check it could not make, a manifest it could never read, options the manifest refuses) leaves
    the finished OUTPUT's _SUCCESS as it was."""
    c = sw.client()
    if "run/_SUCCESS" not in keys(c, OUT, "run"):  # an earlier test's `orchard pca` took it: finish again
        orchard(orchard_bin, env_for(sw, model_env), "run", INPUT, f"s3://{OUT}/run", "--model", prepared_model,
                "--shard-size", SHARD, "--quiet", "--k", 5)
    manifest = get(c, OUT, "run/_manifest.parquet")
    success = get(c, OUT, "run/_SUCCESS")

    def assert_still_finished(p):
        assert "run/_SUCCESS" in keys(c, OUT, "run"), f"a rerun that failed removed _SUCCESS: {orchard_lines(p.stderr)}"
        assert get(c, OUT, "run/_SUCCESS") == success

    outcomes = []
    for seed in range(4):
        # each rerun starts from the finished OUTPUT
        c.put_object(Bucket=OUT, Key="run/_SUCCESS", Body=success)
        with FaultProxy(sw.endpoint, slowdown_rate=0.5, seed=seed) as proxy:
            env = env_for(sw, model_env, proxy.endpoint, ORCHARD_STORAGE_ATTEMPTS=1)
            p = orchard(orchard_bin, env, *featurize_args(INPUT, f"s3://{OUT}/run", prepared_model), check=False)
            # (Arrow's DeleteFile of _SUCCESS re-creates the parent "directory": a PUT of OUTPUT/)
            puts = [t for m, t, status in proxy.requests() if m in ("PUT", "POST") and t != f"/{OUT}/run/"]
        if p.returncode == 0:
            assert f"{SHARDS} of {SHARDS} shards were already finished" in p.stderr, p.stderr
            # nothing to do: nothing written (not even the stage record, which stays the run's that
            # made the shards), and the OUTPUT stays finished
            assert puts == [], puts
            assert_still_finished(p)
        else:
            assert p.returncode == 1 and len(orchard_lines(p.stderr)) == 1, p.stderr
            # the cause as the SDK names it: SLOW_DOWN when it read the 503's body, HTTP status 503
            # when there was none (a HEAD)
            assert "gave up" in p.stderr and ("503" in p.stderr or "SLOW_DOWN" in p.stderr), p.stderr
            assert not puts, f"a run that could not check wrote {puts}"
            assert_still_finished(p)
        outcomes.append(orchard_lines(p.stderr))
    # At least one run met a check it could not make (the manifest's existence or read, the listing
    # of finished shards) and stopped instead of taking it for "absent".
    checks = ("could not check whether it exists", "_manifest.parquet: cannot open", "_manifest.parquet: cannot read",
              "features: cannot list")
    assert any(check in "".join(o) for o in outcomes for check in checks), outcomes

    # The same for certain: every request for the manifest is refused, so the rerun cannot check it.
    c.put_object(Bucket=OUT, Key="run/_SUCCESS", Body=success)
    manifest_path = f"/{OUT}/run/_manifest.parquet"
    with FaultProxy(sw.endpoint, fate=lambda method, path, n: "503" if path == manifest_path else None) as proxy:
        env = env_for(sw, model_env, proxy.endpoint, ORCHARD_STORAGE_ATTEMPTS=1)
        p = orchard(orchard_bin, env, *featurize_args(INPUT, f"s3://{OUT}/run", prepared_model), check=False)
        deletes = statuses(proxy, "DELETE", f"/{OUT}/run/_SUCCESS")
    assert p.returncode == 1 and len(orchard_lines(p.stderr)) == 1, p.stderr
    assert "_manifest.parquet" in p.stderr and "gave up" in p.stderr, p.stderr
    assert not deletes, f"_SUCCESS deleted ({deletes}) before the checks passed"
    assert_still_finished(p)

    # ... and a rerun that the manifest refuses (another --shard-size): nothing changes.
    p = orchard(orchard_bin, env_for(sw, model_env), "featurize", INPUT, f"s3://{OUT}/run", "--model", prepared_model,
                "--shard-size", SHARD + 2, "--quiet", check=False)
    assert p.returncode == 1 and f"--shard-size {SHARD}" in p.stderr, p.stderr
    assert_still_finished(p)

    assert get(c, OUT, "run/_manifest.parquet") == manifest
    assert_each_input_once(s3_tables(c, OUT, "run"), input_uris)


@pytest.mark.parametrize("output_on", ["s3", "local"])
def test_faults_outlasting_retries_fail_the_job_then_rerun_completes(
        output_on, sw, reference, input_uris, orchard_bin, model_env, prepared_model, tmp_path):
    """After planning, the store refuses every request (503 SlowDown) for longer than the retries
    last: featurize fails with one line naming the object and the cause, writes no error row for it,
    and a rerun once the store is back completes. With OUTPUT on local disk only the image reads
    fail: the job must still fail instead of publishing them as error rows."""
    c = sw.client()
    if output_on == "s3":
        output = f"s3://{OUT}/outage"
        parts = lambda folder: keys(c, OUT, f"outage/{folder}")  # noqa: E731
        table = lambda key: read_parquet(c, OUT, key)  # noqa: E731
        tables = lambda: s3_tables(c, OUT, "outage")  # noqa: E731
    else:
        output = tmp_path / "outage"
        parts = lambda folder: sorted((output / folder).glob("part-*.parquet"))  # noqa: E731
        table = pq.read_table
        tables = lambda: local_tables(output)  # noqa: E731
    with FaultProxy(sw.endpoint, latency_s=0.05) as proxy:
        env = env_for(sw, model_env, proxy.endpoint, ORCHARD_STORAGE_ATTEMPTS=2)
        args = [str(orchard_bin), *map(str, featurize_args(INPUT, output, prepared_model))]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not parts("features"):
            time.sleep(0.02)
        proxy.set(slowdown_rate=1.0)  # planned, a shard done: from now on every request is refused
        out, err = proc.communicate(timeout=300)
        LOGS.append(out + err)
        assert proxy.counts().get("faults_503", 0) > 0
        assert proc.returncode == 1, err
        lines = orchard_lines(err)
        assert len(lines) == 1 and err.rstrip().splitlines()[-1] == lines[0], err
        line = lines[0]
        named = rf"{INPUT}/[^:]+\.jpg" if output_on == "local" else rf"s3://{OUT}/outage/[^:]+|{INPUT}/[^:]+\.jpg"
        assert re.match(rf"orchard: ({named}): ", line), f"names the object: {line}"
        assert "SLOW_DOWN" in line or "SlowDown" in line or "503" in line, f"names the cause: {line}"
        assert "after 2 attempts" in line and "rerun" in line, line
        # a store failure is never an error row (every input is a good image)
        assert all(table(k).num_rows == 0 for k in parts("errors"))
        finished = len(parts("features"))
        assert 1 <= finished < SHARDS

        proxy.set(slowdown_rate=0)  # the store recovers
        p = orchard(orchard_bin, env, *featurize_args(INPUT, output, prepared_model))
    skipped = int(re.search(rf"(\d+) of {SHARDS} shards were already finished", p.stderr).group(1))
    assert skipped == finished
    assert_each_input_once(tables(), input_uris)
    assert_features_match(tables(), reference)


def test_validate_through_an_outage_is_a_store_error(sw, sw_run, orchard_bin, model_env):
    """validate on an s3:// OUTPUT whose store refuses every read of one part (503 SlowDown) for
    longer than the retries last: exit 1 with one line naming the part and the store failure ("gave
    up ... after N attempts"), never a verdict on OUTPUT ("is not valid"); the part was read at most
    ORCHARD_STORAGE_ATTEMPTS x SDK_ATTEMPTS times."""
    c = sw.client()
    copy_prefix(c, "run", "validate-outage")  # a finished OUTPUT of its own
    output = f"s3://{OUT}/validate-outage"
    orchard(orchard_bin, env_for(sw, model_env), "validate", output)  # valid, when the store answers
    part = f"/{OUT}/validate-outage/features/part-00003.parquet"
    attempts = 2
    with FaultProxy(sw.endpoint, fate=lambda method, path, n: "503" if method == "GET" and path == part else None) \
            as proxy:
        p = orchard(orchard_bin, env_for(sw, model_env, proxy.endpoint, ORCHARD_STORAGE_ATTEMPTS=attempts),
                    "validate", output, check=False)
        gets = statuses(proxy, "GET", part)
    assert p.returncode == 1, p.stderr
    assert "is not valid" not in p.stderr and not re.search(r"^validate: ", p.stderr, re.M), \
        f"a store failure is not a verdict on OUTPUT:\n{p.stderr}"
    lines = orchard_lines(p.stderr)
    assert len(lines) == 1, p.stderr
    assert "part-00003.parquet" in lines[0] and f"gave up on reading {output}/features/part-00003.parquet" \
        f" after {attempts} attempts" in lines[0], lines[0]
    assert "SLOW_DOWN" in lines[0] or "503" in lines[0], lines[0]
    assert attempts <= len(gets) <= attempts * SDK_ATTEMPTS, f"{len(gets)} GETs of {part}: {gets}"


def test_spent_retries_are_not_retried_again(sw, sw_run, orchard_bin, model_env):
    """pca on an s3:// OUTPUT whose store serves one features part once (the moments pass) and then
    refuses every read of it: the projection, which reads that part inside the retried write of its
    pca_features part, fails with one line and "gave up"; the part is read at most 1 +
    ORCHARD_STORAGE_ATTEMPTS x SDK_ATTEMPTS times (a read whose retries are spent is passed on, not
    retried by the write's loop: ATTEMPTS squared x SDK_ATTEMPTS)."""
    c = sw.client()
    copy_prefix(c, "run", "nested-outage")
    output = f"s3://{OUT}/nested-outage"
    part = f"/{OUT}/nested-outage/features/part-00003.parquet"
    attempts = 3

    def fate(method, path, n):
        if method == "GET" and path == part:
            return "ok" if n == 0 else "503"
        return None

    with FaultProxy(sw.endpoint, fate=fate) as proxy:
        p = orchard(orchard_bin, env_for(sw, model_env, proxy.endpoint, ORCHARD_STORAGE_ATTEMPTS=attempts),
                    "pca", output, "--k", 3, check=False)
        gets = statuses(proxy, "GET", part)
    assert p.returncode == 1, p.stderr
    lines = orchard_lines(p.stderr)
    assert len(lines) == 1 and "part-00003.parquet" in lines[0] and "gave up" in lines[0], p.stderr
    assert gets[0] in OK and len(gets) > 1 + attempts, f"the projection read the part again: {gets}"
    assert len(gets) <= 1 + attempts * SDK_ATTEMPTS, \
        f"{len(gets)} GETs of {part} (bound {1 + attempts * SDK_ATTEMPTS}): retries of retries"


def test_corrupt_images_on_s3_are_error_rows(sw, images, orchard_bin, model_env, prepared_model):
    c = sw.client()
    real = sorted((images / CLASSES[0]).glob("*.jpg"))
    for f in real[:3]:
        c.upload_file(str(f), IN, f"mixed/{CLASSES[0]}/{f.name}")
    data = real[0].read_bytes()
    c.put_object(Bucket=IN, Key="mixed/Bad/truncated.jpg", Body=data[: len(data) // 2])
    c.put_object(Bucket=IN, Key="mixed/Bad/empty.jpg", Body=b"")
    c.put_object(Bucket=IN, Key="mixed/Bad/text.jpg", Body=b"not an image\n")
    env = env_for(sw, model_env)
    p = orchard(orchard_bin, env, *featurize_args(f"s3://{IN}/mixed", f"s3://{OUT}/mixed", prepared_model))
    assert "3 embedded, 3 errors" in p.stderr
    good = [f"s3://{IN}/mixed/{CLASSES[0]}/{f.name}" for f in real[:3]]
    bad = [f"s3://{IN}/mixed/Bad/{n}" for n in ("empty.jpg", "text.jpg", "truncated.jpg")]
    feats, errs = assert_each_input_once(s3_tables(c, OUT, "mixed"), good + bad)
    assert sorted(feats.column("path").to_pylist()) == good
    errors = dict(zip(errs.column("path").to_pylist(), errs.column("error").to_pylist()))
    assert sorted(errors) == bad
    assert "empty" in errors[bad[0]].lower()
    assert "not a jpeg or png" in errors[bad[1]].lower()
    assert "truncated" in errors[bad[2]].lower()
    orchard(orchard_bin, env, "validate", f"s3://{OUT}/mixed")


def test_model_on_s3(sw, reference, orchard_bin, model_env, prepared_model, tmp_path):
    """--model s3://.../x.ov is fetched into the model cache and gives the local model's features."""
    c = sw.client()
    cache = tmp_path / "cache"
    env = env_for(sw, model_env, ORCHARD_CACHE=cache)
    p = orchard(orchard_bin, env, *featurize_args(INPUT, f"s3://{OUT}/s3model", f"s3://{IN}/models/mobilenet_v2.ov"))
    fetched = list(cache.rglob("mobilenet_v2.ov"))
    assert len(fetched) == 1 and fetched[0].read_bytes() == prepared_model.read_bytes()
    assert str(fetched[0]) in p.stderr
    assert_features_match(s3_tables(c, OUT, "s3model"), reference)


def test_remote_model_is_fetched_once(sw, reference, orchard_bin, model_env, prepared_model, tmp_path):
    """--model s3://.../x.ov with the same ORCHARD_CACHE: the first run GETs it, the second only asks
    the store about it (one HEAD, no GET) and embeds with the cached copy; re-uploaded with other
    bytes of another size, it is fetched again. Every run gives the local model's features."""
    c = sw.client()
    key = "models/fetch-once.ov"
    model_path = f"/{IN}/{key}"
    c.upload_file(str(prepared_model), IN, key)
    cache = tmp_path / "cache"
    want = as_s3(reference["rows"], reference["root"], INPUT)[:SHARD]  # --limit SHARD: the first shard

    def featurize(prefix):
        with FaultProxy(sw.endpoint) as proxy:
            orchard(orchard_bin, env_for(sw, model_env, proxy.endpoint, ORCHARD_CACHE=cache),
                    *featurize_args(INPUT, f"s3://{OUT}/{prefix}", f"s3://{IN}/{key}", "--limit", SHARD))
            got = feature_rows(read_parts(c, OUT, prefix, "features"))
            assert got == want, "the local model's features"
            return statuses(proxy, "GET", model_path), statuses(proxy, "HEAD", model_path)

    def cached():
        return sorted((p.stat().st_size, p.read_bytes()) for p in cache.rglob("fetch-once.ov"))

    gets, _ = featurize("fetch-1")
    assert len(gets) == 1 and gets[0] in OK, f"the first run GETs the model once: {gets}"
    assert cached() == [(prepared_model.stat().st_size, prepared_model.read_bytes())]

    gets, heads = featurize("fetch-2")
    assert gets == [], f"a warm cache: the model must not be downloaded again ({len(gets)} GETs)"
    assert heads == [200], f"one HEAD to see whether it changed: {heads}"

    # the same model in other bytes: one more newline at the end of its graph's XML, another size
    magic, fingerprint, sizes, rest = prepared_model.read_bytes().split(b"\n", 3)
    xml_bytes, bin_bytes = map(int, sizes.split())
    changed = tmp_path / "changed.ov"
    changed.write_bytes(b"\n".join([magic, fingerprint, b"%d %d" % (xml_bytes + 1, bin_bytes),
                                    rest[:xml_bytes] + b"\n" + rest[xml_bytes:]]))
    assert changed.stat().st_size != prepared_model.stat().st_size
    c.upload_file(str(changed), IN, key)
    gets, _ = featurize("fetch-3")
    assert len(gets) == 1 and gets[0] in OK, f"a changed object is fetched again: {gets}"
    assert (changed.stat().st_size, changed.read_bytes()) in cached(), "the cache holds the new bytes"


def _config_error_case(case, sw, moto, model_env, prepared_model):
    """(server, env, argv, what the one line must say) of a misconfiguration."""
    server = moto if case == "missing-output-bucket" else sw
    env = env_for(server, model_env)
    out = f"s3://{OUT}/config-{case}"
    args = featurize_args(INPUT, out, prepared_model)
    if case == "wrong-secret":
        env["AWS_SECRET_ACCESS_KEY"] = "Wr0ng" + server.secret_key[5:]
        return server, env, args, ["access denied", "AWS_ACCESS_KEY_ID"]
    if case == "wrong-key-id":
        env["AWS_ACCESS_KEY_ID"] = "AKIAWRONGWRONGWRONG0"
        return server, env, args, ["access denied", "AWS_ACCESS_KEY_ID"]
    if case == "missing-input-bucket":
        return server, env, featurize_args("s3://no-such-bucket/fruits", out, prepared_model), ["no such bucket"]
    if case == "missing-output-bucket":  # on moto: SeaweedFS creates a bucket on its first PutObject
        return server, env, featurize_args(INPUT, "s3://no-such-bucket/out", prepared_model), ["no such bucket"]
    raise ValueError(case)


# (No region configured is no longer a misconfiguration: the store's answer gives it; see
# test_s3_region.py for that and for the one line when nothing can tell it.)
@pytest.mark.parametrize("case", ["wrong-secret", "wrong-key-id", "missing-input-bucket",
                                  "missing-output-bucket"])
def test_misconfiguration_gives_one_line_saying_what_to_do(case, request, sw, orchard_bin, model_env, prepared_model):
    moto = request.getfixturevalue("moto") if case == "missing-output-bucket" else None
    server, env, args, says = _config_error_case(case, sw, moto, model_env, prepared_model)
    p = orchard(orchard_bin, env, *args, check=False, timeout=120)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchard: "), p.stderr
    for s in says:
        assert s in lines[0], f"{s!r} not in: {lines[0]}"
    assert server.secret_key not in p.stderr and env.get("AWS_SECRET_ACCESS_KEY", "-") not in p.stderr
    names = [b["Name"] for b in server.client().list_buckets()["Buckets"]]
    assert sorted(names) == sorted([IN, OUT]), "no bucket created"


def _all_objects(server, bucket):
    c = server.client()
    return {k: get(c, bucket, k) for k in keys(c, bucket, "")}


def _leaks(key: str, data: bytes, secret: str) -> bool:
    """Whether secret is in the object's bytes, or in a Parquet object's decoded strings."""
    if secret.encode() in data:
        return True
    if key.endswith(".parquet"):
        t = pq.read_table(pa.BufferReader(data))
        meta = b"".join(k + v for k, v in (t.schema.metadata or {}).items())
        if secret.encode() in meta:
            return True
        for name in t.column_names:
            if pa.types.is_string(t.schema.field(name).type):
                if any(secret in s for s in t.column(name).to_pylist() if s):
                    return True
    return False


def test_secret_key_never_leaks(sw, reference, orchard_bin, model_env, prepared_model, tmp_path):
    """Keys given in the URI (s3://KEY:SECRET@bucket/...), no keys in the environment: the run works,
    and the secret is in no output object and in no output of any run of this module."""
    secret, key_id = sw.secret_key, sw.access_key
    env = env_for(sw, model_env)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(k)
    (tmp_path / "empty").write_text("")
    env.update(HOME=str(tmp_path), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "empty"),
               AWS_CONFIG_FILE=str(tmp_path / "empty"))
    with_keys = f"s3://{key_id}:{secret}@"
    orchard(orchard_bin, env, "run", f"{with_keys}{IN}/fruits", f"{with_keys}{OUT}/urikeys", "--model", prepared_model,
            "--shard-size", SHARD, "--quiet", "--k", 3, "--csv", f"{with_keys}{OUT}/urikeys.csv")
    c = sw.client()
    assert_features_match(s3_tables(c, OUT, "urikeys"), reference)
    assert read_parquet(c, OUT, "urikeys/_manifest.parquet").schema.metadata[b"input"] == INPUT.encode()

    # failing runs whose messages name URIs with keys in them
    wrong = "Wr0ngS3cret" + secret[11:]
    wrong_raw = "Wr0ng/S3cret+" + secret[13:]
    wrong_enc = wrong_raw.replace("/", "%2F").replace("+", "%2B")
    failing = [
        ["featurize", f"s3://{key_id}:{wrong}@{IN}/fruits", f"s3://{key_id}:{wrong}@{OUT}/wrongkeys", "--model", prepared_model],
        ["featurize", f"{with_keys}{IN}/nothing-here", f"{with_keys}{OUT}/nothing", "--model", prepared_model],
        ["featurize", f"{with_keys}{IN}/fruits", f"{with_keys}{OUT}/nomodel", "--model", f"{with_keys}{IN}/models/none.ov"],
        ["featurize", f"s3://{key_id}@{IN}/fruits", f"{with_keys}{OUT}/halfkeys", "--model", prepared_model],
        ["featurize", f"gs://{key_id}:{secret}@{IN}/fruits", f"{with_keys}{OUT}/scheme", "--model", prepared_model],
        ["validate", f"{with_keys}{OUT}/nomodel"],
        # AWS secrets hold '/' and '+': percent-encoded as they should be, and raw
        ["featurize", f"s3://{key_id}:{wrong_enc}@{IN}/fruits", f"s3://{key_id}:{wrong_enc}@{OUT}/enc", "--model", prepared_model],
        ["featurize", f"s3://{key_id}:{wrong_raw}@{IN}/fruits", tmp_path / "raw", "--model", prepared_model],
    ]
    for args in failing:
        p = orchard(orchard_bin, env, *args, check=False, timeout=120)
        assert p.returncode == 1 and len(orchard_lines(p.stderr)) == 1, p.stderr
        assert wrong not in p.stderr and wrong_raw not in p.stderr and wrong_enc not in p.stderr
    assert "gs://***@" in LOGS[-4], "the URI with keys is printed redacted"

    for log in LOGS:  # this test's runs and every earlier one of the module, failing ones included
        assert secret not in log and wrong not in log and wrong_raw not in log and wrong_enc not in log
    objects = _all_objects(sw, OUT)
    assert len(objects) >= 30
    leaked = [k for k, data in objects.items() if any(_leaks(k, data, x) for x in (secret, wrong, wrong_raw, wrong_enc))]
    assert not leaked, f"the secret key is in {leaked}"
    uri_run = {k: v for k, v in objects.items() if k.startswith("urikeys")}
    assert not [k for k, data in uri_run.items() if _leaks(k, data, key_id)], "a URI's keys are never stored"
