"""`orchard serve` end to end, over real HTTP on 127.0.0.1, with the standard library's http.client.

A TRAINED output is built once (8 visually distinct Fruits-360 classes x 40 Test images evenly spaced
over each class, `orchard run` then `orchard train --holdout 0.2`) and served; the photos posted are
other Test images of those classes (never among the 40 trained on). Covered:
  - classification: raw body and multipart upload, the top-1 label, probabilities (descending, top-5
    sum <= 1, all classes sum to 1), ?top=K, the model fingerprints and timings;
  - the hostile corpus (empty, random, text, truncated/corrupted JPEG and PNG, GIF, BMP, PNG and JPEG
    decompression bombs, multipart without `image`, bad ?top): a 4xx with a JSON error naming the
    problem, and the server still healthy after each; malformed HTTP (junk, huge headers and URLs,
    bad Content-Length and chunk sizes): a 4xx; chunked bodies, HTTP/1.0 and pipelining work;
    clients that go away mid-request; 404 and 405; 413 for a body over --max-body,
    answered from Content-Length before the body is sent; a body of exactly --max-body is read;
  - slow clients (headers or body one byte a second) cut after --read-timeout while others are served;
  - 32 concurrent keep-alive clients: every answer right and equal to the sequential one, batches of
    more than one image observed in /metrics;
  - load shedding (--queue 1 --workers 1 --max-batch 1): only 200s and 503s with Retry-After;
  - SIGTERM with requests in flight: all answered 200, exit status 0, the port then refuses;
  - /healthz, /readyz, GET / and the Prometheus text format of /metrics;
  - the default binding: 127.0.0.1 only.

Helpers used by test_serve_page.py too: Server, build_trained, held_out.
"""
import http.client
import io
import json
import math
import os
import queue
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import MODEL_DIR, TEST_IMAGES, run_orchard

CLASSES = ["Banana 1", "Kiwi 1", "Apple Red 1", "Lemon 1", "Strawberry 1", "Avocado 1", "Eggplant 1",
           "Pear 1"]
TRAIN_PER_CLASS = 40
LISTENING = re.compile(r"orchard serve: listening on http://(?P<host>[^:/\s]+):(?P<port>\d+)")
START_TIMEOUT_S = 120


# --------------------------------------------------------------------------- the trained output
_TRAINED: dict = {}


