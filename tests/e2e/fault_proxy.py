"""A fault-injecting HTTP/1.1 proxy for S3 tests: latency, 503 SlowDown and TCP resets.

Sits between a client and one S3 server (path-style addressing): every request waits `latency_s`,
then with probability `slowdown_rate` is answered 503 SlowDown without reaching the server, or with
probability `reset_rate` has its connection reset (TCP RST) without an answer; all others are
forwarded, bodies streamed both ways (Content-Length, chunked and aws-chunked, any size).
The Host header goes through unchanged, so SigV4 signatures made for the proxy's endpoint stay
valid; `Expect: 100-continue` is answered by the proxy itself. One thread per client connection,
each with its own keep-alive connection to the server.

    with FaultProxy(s3.endpoint, slowdown_rate=0.05, seed=1) as proxy:
        subprocess.run([orchard, ...], env=s3.env(endpoint=proxy.endpoint))
        assert proxy.counts()["faults_503"] > 0
"""
import random
import socket
import struct
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

_BUF = 256 * 1024
_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message>'
             b'<RequestId>FAULTPROXY%d</RequestId></Error>')
_HOP_BY_HOP = {b"expect", b"proxy-connection", b"keep-alive"}
_ALWAYS_COUNTED = ("GET", "PUT", "HEAD", "POST", "DELETE", "faults_503", "resets", "PutObject",
                   "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                   "AbortMultipartUpload", "ListObjectsV2", "GetObject", "HeadObject")


class _Closed(Exception):
    """The peer closed the connection (cleanly, between messages)."""


def _read_head(rfile):
    """Reads a start line and headers; returns (start_line, [(name, value)]); _Closed at EOF."""
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between messages
        line = rfile.readline(65537)
    if not line:
        raise _Closed()
    headers = []
    while True:
        h = rfile.readline(65537)
        if not h:
            raise ConnectionError("EOF inside HTTP headers")
        if h in (b"\r\n", b"\n"):
            break
        name, _, value = h.partition(b":")
        headers.append((name.strip(), value.strip()))
    return line.rstrip(b"\r\n"), headers


def _header(headers, name):
    """The last value of header `name` (lower-case bytes), or None."""
    found = None
    for k, v in headers:
        if k.lower() == name:
            found = v
    return found


def _copy_exact(rfile, sock, n):
    """Copies exactly n bytes from rfile to sock (sock None: discard)."""
    while n > 0:
        data = rfile.read1(min(n, _BUF))
        if not data:
            raise ConnectionError("EOF inside HTTP body")
        if sock is not None:
            sock.sendall(data)
        n -= len(data)


def _copy_chunked(rfile, sock):
    """Copies a chunked body verbatim (chunks and trailers) from rfile to sock (None: discard)."""
    while True:
        line = rfile.readline(65537)
        if not line:
            raise ConnectionError("EOF inside chunked body")
        if sock is not None:
            sock.sendall(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        _copy_exact(rfile, sock, size + 2)  # data + CRLF
    while True:  # trailers, up to the empty line
        line = rfile.readline(65537)
        if not line:
            raise ConnectionError("EOF inside chunked trailers")
        if sock is not None:
            sock.sendall(line)
        if line in (b"\r\n", b"\n"):
            return


def _copy_body(rfile, sock, headers):
    """Copies a request body framed by `headers` (chunked or Content-Length) to sock (None: drop)."""
    te = _header(headers, b"transfer-encoding")
    if te is not None and b"chunked" in te.lower():
        _copy_chunked(rfile, sock)
    else:
        _copy_exact(rfile, sock, int(_header(headers, b"content-length") or 0))


def _drain_and_close(sock, rfile, timeout=5.0):
    """Half-closes sock and reads what the peer still sends, so closing it sends no RST."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        while rfile.read1(_BUF):
            pass
    except OSError:
        pass


def s3_operation(method: str, target: str) -> str:
    """The S3 operation name of a path-style request, e.g. ('PUT', '/b/k?partNumber=1&uploadId=u')
    -> 'UploadPart'."""
    parts = urlsplit(target)
    q = parse_qs(parts.query, keep_blank_values=True)
    path = parts.path.lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket:
        return "ListBuckets" if method == "GET" else method
    if not key:  # bucket level
        if method == "GET":
            if "list-type" in q:
                return "ListObjectsV2"
            if "uploads" in q:
                return "ListMultipartUploads"
            if "location" in q:
                return "GetBucketLocation"
            return "ListObjects"
        if method == "POST" and "delete" in q:
            return "DeleteObjects"
        return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
            method, method)
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
    if method == "PUT":
        return "UploadPart" if "partNumber" in q and "uploadId" in q else "PutObject"
    if method == "GET":
        return "ListParts" if "uploadId" in q else "GetObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    if method == "HEAD":
        return "HeadObject"
    return method


class FaultProxy:
    """HTTP/1.1 proxy on a free 127.0.0.1 port in front of `upstream` (http://host:port)."""

    def __init__(self, upstream: str, latency_s=0.0, slowdown_rate=0.0, reset_rate=0.0, seed=0,
                 fault_limit=None, fate=None):
        """Starts listening at once; stop() (or leaving a `with` block) shuts it down. fate, when
        given, decides chosen requests: fate(method, path, n) (n: how many requests with that method
        and path came before) returns None (the random draw decides), 'ok', '503' or 'reset'."""
        u = urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = (u.hostname, u.port or 80)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._latency, self._slowdown, self._reset, self._limit = 0.0, 0.0, 0.0, None
        self.set(latency_s, slowdown_rate, reset_rate, fault_limit)
        self._faults = 0
        self._fate, self._seen = fate, Counter()
        self._counts = Counter()
        self._requests = []
        self._socks = set()
        self._stopped = False
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy-accept",
                                          daemon=True)
        self._acceptor.start()

    def set(self, latency_s=None, slowdown_rate=None, reset_rate=None, fault_limit=None):
        """Changes the given settings live (None keeps a setting; fault_limit=None keeps it too,
        pass float('inf') to make it unbounded again)."""
        with self._lock:
            slowdown = self._slowdown if slowdown_rate is None else float(slowdown_rate)
            reset = self._reset if reset_rate is None else float(reset_rate)
            if not (0 <= slowdown and 0 <= reset and slowdown + reset <= 1):
                raise ValueError("need 0 <= slowdown_rate, reset_rate and their sum <= 1")
            self._slowdown, self._reset = slowdown, reset
            if latency_s is not None:
                self._latency = float(latency_s)
            if fault_limit is not None:
                self._limit = None if fault_limit == float("inf") else int(fault_limit)

    def counts(self) -> dict:
        """Requests seen so far by method ('GET', ...) and S3 operation ('UploadPart', ...), plus
        'faults_503' and 'resets' (the usual keys are present even when 0)."""
        with self._lock:
            return {**dict.fromkeys(_ALWAYS_COUNTED, 0), **self._counts}

    def reset_counts(self):
        """Forgets the counts and the request log (the fault budget of fault_limit is kept)."""
        with self._lock:
            self._counts.clear()
            self._requests.clear()

    def requests(self) -> list:
        """(method, path_with_query, status) of every request answered or faulted, in the order
        their answers began (logged before the client gets them); status None: reset, 502: the
        server could not be reached."""
        with self._lock:
            return list(self._requests)

    def stop(self):
        """Stops accepting and closes every open connection; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            socks = list(self._socks)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- internals ----

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _track(self, sock, add):
        with self._lock:
            if add:
                if self._stopped:
                    return False
                self._socks.add(sock)
            else:
                self._socks.discard(sock)
        return True

    def _decide(self, method, target):
        """Counts the request and draws its fate: (latency_s, None | '503' | 'reset')."""
        op = s3_operation(method, target)
        with self._lock:
            self._counts[method] += 1
            if op != method:
                self._counts[op] += 1
            r = self._rng.random()
            fault = None
            if self._limit is None or self._faults < self._limit:
                if r < self._slowdown:
                    fault = "503"
                elif r < self._slowdown + self._reset:
                    fault = "reset"
            if self._fate:
                path = urlsplit(target).path
                forced = self._fate(method, path, self._seen[(method, path)])
                self._seen[(method, path)] += 1
                if forced is not None:
                    fault = None if forced == "ok" else forced
            if fault:
                self._faults += 1
                self._counts["faults_503" if fault == "503" else "resets"] += 1
            return self._latency, fault

    def _log(self, method, target, status):
        with self._lock:
            self._requests.append((method, target, status))

    def _serve(self, client):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._track(client, True):
            client.close()
            return
        rfile = client.makefile("rb", buffering=_BUF)
        up = None  # [socket, reader] of the keep-alive upstream connection
        try:
            while True:
                try:
                    start, headers = _read_head(rfile)
                except _Closed:
                    return
                method, target, version = start.decode("latin-1").split(" ", 2)
                latency, fault = self._decide(method, target)
                if latency > 0:
                    time.sleep(latency)
                expect = (_header(headers, b"expect") or b"").lower() == b"100-continue"
                conn_hdr = (_header(headers, b"connection") or b"").lower()
                client_close = b"close" in conn_hdr or (version == "HTTP/1.0"
                                                         and b"keep-alive" not in conn_hdr)
                if fault == "503":
                    if not expect:
                        _copy_body(rfile, None, headers)
                    self._log(method, target, 503)  # logged before the client can see it
                    self._send_slowdown(client, method, close=expect or client_close)
                    if expect:  # the body may come anyway (a client that stopped waiting for
                        _drain_and_close(client, rfile)  # 100): read it, don't reset
                    if expect or client_close:
                        return
                    continue
                if expect:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if fault == "reset":
                    _copy_body(rfile, None, headers)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self._log(method, target, None)
                    return
                up, close = self._forward(client, rfile, up, start, headers, method, target)
                if close or client_close:
                    return
        except (OSError, ValueError):
            pass  # client or server went away, or a malformed message: drop the connection
        finally:
            if up is not None:
                self._track(up[0], False)
                up[0].close()
            self._track(client, False)
            rfile.close()
            client.close()

    def _send_slowdown(self, client, method, close):
        body = _SLOWDOWN % self._faults
        head = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                b"x-amz-request-id: FAULTPROXY\r\nContent-Length: %d\r\n" % len(body))
        if close:
            head += b"Connection: close\r\n"
        client.sendall(head + b"\r\n" + (b"" if method == "HEAD" else body))

    def _upstream(self, up):
        """A usable upstream [socket, reader]: `up` unless the server closed it meanwhile."""
        if up is not None:
            sock = up[0]
            sock.setblocking(False)
            try:
                stale = sock.recv(1, socket.MSG_PEEK) is not None  # data or EOF: not reusable
            except BlockingIOError:
                stale = False
            except OSError:
                stale = True
            sock.setblocking(True)
            if not stale:
                return up
            self._track(sock, False)
            sock.close()
        sock = socket.create_connection(self.upstream, timeout=None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._track(sock, True):
            sock.close()
            raise ConnectionError("proxy stopped")
        return [sock, sock.makefile("rb", buffering=_BUF)]

    def _forward(self, client, rfile, up, start, headers, method, target):
        """Sends one request upstream, logs it, streams the answer back; returns (up, close)."""
        try:
            up = self._upstream(up)
            sock, urfile = up
            head = [start]
            head += [k + b": " + v for k, v in headers if k.lower() not in _HOP_BY_HOP]
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
            _copy_body(rfile, sock, headers)
            while True:
                status_line, rheaders = _read_head(urfile)
                status = int(status_line.split(b" ", 2)[1])
                if status >= 200 or status == 101:
                    break  # interim 1xx answers are not relayed (the proxy sent its own 100)
        except (OSError, _Closed, ValueError, IndexError):
            self._log(method, target, 502)
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
            return up, True
        self._log(method, target, status)
        client.sendall(status_line + b"\r\n" + b"".join(k + b": " + v + b"\r\n"
                                                        for k, v in rheaders) + b"\r\n")
        conn_hdr = (_header(rheaders, b"connection") or b"").lower()
        close = b"close" in conn_hdr or (status_line.startswith(b"HTTP/1.0")
                                         and b"keep-alive" not in conn_hdr)
        te = _header(rheaders, b"transfer-encoding")
        if method == "HEAD" or status in (204, 304):
            pass
        elif te is not None and b"chunked" in te.lower():
            _copy_chunked(urfile, client)
        elif _header(rheaders, b"content-length") is not None:
            _copy_exact(urfile, client, int(_header(rheaders, b"content-length")))
        else:  # body delimited by the server closing the connection
            while True:
                data = urfile.read1(_BUF)
                if not data:
                    break
                client.sendall(data)
            close = True
        if close:
            self._track(up[0], False)
            up[0].close()
            up = None
        return up, close
