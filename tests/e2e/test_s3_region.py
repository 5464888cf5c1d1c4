"""The bucket's region found by itself (a YARN container, a notebook or a Databricks cluster have no
AWS_REGION): with every region variable and config file removed, `orchard featurize s3:// s3://`
works against SeaweedFS (no x-amz-bucket-region header: us-east-1, as the AWS CLI assumes) and
moto (which reports the bucket's region); a missing bucket still gives its one line. When the
store cannot tell, the EC2 instance metadata service (IMDSv2, here a loopback stand-in that
requires the session token) gives it; when nothing can, the one-line error says what to set."""
import http.server
import threading

import pyarrow.parquet as pq
import pytest

from conftest import MODEL_DIR, copy_sample, run_orchard

CLASSES = ["Banana 1", "Kiwi 1"]


def no_region(env: dict) -> dict:
    env = dict(env)
    for k in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        env.pop(k, None)
    env["AWS_CONFIG_FILE"] = "/nonexistent/aws-config"
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/aws-credentials"
    return env


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    src = tmp_path_factory.mktemp("region") / "in"
    copy_sample(src, CLASSES, 3)
    return src


@pytest.mark.parametrize("server", ["seaweedfs", "moto_s3"])
def test_no_region_anywhere_works_against_the_store(server, request, images, orchard_bin, model_env, tmp_path):
    s3 = request.getfixturevalue(server)
    s3.create_bucket("region-in")
    s3.upload_tree(images, "region-in", "fruits")
    env = no_region({**model_env, **s3.env()})
    assert "AWS_REGION" not in env and "AWS_DEFAULT_REGION" not in env
    run_orchard(orchard_bin, env, "featurize", "s3://region-in/fruits", "s3://region-in/out", "--model", MODEL_DIR,
                "--quiet")
    body = s3.client().get_object(Bucket="region-in", Key="out/features/part-00000.parquet")["Body"].read()
    (tmp_path / "p.parquet").write_bytes(body)
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 6
    p = run_orchard(orchard_bin, env, "featurize", "s3://no-such-bucket-x/fruits", "s3://region-in/out2",
                    "--model", MODEL_DIR, check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "no such bucket" in p.stderr and "region" not in p.stderr, p.stderr


class _Imds(http.server.BaseHTTPRequestHandler):
    """EC2's metadata service as IMDSv2 speaks it: a PUT for a token, then GETs that carry it."""
    TOKEN = "tok-123"
    calls = []

    def do_PUT(self):
        _Imds.calls.append(("PUT", self.path))
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._answer(200 if ok else 400, self.TOKEN if ok else "")

    def do_GET(self):
        _Imds.calls.append(("GET", self.path))
        if self.headers.get("X-aws-ec2-metadata-token") != self.TOKEN:
            return self._answer(401, "")
        if self.path == "/latest/meta-data/placement/region":
            return self._answer(200, "eu-west-3")
        self._answer(404, "")

    def _answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_instance_metadata_then_the_one_line_error(images, orchard_bin, model_env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # A store that does not answer (nothing listens on port 1) cannot tell the region.
        env = no_region({**model_env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "AKIAX",
                         "AWS_SECRET_ACCESS_KEY": "secretsecret", "ORCHARD_STORAGE_ATTEMPTS": "1",
                         "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{server.server_port}"})
        env.pop("AWS_EC2_METADATA_DISABLED", None)
        p = run_orchard(orchard_bin, env, "featurize", "s3://region-in/fruits", "s3://region-in/out", "--model",
                        MODEL_DIR, check=False)
        assert ("GET", "/latest/meta-data/placement/region") in _Imds.calls, _Imds.calls
        assert p.returncode == 1 and "no AWS region" not in p.stderr, \
            f"the instance's region was taken; the store's failure remains: {p.stderr}"
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        p = run_orchard(orchard_bin, env, "featurize", "s3://region-in/fruits", "s3://region-in/out", "--model",
                        MODEL_DIR, check=False)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "no AWS region configured" in p.stderr and "AWS_REGION" in p.stderr, p.stderr
    finally:
        server.shutdown()


def test_a_failing_store_is_not_taken_for_one_without_a_region(seaweedfs, images, orchard_bin, model_env):
    """A 5xx to HeadBucket (a proxy, a restarting server) does not say "no location constraint": the
    region stays unknown (here: the one-line error), instead of signing every request for us-east-1."""
    from fault_proxy import FaultProxy
    seaweedfs.create_bucket("region-5xx")
    with FaultProxy(seaweedfs.endpoint,
                    fate=lambda method, path, n: "503" if method == "HEAD" and path == "/region-5xx" else None) as proxy:
        env = no_region({**model_env, **seaweedfs.env(proxy.endpoint), "AWS_EC2_METADATA_DISABLED": "true"})
        p = run_orchard(orchard_bin, env, "featurize", "s3://region-5xx/fruits", "s3://region-5xx/out", "--model",
                        MODEL_DIR, check=False)
        assert ("HEAD", "/region-5xx", 503) in [(m, t, st) for m, t, st in proxy.requests()], proxy.requests()
    assert p.returncode == 1 and "no AWS region configured" in p.stderr, p.stderr