def training_photos(label: str) -> list:
    """The TRAIN_PER_CLASS Test photos of a class trained on: evenly spaced over its sorted files, so
    that every video of the class (plain and r_ rotations) is covered. (conftest.copy_sample's first 40
    cover one video only: photos of the other are then misclassified by any classifier, ~1 in 10.)"""
    files = sorted((TEST_IMAGES / label).glob("*.jpg"))
    return [files[i * len(files) // TRAIN_PER_CLASS] for i in range(TRAIN_PER_CLASS)]


def held_out(label: str, k: int = 0) -> Path:
    """The k-th of a class's Test photos that are not trained on (k = 0, 1, ... spread over the class)."""
    train = set(training_photos(label))
    rest = [f for f in sorted((TEST_IMAGES / label).glob("*.jpg")) if f not in train]
    return rest[(k * 13) % len(rest)]


def build_trained(tmp_path_factory, orchard_bin, env) -> Path:
    """OUTPUT of `orchard run` + `orchard train` on CLASSES x 40 Test photos; built once per process."""
    key = str(orchard_bin)
    if key not in _TRAINED:
        work = tmp_path_factory.mktemp("serve-trained")
        sample = work / "sample"
        for label in CLASSES:
            (sample / label).mkdir(parents=True)
            for f in training_photos(label):
                shutil.copyfile(f, sample / label / f.name)
        out = work / "out"
        run_orchard(orchard_bin, env, "run", sample, out, "--model", MODEL_DIR)
        run_orchard(orchard_bin, env, "train", out, "--holdout", "0.2")
        assert (out / "classifier" / "model.parquet").is_file(), "orchard train wrote no classifier/model.parquet"
        _TRAINED[key] = out
    return _TRAINED[key]


# --------------------------------------------------------------------------- the server process
class Server:
    """`orchard serve --classifier TRAINED --model MODEL_DIR --port 0 EXTRA...`, started and waited for
    (its one stdout line); stopped by its own pid (SIGTERM, then SIGKILL after 30 s)."""

    def __init__(self, orchard_bin, env, trained, log_dir: Path, *extra):
        self.log_path = log_dir / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.cmd = [str(orchard_bin), "serve", "--classifier", str(trained), "--model", str(MODEL_DIR),
                    "--port", "0", *map(str, extra)]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._log, env=env, text=True)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.line = self._wait_listening()
        m = LISTENING.fullmatch(self.line)
        self.host, self.port = m["host"], int(m["port"])

    def _pump(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"no listening line within {START_TIMEOUT_S} s: {self.cmd}\n{self.stderr_tail()}")
            if line is None:
                rc = self.proc.wait()
                pytest.fail(f"orchard serve exited {rc} before listening: {self.cmd}\n{self.stderr_tail()}")
            if LISTENING.fullmatch(line):
                return line
            self.stop()
            pytest.fail(f"unexpected stdout line before the listening line: {line!r}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- HTTP helpers
@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"HTTP {self.status}: body is not JSON: {self.body[:300]!r}") from None


def http_request(port, method, path, body=None, headers=None, timeout=60, conn=None) -> Reply:
    """One request on conn (kept open) or on a fresh connection (closed after)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        if own:
            conn.close()


def classify(port, body: bytes, query="", content_type="image/jpeg", conn=None, timeout=60) -> Reply:
    return http_request(port, "POST", "/v1/classify" + query, body, {"Content-Type": content_type},
                        timeout=timeout, conn=conn)


def check_predictions(reply: Reply, k: int = 5, classes: int = len(CLASSES)) -> list:
    """Asserts a 200 classification of k predictions; returns them."""
    assert reply.status == 200, f"HTTP {reply.status}: {reply.body[:500]!r}"
    doc = reply.json()
    preds = doc["predictions"]
    assert len(preds) == k, preds
    probs = [p["probability"] for p in preds]
    assert all(isinstance(p["label"], str) and p["label"] for p in preds), preds
    assert all(isinstance(x, (int, float)) and 0 <= x <= 1 and math.isfinite(x) for x in probs), probs
    assert probs == sorted(probs, reverse=True), f"not best first: {probs}"
    assert sum(probs) <= 1 + 1e-6, probs
    assert len({p["label"] for p in preds}) == k, f"a label twice: {preds}"
    model = doc["model"]
    assert model["classes"] == classes, model
    assert isinstance(model["embedding"], str) and model["embedding"], model
    assert isinstance(model["classifier"], str) and model["classifier"], model
    timings = doc["timings_ms"]
    for key in ("decode", "queue", "infer", "total"):
        assert isinstance(timings[key], (int, float)) and timings[key] >= 0, timings
    return preds


def check_error(reply: Reply, statuses=(400,), pattern: str | None = None) -> str:
    """Asserts an error status with a JSON {"error": message} (matching pattern); returns the message."""
    assert reply.status in statuses, f"expected {statuses}, got {reply.status}: {reply.body[:500]!r}"
    doc = reply.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"].strip(), doc
    if pattern:
        assert re.search(pattern, doc["error"], re.I), f"error {doc['error']!r} does not match /{pattern}/"
    return doc["error"]


def check_healthy(srv: Server):
    assert srv.alive(), f"orchard serve died (rc {srv.proc.returncode}):\n{srv.stderr_tail()}"
    r = http_request(srv.port, "GET", "/healthz", timeout=10)
    assert r.status == 200 and r.json() == {"status": "ok"}, (r.status, r.body)


def multipart(fields, boundary="orchard-test-boundary-7MA4YWxkTrZu0gW") -> tuple[bytes, str]:
    """A multipart/form-data body from (name, filename or None, content type or None, data) tuples."""
    out = io.BytesIO()
    for name, filename, ctype, data in fields:
        out.write(f"--{boundary}\r\n".encode())
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename:
            disp += f'; filename="{filename}"'
        out.write(disp.encode() + b"\r\n")
        if ctype:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- Prometheus text
SAMPLE_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?")
LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"\s*(?:,|$)')


def parse_prometheus(text: str) -> tuple[list, dict]:
    """([(name, {label: value}, float)], {name: type}); asserts every line is well formed."""
    samples, types = [], {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = SAMPLE_LINE.fullmatch(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = {}
        if m[2]:
            pos = 0
            while pos < len(m[2]):
                lm = LABEL_PAIR.match(m[2], pos)
                assert lm and lm.end() > pos, f"bad labels in {line!r}"
                labels[lm[1]] = lm[2]
                pos = lm.end()
        try:
            value = float(m[3])
        except ValueError:
            raise AssertionError(f"value is not a float: {line!r}") from None
        samples.append((m[1], labels, value))
    return samples, types


def metric_sum(samples, name, **labels) -> float:
    """The sum of name's samples whose labels include labels (0 when none)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def scrape(srv: Server) -> list:
    r = http_request(srv.port, "GET", "/metrics", timeout=10)
    assert r.status == 200, (r.status, r.body[:300])
    return parse_prometheus(r.body.decode())[0]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory, orchard_bin, model_env) -> Path:
    return build_trained(tmp_path_factory, orchard_bin, model_env)


