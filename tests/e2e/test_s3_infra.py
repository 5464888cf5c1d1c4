"""The S3 test infrastructure itself: servers (s3_servers.py) and the fault proxy (fault_proxy.py)."""
import base64
import hashlib
import http.client
import os
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from fault_proxy import FaultProxy, s3_operation
from s3_servers import MotoServer, SeaweedFS, start_s3

NO_RETRY = {"total_max_attempts": 1}


def _assert_stopped(server, pid, tmpdir):
    """The server's process (group) is gone and its temp dir removed."""
    assert not server.pid_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not tmpdir.exists()


@pytest.fixture(scope="module")
def s3():
    """One SeaweedFS for the module, with bucket 'proxy' holding 'small'; checks its stop."""
    server = SeaweedFS()
    pid, tmpdir = server.proc.pid, server.tmpdir
    try:
        server.create_bucket("proxy")
        server.client().put_object(Bucket="proxy", Key="small", Body=b"0123456789")
        yield server
    finally:
        server.stop()
    _assert_stopped(server, pid, tmpdir)


def _round_trip(server, tree, n_keys, page_size):
    assert server.endpoint.startswith("http://127.0.0.1:") and server.region == "eu-west-3"
    server.create_bucket("orchard-in")
    c = server.client()
    c.put_object(Bucket="orchard-in", Key="x/hello.txt", Body=b"hello")
    assert c.get_object(Bucket="orchard-in", Key="x/hello.txt")["Body"].read() == b"hello"

    uris = server.upload_tree(tree, "orchard-in", "fruits/")
    assert uris == [f"s3://orchard-in/fruits/{rel}" for rel in ("a/1.jpg", "a/2.jpg", "b/c/3.png")]
    got = c.get_object(Bucket="orchard-in", Key="fruits/b/c/3.png")["Body"].read()
    assert got == b"b/c/3.png" * 100

    server.put_many("orchard-in", "many", n_keys)
    pages = list(c.get_paginator("list_objects_v2").paginate(
        Bucket="orchard-in", Prefix="many/", PaginationConfig={"PageSize": page_size}))
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert len(pages) == -(-n_keys // page_size)
    assert keys == [f"many/{i:06d}" for i in range(n_keys)]

    env = server.env()
    assert "AWS_PROFILE" not in env and env["AWS_ENDPOINT_URL_S3"] == server.endpoint
    assert env["AWS_EC2_METADATA_DISABLED"] == "true" and env["AWS_REGION"] == "eu-west-3"
    child = "import boto3; print(sorted(b['Name'] for b in boto3.client('s3').list_buckets()['Buckets']))"
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "'orchard-in'" in out.stdout, out.stderr


@pytest.fixture
def tree(tmp_path):
    for rel in ("a/1.jpg", "a/2.jpg", "b/c/3.png"):
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(rel.encode() * 100)
    return tmp_path / "tree"


def test_seaweedfs_round_trip(s3, tree, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # must not leak into client() or env()
    _round_trip(s3, tree, n_keys=1500, page_size=1000)  # the server's own page size


def test_moto_round_trip_and_clean_stop(tree, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with start_s3("moto") as server:
        assert isinstance(server, MotoServer)
        pid, tmpdir = server.proc.pid, server.tmpdir
        _round_trip(server, tree, n_keys=250, page_size=100)  # moto's PUTs are slow
        assert server.client(service="emr").list_clusters()["Clusters"] == []
    _assert_stopped(server, pid, tmpdir)


@pytest.fixture
def proxy(s3):
    with FaultProxy(s3.endpoint) as p:
        yield p


def test_operation_names():
    assert s3_operation("GET", "/") == "ListBuckets"
    assert s3_operation("GET", "/b?list-type=2&prefix=a%2F") == "ListObjectsV2"
    assert s3_operation("POST", "/b/k?uploads") == "CreateMultipartUpload"
    assert s3_operation("PUT", "/b/k?partNumber=2&uploadId=u") == "UploadPart"
    assert s3_operation("POST", "/b/k?uploadId=u") == "CompleteMultipartUpload"
    assert s3_operation("DELETE", "/b/k?uploadId=u") == "AbortMultipartUpload"
    assert s3_operation("PUT", "/b/k/part-0.parquet") == "PutObject"
    assert s3_operation("GET", "/b/k?x-id=GetObject") == "GetObject"
    assert s3_operation("HEAD", "/b/k") == "HeadObject"
    assert s3_operation("PUT", "/b") == "CreateBucket"


def test_proxy_adds_latency(s3, proxy):
    c = s3.client(endpoint=proxy.endpoint)
    c.head_object(Bucket="proxy", Key="small")  # connect outside the timing
    proxy.set(latency_s=0.25)
    t0 = time.monotonic()
    for _ in range(4):
        c.head_object(Bucket="proxy", Key="small")
    slow = time.monotonic() - t0
    assert 4 * 0.25 <= slow < 4 * 0.25 + 2.0
    proxy.set(latency_s=0)
    t0 = time.monotonic()
    for _ in range(4):
        c.head_object(Bucket="proxy", Key="small")
    assert time.monotonic() - t0 < slow - 0.5


def test_proxy_slowdown_rate_and_limit(s3, proxy):
    proxy.set(slowdown_rate=0.3)
    c = s3.client(endpoint=proxy.endpoint, retries=NO_RETRY)
    codes = []
    for _ in range(200):
        try:
            c.get_object(Bucket="proxy", Key="small")["Body"].read()
            codes.append(200)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "SlowDown"
            codes.append(e.response["ResponseMetadata"]["HTTPStatusCode"])
    n = proxy.counts()
    assert codes.count(503) == n["faults_503"] and 40 <= n["faults_503"] <= 80
    assert n["GET"] == n["GetObject"] == 200 and codes.count(200) == 200 - n["faults_503"]
    assert [s for *_, s in proxy.requests()] == codes

    # a client that retries with backoff gets through (the body is a real S3 error)
    retrying = s3.client(endpoint=proxy.endpoint, retries={"mode": "standard", "max_attempts": 10})
    for _ in range(10):
        assert retrying.get_object(Bucket="proxy", Key="small")["Body"].read() == b"0123456789"

    # a PUT whose body is discarded leaves the connection usable; the limit bounds the faults
    injected = proxy.counts()["faults_503"]
    proxy.reset_counts()
    proxy.set(slowdown_rate=1.0, fault_limit=injected + 2)
    failed = 0
    for i in range(5):
        try:
            c.put_object(Bucket="proxy", Key=f"limited/{i}", Body=b"y" * 100_000)
        except ClientError:
            failed += 1
    assert failed == 2 and proxy.counts()["faults_503"] == 2 and proxy.counts()["PutObject"] == 5


def test_proxy_resets_at_rate(s3, proxy):
    proxy.set(reset_rate=0.2, slowdown_rate=0)
    c = s3.client(endpoint=proxy.endpoint, retries=NO_RETRY)
    errors = 0
    for _ in range(200):
        try:
            c.head_object(Bucket="proxy", Key="small")
        except BotoCoreError:  # ConnectionClosedError and friends
            errors += 1
    n = proxy.counts()
    assert errors == n["resets"] and 20 <= errors <= 60
    assert n["HEAD"] == n["HeadObject"] == 200
    assert sum(1 for *_, s in proxy.requests() if s is None) == errors


def test_proxy_counts_multipart_and_simple_puts(s3, proxy, tmp_path):
    big = tmp_path / "big.bin"
    data = os.urandom(20 * 1024 * 1024)
    big.write_bytes(data)
    c = s3.client(endpoint=proxy.endpoint)
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    c.upload_file(str(big), "proxy", "big.bin", Config=cfg)
    n = proxy.counts()
    assert n["CreateMultipartUpload"] == 1 and n["UploadPart"] == 3
    assert n["CompleteMultipartUpload"] == 1 and n.get("PutObject", 0) == 0
    assert n["PUT"] == 3 and n["POST"] == 2

    proxy.reset_counts()
    c.put_object(Bucket="proxy", Key="one.txt", Body=b"1")
    c.list_objects_v2(Bucket="proxy", Prefix="one")
    got = c.get_object(Bucket="proxy", Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    n = proxy.counts()
    assert (n["PutObject"], n["PUT"], n["ListObjectsV2"], n["GetObject"]) == (1, 1, 1, 1)
    assert [(m, s) for m, _, s in proxy.requests()] == [("PUT", 200), ("GET", 200), ("GET", 200)]
    assert proxy.requests()[0][1].startswith("/proxy/one.txt")


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with the length and sha256 of its (decoded) body, plus `?pad=N`
    bytes, chunked when the request was."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_PUT(self):
        h = hashlib.sha256()
        size = 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                chunk = self.rfile.read(n)
                self.rfile.readline()
                h.update(chunk)
                size += n
        else:
            chunk = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            h.update(chunk)
            size = len(chunk)
        body = f"{size} {h.hexdigest()}\n".encode()
        pad = int(self.path.partition("pad=")[2] or 0)
        self.send_response(200)
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (body, b"p" * pad):
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body) + pad))
            self.end_headers()
            self.wfile.write(body + b"p" * pad)


def test_proxy_streams_chunked_bodies_with_expect_continue():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as p:
            data = os.urandom(5 * 1024 * 1024 + 17)
            conn = http.client.HTTPConnection(p.endpoint.removeprefix("http://"), timeout=30)
            pieces = (data[i:i + 100_000] for i in range(0, len(data), 100_000))
            conn.request("PUT", "/b/k?pad=3000000", body=pieces, encode_chunked=True,
                         headers={"Expect": "100-continue", "Transfer-Encoding": "chunked"})
            r = conn.getresponse()
            line = r.readline()
            assert line == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
            assert r.read() == b"p" * 3_000_000
            for i in range(3):  # same connection, Content-Length both ways
                conn.request("PUT", f"/b/k{i}?pad=10", body=b"abc")
                r = conn.getresponse()
                assert r.read() == f"3 {hashlib.sha256(b'abc').hexdigest()}\n".encode() + b"p" * 10
            conn.close()
            assert p.counts()["PUT"] == 4 and p.counts()["PutObject"] == 4
    finally:
        upstream.shutdown()
        upstream.server_close()


class _StreamingTrailer(S3SigV4Auth):
    """SigV4 for an aws-chunked body with an unsigned trailing checksum (what the SDKs send)."""

    def payload(self, request):
        return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def test_proxy_forwards_aws_chunked_uploads(s3, proxy):
    data = os.urandom(3 * 1024 * 1024 + 5)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    step = 65536
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + step]), data[i:i + step])
                       for i in range(0, len(data), step))
    encoded += f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    conn = http.client.HTTPConnection(proxy.endpoint.removeprefix("http://"), timeout=30)
    proxy.set(slowdown_rate=1.0, fault_limit=1)  # the first upload's body is discarded, then 503
    for key, outer_chunked in (("slowed", False), ("by-length", False), ("by-chunks", True)):
        req = AWSRequest("PUT", f"{proxy.endpoint}/proxy/{key}", headers={
            "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": "x-amz-checksum-crc32"})
        _StreamingTrailer(Credentials(s3.access_key, s3.secret_key), "s3", s3.region).add_auth(req)
        headers = dict(req.headers.items())
        if outer_chunked:  # aws-chunked inside HTTP chunked framing, as a streaming client sends it
            headers["Transfer-Encoding"] = "chunked"
            body = (encoded[i:i + 100_000] for i in range(0, len(encoded), 100_000))
            conn.request("PUT", f"/proxy/{key}", body=body, headers=headers, encode_chunked=True)
        else:
            headers["Content-Length"] = str(len(encoded))
            conn.request("PUT", f"/proxy/{key}", body=encoded, headers=headers)
        r = conn.getresponse()
        assert r.status == (503 if key == "slowed" else 200), r.read()
        r.read()
    conn.close()
    c = s3.client()
    for key in ("by-length", "by-chunks"):
        assert c.get_object(Bucket="proxy", Key=key)["Body"].read() == data
    assert proxy.counts()["PutObject"] == 3 and proxy.counts()["faults_503"] == 1


def test_proxy_handles_64_concurrent_connections(s3, proxy):
    url = s3.client(endpoint=proxy.endpoint).generate_presigned_url(
        "get_object", Params={"Bucket": "proxy", "Key": "small"}, ExpiresIn=600)
    target = url.split(proxy.endpoint.removeprefix("http://"), 1)[1]
    host = proxy.endpoint.removeprefix("http://")

    def worker(_):
        conn = http.client.HTTPConnection(host, timeout=30)
        statuses = []
        for _ in range(25):
            conn.request("GET", target)
            r = conn.getresponse()
            assert r.read() == b"0123456789"
            statuses.append(r.status)
        conn.close()
        return statuses

    with ThreadPoolExecutor(64) as pool:
        statuses = [s for ss in pool.map(worker, range(64)) for s in ss]
    assert statuses == [200] * 1600 and proxy.counts()["GetObject"] == 1600