@pytest.fixture(scope="module")
def server(orchard_bin, model_env, trained, tmp_path_factory):
    """The server with every option at its default (no --host either)."""
    with Server(orchard_bin, model_env, trained, tmp_path_factory.mktemp("serve-logs")) as srv:
        yield srv


def start(orchard_bin, model_env, trained, tmp_path, *extra) -> Server:
    return Server(orchard_bin, model_env, trained, tmp_path, *extra)


@pytest.fixture(scope="module")
def banana() -> bytes:
    return held_out("Banana 1").read_bytes()


# --------------------------------------------------------------------------- classification
def test_binds_loopback_by_default(server):
    assert server.host == "127.0.0.1", server.line
    check_healthy(server)
    # Bound to 127.0.0.1, not 0.0.0.0: another loopback address is refused.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", server.port), timeout=5).close()


@pytest.mark.parametrize("label", CLASSES)
def test_classifies_held_out_photo(server, label):
    preds = check_predictions(classify(server.port, held_out(label).read_bytes()))
    assert preds[0]["label"] == label, preds


def test_top_k(server, banana):
    preds = check_predictions(classify(server.port, banana, "?top=3"), k=3)
    assert preds[0]["label"] == "Banana 1"
    every = check_predictions(classify(server.port, banana, f"?top={len(CLASSES)}"), k=len(CLASSES))
    assert sorted(p["label"] for p in every) == sorted(CLASSES)
    assert abs(sum(p["probability"] for p in every) - 1) < 1e-4, every
    # The same photo gives the same numbers whatever K.
    assert abs(every[0]["probability"] - preds[0]["probability"]) < 1e-5


def test_any_content_type(server, banana):
    preds = check_predictions(classify(server.port, banana, content_type="application/octet-stream"))
    assert preds[0]["label"] == "Banana 1"


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_catalog_entries_come_with_the_labels(orchard_bin, model_env, trained, banana, tmp_path, kind):
    """--catalog: each prediction whose label is in the catalog carries its entry as "info"."""
    if kind == "csv":
        catalog = tmp_path / "catalog.csv"
        catalog.write_text('label,name,note\nBanana 1,Banana,"rich in potassium, sweet"\nKiwi 1,Kiwi,fuzzy\n')
    else:
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps({"Banana 1": {"name": "Banana", "note": "rich in potassium, sweet"},
                                       "Kiwi 1": {"name": "Kiwi", "note": "fuzzy"}}))
    with start(orchard_bin, model_env, trained, tmp_path, "--catalog", catalog) as srv:
        preds = check_predictions(classify(srv.port, banana, f"?top={len(CLASSES)}"), k=len(CLASSES))
    by_label = {p["label"]: p for p in preds}
    assert by_label["Banana 1"]["info"] == {"name": "Banana", "note": "rich in potassium, sweet"}
    assert by_label["Kiwi 1"]["info"] == {"name": "Kiwi", "note": "fuzzy"}
    assert all("info" not in p for p in preds if p["label"] not in ("Banana 1", "Kiwi 1"))


def test_multipart_upload(server):
    body, ctype = multipart([("note", None, None, b"a kiwi from the garden"),
                             ("image", "kiwi.jpg", "image/jpeg", held_out("Kiwi 1").read_bytes())])
    preds = check_predictions(classify(server.port, body, content_type=ctype))
    assert preds[0]["label"] == "Kiwi 1", preds


# --------------------------------------------------------------------------- hostile corpus
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid PNG header claiming width x height RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + _png_chunk(b"IEND", b""))


def jpeg_bomb(jpeg: bytes, size=65_000) -> bytes:
    """The JPEG with its SOF0 frame header claiming size x size pixels."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", size, size) + jpeg[i + 9:]


def pillow_bytes(jpeg: bytes, fmt: str) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").save(out, format=fmt)
    return out.getvalue()


def zero_middle(data: bytes) -> bytes:
    a, b = len(data) * 2 // 5, len(data) * 3 // 5
    return data[:a] + b"\0" * (b - a) + data[b:]


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def half(data: bytes) -> bytes:
    return data[:len(data) // 2]


EMPTY = r"empty|no (image|data|body|bytes)|0 bytes|nothing"
SIZE = r"pixel|size|large|big|dimension|bomb"
# name -> (make(jpeg) -> (query, content type, body), statuses, pattern of the error message)
HOSTILE = {
    "empty body": (lambda j: ("", "image/jpeg", b""), (400,), EMPTY),
    "one random byte": (lambda j: ("", "image/jpeg", rand(1, 1)), (400,), None),
    "10 KiB random": (lambda j: ("", "image/jpeg", rand(10240, 2)), (400,), None),
    "text file": (lambda j: ("", "text/plain", b"This is a shopping list, not a photo.\nApples, pears.\n" * 20),
                  (400,), None),
    "JPEG header then random": (lambda j: ("", "image/jpeg", b"\xff\xd8\xff\xe0" + rand(4096, 3)), (400,), None),
    "JPEG truncated at half": (lambda j: ("", "image/jpeg", half(j)), (400,), None),
    "PNG truncated at half": (lambda j: ("", "image/png", half(pillow_bytes(j, "PNG"))), (400,), None),
    "GIF": (lambda j: ("", "image/gif", pillow_bytes(j, "GIF")), (400,), None),
    "BMP": (lambda j: ("", "image/bmp", pillow_bytes(j, "BMP")), (400,), None),
    "PNG bomb 100000x100000": (lambda j: ("", "image/png", png_bomb()), (400,), SIZE),
    "JPEG bomb 65000x65000": (lambda j: ("", "image/jpeg", jpeg_bomb(j)), (400,), SIZE),
    # Under Pillow's limit but over the service's: a progressive JPEG this size would hold ~200 MB of
    # coefficients while decoding, whatever the DCT scale.
    "JPEG 8000x8000 header": (lambda j: ("", "image/jpeg", jpeg_bomb(j, 8000)), (400,), r"service's limit"),
    "PNG 8000x8000 header": (lambda j: ("", "image/png", png_bomb(8000, 8000)), (400,), r"service's limit"),
    "multipart without image": (lambda j: ("",) + multipart([("file", "a.jpg", "image/jpeg", j)])[::-1], (400,),
                                r"image"),
    "multipart, empty image": (lambda j: ("",) + multipart([("image", "a.jpg", "image/jpeg", b"")])[::-1], (400,),
                               None),
    "multipart, garbage body": (lambda j: ("", "multipart/form-data; boundary=xyz", rand(2048, 4)), (400,), None),
    "top=0": (lambda j: ("?top=0", "image/jpeg", j), (400,), r"top"),
    "top=-1": (lambda j: ("?top=-1", "image/jpeg", j), (400,), r"top"),
    "top=abc": (lambda j: ("?top=abc", "image/jpeg", j), (400,), r"top"),
    "top=": (lambda j: ("?top=", "image/jpeg", j), (400,), r"top"),
    "top=100000": (lambda j: ("?top=100000", "image/jpeg", j), (400,), r"top"),
    "top=99999999999999999999": (lambda j: ("?top=99999999999999999999", "image/jpeg", j), (400,), r"top"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input(server, banana, case):
    make, statuses, pattern = HOSTILE[case]
    query, ctype, body = make(banana)
    check_error(classify(server.port, body, query, ctype), statuses, pattern)
    check_healthy(server)


def test_bytes_that_are_not_utf8_in_the_target(server):
    """A request target with bytes 0x80-0xFF (Beast accepts them) gets its JSON 404; the message
    quoting it stays valid JSON."""
    reply = raw_request(server.port, b"GET /\xff\xfe/fruit HTTP/1.1\r\nHost: x\r\n\r\n")
    check_error(reply, (404,))
    reply = raw_request(server.port, b"POST /v1/classify?top=\xff HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    check_error(reply, (400,))
    check_healthy(server)


def test_head_has_the_length_of_get(server):
    get = http_request(server.port, "GET", "/")
    head = http_request(server.port, "HEAD", "/")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == len(get.body) > 1000


def test_corrupted_middle_is_deterministic(server, banana):
    """Zeroed entropy-coded bytes may still decode (to a damaged picture): either a 200 with valid
    predictions or a 400, and the same answer every time."""
    body = zero_middle(banana)
    first, second = classify(server.port, body), classify(server.port, body)
    assert first.status == second.status, (first.status, second.status)
    if first.status == 200:
        a, b = check_predictions(first), check_predictions(second)
        assert [p["label"] for p in a] == [p["label"] for p in b]
    else:
        check_error(first, (400,))
    check_healthy(server)


def test_unknown_path_and_wrong_method(server, banana):
    check_error(http_request(server.port, "GET", "/nope"), (404,))
    check_error(http_request(server.port, "POST", "/v2/classify", banana), (404,))
    check_error(http_request(server.port, "GET", "/v1/classify"), (405,))
    check_error(http_request(server.port, "PUT", "/v1/classify", banana), (405,))
    check_healthy(server)


# --------------------------------------------------------------------------- malformed HTTP
def raw_request(port, data: bytes, timeout=10) -> Reply:
    """Sends data as is on a fresh connection and parses the first response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:      # the server may answer and close before reading everything
            pass
        r = http.client.HTTPResponse(s)
        r.begin()
        return Reply(r.status, r.headers, r.read())


def raw_until_closed(port, data: bytes, timeout=10) -> bytes:
    """Sends data on a fresh connection; returns all the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def chunked(data: bytes, size=1000) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


HOST = b"Host: 127.0.0.1\r\n"
POST = b"POST /v1/classify HTTP/1.1\r\n" + HOST
# name -> (request bytes, may the server reset instead of answering: it does not read all of them)
MALFORMED = {
    "garbage request line": (b"HELLO\r\n\r\n", False),
    "binary junk": (bytes(range(256)) * 4, False),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
    "HTTP/9.9": (b"GET /healthz HTTP/9.9\r\n" + HOST + b"\r\n", False),
    "NUL in the path": (b"GET /he\0althz HTTP/1.1\r\n" + HOST + b"\r\n", False),
    "200 KB header": (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 200_000 + b"\r\n\r\n", True),
    "20000 headers": (b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: 1\r\n" % i for i in range(20000))
                      + b"\r\n", True),
    "200 KB URL": (b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", True),
    "Content-Length -1": (POST + b"Content-Length: -1\r\n\r\n", False),
    "Content-Length abc": (POST + b"Content-Length: abc\r\n\r\n", False),
    "Content-Length 10^23": (POST + b"Content-Length: 99999999999999999999999\r\n\r\n", False),
    "two Content-Lengths": (POST + b"Content-Length: 10\r\nContent-Length: 5\r\n\r\n0123456789", False),
    "bad chunk size": (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", False),
    "2^72 chunk size": (POST + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc", False),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_http(server, case):
    data, may_reset = MALFORMED[case]
    try:
        reply = raw_request(server.port, data)
    except ConnectionResetError:
        assert may_reset, "connection reset without an answer"
    else:
        assert 400 <= reply.status < 500, f"HTTP {reply.status}: {reply.body[:300]!r}"
    check_healthy(server)


def test_chunked_http10_and_pipelined_requests(server, banana):
    reply = raw_request(server.port, POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(banana))
    assert check_predictions(reply)[0]["label"] == "Banana 1"
    reply = raw_request(server.port, b"POST /v1/classify HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(banana) + banana)
    assert check_predictions(reply)[0]["label"] == "Banana 1"
    out = raw_until_closed(server.port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\nGET /readyz HTTP/1.1\r\n" + HOST
                           + b"Connection: close\r\n\r\n")
    assert re.findall(rb"^HTTP/1\.[01] (\d{3}) ", out, re.M) == [b"200", b"200"], out[:500]
    assert b'{"status":"ok"}' in out.replace(b" ", b"") and b'{"status":"ready"}' in out.replace(b" ", b"")


def test_clients_that_go_away(server, banana):
    """Clients closing (or resetting) mid-body, or right after sending a whole request without
    reading the answer: the server neither crashes (SIGPIPE) nor leaks into later answers."""
    for i in range(16):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if i % 2:    # RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        head = POST + b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(banana)
        s.sendall(head + (banana if i % 4 < 2 else banana[:len(banana) // 3]))
        s.close()
    time.sleep(1)    # let the server answer into the closed sockets
    check_healthy(server)
    assert check_predictions(classify(server.port, banana))[0]["label"] == "Banana 1"


def test_expect_100_continue(server, banana):
    """curl sends `Expect: 100-continue` for bodies over 1 MiB and waits 1 s for the go-ahead."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(POST + b"Expect: 100-continue\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                  % len(banana))
        s.settimeout(0.9)    # curl waits 1 s for it
        try:
            first = s.recv(65536)
        except TimeoutError:
            first = b""
        assert first.startswith(b"HTTP/1.1 100"), f"no 100 Continue within 0.9 s: {first[:200]!r}"
        s.settimeout(30)
        s.sendall(banana)
        r = http.client.HTTPResponse(s)
        r.begin()
        assert r.status == 200 and json.loads(r.read())["predictions"][0]["label"] == "Banana 1"


# --------------------------------------------------------------------------- body size
def test_oversized_body_refused_from_content_length(server):
    """Content-Length 30 MiB (> the default 20 MiB): the 413 comes after only the headers and 1 KiB."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 31457280\r\n\r\n" + b"\xff" * 1024)
        r = http.client.HTTPResponse(s)
        r.begin()
        reply = Reply(r.status, r.headers, r.read())
    check_error(reply, (413,))
    check_healthy(server)


def test_body_of_exactly_max_body_is_read(server):
    """20 MiB exactly is not 'larger than --max-body': read and refused as not an image (400)."""
    check_error(classify(server.port, b"\0" * 20971520, timeout=120), (400,))
    check_healthy(server)


def test_small_max_body(orchard_bin, model_env, trained, tmp_path, banana):
    with start(orchard_bin, model_env, trained, tmp_path, "--max-body", len(banana) - 1) as srv:
        check_error(classify(srv.port, banana), (413,))
        body, ctype = multipart([("image", "a.jpg", "image/jpeg", banana)])
        check_error(classify(srv.port, body, content_type=ctype), (413,))
        check_healthy(srv)


# --------------------------------------------------------------------------- slow clients
def peer_closed(sock) -> bool:
    """True once the server has closed the connection (EOF or reset); drains any reply it sent."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def test_slow_clients_are_cut(orchard_bin, model_env, trained, tmp_path, banana):
    request_line = b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
    with start(orchard_bin, model_env, trained, tmp_path, "--read-timeout", 2) as srv:
        t0 = time.monotonic()
        slow = {}   # socket -> bytes still to dribble
        for _ in range(4):     # headers one byte a second
            slow[socket.create_connection(("127.0.0.1", srv.port), timeout=10)] = request_line * 10
        for _ in range(2):     # headers at once, then the body one byte a second
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(request_line + b"Content-Length: 5000\r\n\r\n")
            slow[s] = b"\xff" * 5000
        closed_after = {}
        with ThreadPoolExecutor(1) as pool:
            def normal():
                time.sleep(0.5)
                t = time.monotonic()
                return classify(srv.port, banana, timeout=30), time.monotonic() - t
            fast = pool.submit(normal)
            while len(closed_after) < len(slow) and time.monotonic() - t0 < 12:
                for s, rest in slow.items():
                    if s in closed_after:
                        continue
                    if peer_closed(s):
                        closed_after[s] = time.monotonic() - t0
                        continue
                    try:
                        s.send(rest[:1])
                        slow[s] = rest[1:]
                    except OSError:
                        closed_after[s] = time.monotonic() - t0
                time.sleep(1)
            reply, took = fast.result(timeout=60)
        for s in slow:
            s.close()
        times = sorted(closed_after.values())
        assert len(times) == len(slow), f"only {len(times)} of {len(slow)} slow connections cut in 12 s: {times}"
        assert all(1.5 <= t <= 6.5 for t in times), f"cut after {times} s, --read-timeout 2"
        assert check_predictions(reply)[0]["label"] == "Banana 1"
        assert took < 5, f"a normal request took {took:.1f} s while slow clients were connected"
        check_healthy(srv)


# --------------------------------------------------------------------------- concurrency
def post_all(port, bodies, conn_timeout=120) -> list:
    """Posts bodies one after the other on one keep-alive connection; returns the Replies."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=conn_timeout)
    try:
        return [classify(port, b, conn=conn) for b in bodies]
    finally:
        conn.close()


def concurrently(n, fn) -> list:
    """Runs fn(i) for i < n in n threads released together by a barrier; returns the results in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(timeout=60)
        return fn(i)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_clients_batched(server):
    photos = [(c, held_out(c, k).read_bytes()) for c in CLASSES for k in range(5)]    # 40 photos
    baseline = [check_predictions(classify(server.port, b))[0] for _, b in photos]
    assert [p["label"] for p in baseline] == [c for c, _ in photos], "sequential answers wrong"
    before = scrape(server)

    def client(i):
        picks = [(i * 5 + j) % len(photos) for j in range(5)]
        return list(zip(picks, post_all(server.port, [photos[p][1] for p in picks])))
    answers = [a for per_client in concurrently(32, client) for a in per_client]
    after = scrape(server)

    statuses = Counter(r.status for _, r in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert all(r.headers.get("Retry-After") for _, r in answers if r.status == 503)
    assert statuses[200] == 160, f"the default queue shed requests of only 32 clients: {statuses}"
    for p, r in answers:
        top = check_predictions(r)[0]
        assert top["label"] == baseline[p]["label"], (photos[p][0], top, baseline[p])
        assert abs(top["probability"] - baseline[p]["probability"]) < 1e-3, (top, baseline[p])
    ok = (metric_sum(after, "orchard_requests_total", code="200")
          - metric_sum(before, "orchard_requests_total", code="200"))
    assert ok >= 160, ok
    images = metric_sum(after, "orchard_batch_size_sum") - metric_sum(before, "orchard_batch_size_sum")
    batches = metric_sum(after, "orchard_batch_size_count") - metric_sum(before, "orchard_batch_size_count")
    assert batches > 0 and images >= 160, (images, batches)
    assert images / batches > 1, f"no batching under 32 concurrent clients: {images} images in {batches} batches"
    check_healthy(server)


def test_load_shedding(orchard_bin, model_env, trained, tmp_path, banana):
    with start(orchard_bin, model_env, trained, tmp_path, "--queue", 1, "--workers", 1, "--max-batch", 1) as srv:
        replies = concurrently(40, lambda i: classify(srv.port, banana, timeout=120))
        statuses = Counter(r.status for r in replies)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[503] >= 1 and statuses[200] >= 1, statuses
        for r in replies:
            if r.status == 503:
                check_error(r, (503,))
                retry = r.headers.get("Retry-After")
                assert retry and retry.strip().isdigit(), f"503 without a delta-seconds Retry-After: {retry!r}"
            else:
                assert check_predictions(r)[0]["label"] == "Banana 1"
        check_healthy(srv)
        assert check_predictions(classify(srv.port, banana))[0]["label"] == "Banana 1"


def test_sigterm_finishes_in_flight_requests(orchard_bin, model_env, trained, tmp_path):
    # A long batching delay keeps the 8 requests queued when SIGTERM lands.
    srv = start(orchard_bin, model_env, trained, tmp_path, "--max-delay-ms", 300, "--max-batch", 16)
    try:
        photos = [(c, held_out(c, 7).read_bytes()) for c in CLASSES]
        sent = threading.Barrier(len(photos) + 1)
        done_at = {}

        def client(i):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            try:
                conn.request("POST", "/v1/classify", body=photos[i][1], headers={"Content-Type": "image/jpeg"})
                sent.wait(timeout=30)
                r = conn.getresponse()
                reply = Reply(r.status, r.headers, r.read())
                done_at[i] = time.monotonic()
                return reply
            finally:
                conn.close()
        with ThreadPoolExecutor(len(photos)) as pool:
            futures = [pool.submit(client, i) for i in range(len(photos))]
            sent.wait(timeout=30)
            time.sleep(0.05)      # let the server read them
            killed_at = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            replies = [f.result(timeout=60) for f in futures]
        for (label, _), r in zip(photos, replies):
            assert check_predictions(r)[0]["label"] == label
        try:
            rc = srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("orchard serve still running 30 s after SIGTERM")
        assert rc == 0, f"exit status {rc} after SIGTERM:\n{srv.stderr_tail()}"
        after = sum(t > killed_at for t in done_at.values())
        print(f"{after} of {len(photos)} answers arrived after SIGTERM")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
    finally:
        srv.stop()


# --------------------------------------------------------------------------- probes, page, metrics
def test_health_and_readiness(server):
    r = http_request(server.port, "GET", "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}, (r.status, r.body)
    r = http_request(server.port, "GET", "/readyz")
    assert r.status == 200 and r.json() == {"status": "ready"}, (r.status, r.body)


def test_page_is_self_contained(server):
    r = http_request(server.port, "GET", "/")
    assert r.status == 200, r.status
    assert r.headers.get("Content-Type", "").startswith("text/html"), r.headers.get("Content-Type")
    html = r.body.decode()
    assert 'id="photo"' in html and 'id="results"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), "an external resource"
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//|@import", html, re.I), "an external stylesheet"


def test_metrics_format(server, banana):
    check_predictions(classify(server.port, banana))
    r = http_request(server.port, "GET", "/metrics")
    assert r.status == 200, r.status
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
    samples, types = parse_prometheus(r.body.decode())
    assert types.get("orchard_requests_total") == "counter", types
    assert types.get("orchard_request_seconds") == "histogram", types
    assert types.get("orchard_batch_size") == "histogram", types
    assert types.get("orchard_queue_depth") == "gauge", types
    assert metric_sum(samples, "orchard_requests_total", code="200") >= 1
    assert metric_sum(samples, "orchard_queue_depth") >= 0
    assert any(n == "orchard_queue_depth" for n, _, _ in samples)
    for hist in ("orchard_request_seconds", "orchard_batch_size"):
        check_histogram(samples, hist)


def check_histogram(samples, name):
    """Buckets with le labels, cumulative, ending at +Inf == _count; _sum present."""
    series: dict = {}
    for n, labels, value in samples:
        if n == f"{name}_bucket":
            assert "le" in labels, (n, labels)
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(rest, []).append((float(labels["le"]), value))
    assert series, f"no {name}_bucket samples"
    for rest, buckets in series.items():
        buckets.sort()
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{name}{dict(rest)}: buckets not cumulative: {buckets}"
        assert buckets[-1][0] == math.inf, f"{name}{dict(rest)}: no le=\"+Inf\" bucket"
        count = [v for n, ls, v in samples if n == f"{name}_count" and tuple(sorted(ls.items())) == rest]
        total = [v for n, ls, v in samples if n == f"{name}_sum" and tuple(sorted(ls.items())) == rest]
        assert count and total, f"{name}{dict(rest)}: _count or _sum missing"
        assert count[0] == buckets[-1][1], f"{name}: _count {count[0]} != +Inf bucket {buckets[-1][1]}"
        assert count[0] >= 1 and total[0] > 0, (name, count, total)
