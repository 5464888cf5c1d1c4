"""Spark for the tests: the pyspark installations to launch it from, and a standalone cluster on
loopback.

Two flavours of pyspark (Flavour): MAIN, the pyspark of the venv running the tests (4.x, beside
numpy and pyarrow), and pyspark35(), .venv-pyspark35's pyspark 3.5 alone (made by ./setup.sh;
on Python 3.9 where the machine has one), which is what an EMR 7 node gives an application.
spark_env(base, flavour=...) is the environment that makes spark-submit, the driver and the
Python workers those of a flavour.

    with StandaloneCluster(workers=2, cores=1, memory="1g", env=env) as cluster:
        subprocess.run([MAIN.submit, "--master", cluster.url, ...], env=spark_env(env))
        cluster.kill_worker(0)        # SIGKILL the Worker JVM and the executor JVMs it launched

One Master (`spark-class org.apache.spark.deploy.master.Master`) and N Workers
(`spark-class org.apache.spark.deploy.worker.Worker`), each in its own session and process group,
bound to 127.0.0.1 on free ports, with their work, log and pid folders in one temp folder.
stop() (also on __exit__ and at interpreter exit) ends exactly the process groups this object
started: SIGTERM, then SIGKILL after a grace period; it is idempotent.

Also: small /proc helpers (children, ancestors, cmdline) used by the Spark tests to find the
executor JVMs of a worker and the orchard processes of a Spark run without psutil.
"""
import atexit
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyspark

REPO = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
PYSPARK35_VENV = REPO / ".venv-pyspark35"


@dataclasses.dataclass(frozen=True)
class Flavour:
    """A pyspark installation: its SPARK_HOME, and the Python that runs the driver and the Python
    workers. isolated: that Python sees nothing of the test venv (no numpy, no pyarrow)."""
    name: str
    home: Path
    python: Path
    version: str
    python_version: str
    isolated: bool

    @property
    def submit(self) -> Path:
        return self.home / "bin" / "spark-submit"

    @property
    def spark_class(self) -> Path:
        return self.home / "bin" / "spark-class"

    def __str__(self):
        return f"{self.name} (pyspark {self.version}, Python {self.python_version})"


MAIN = Flavour("main", SPARK_HOME, Path(sys.executable), pyspark.__version__,
               ".".join(map(str, sys.version_info[:3])), isolated=False)


def pyspark35() -> Flavour:
    """.venv-pyspark35's pyspark 3.5 (asked of its own Python, in a clean environment); raises
    RuntimeError saying to run ./setup.sh when it is missing or broken."""
    python = PYSPARK35_VENV / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(f"{PYSPARK35_VENV}: missing; run ./setup.sh (it makes the pyspark 3.5 venv)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    p = subprocess.run([str(python), "-c", "import os, platform, pyspark; print(pyspark.__version__); "
                        "print(platform.python_version()); print(os.path.dirname(pyspark.__file__))"],
                       env=env, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{python} cannot import pyspark (run ./setup.sh): {p.stderr.strip()[-500:]}")
    version, python_version, home = p.stdout.split("\n")[:3]
    return Flavour("pyspark35", Path(home), python, version, python_version, isolated=True)


# ---------------------------------------------------------------------------------------------
# /proc helpers

def cmdline(pid: int) -> list:
    """The argv of pid ([] if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def parent_of(pid: int):
    """The parent pid of pid, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    return int(stat[stat.rindex(")") + 2:].split()[1])


def all_pids() -> list:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid: int) -> list:
    """Direct children of pid."""
    return [p for p in all_pids() if parent_of(p) == pid]


def process_table() -> dict:
    """{pid: parent pid} of every process, read once (for ancestry checks on many processes)."""
    table = {}
    for pid in all_pids():
        ppid = parent_of(pid)
        if ppid is not None:
            table[pid] = ppid
    return table


def ancestors(pid: int, table: dict) -> list:
    """pid's parent, grandparent, ... up to init, from a process_table()."""
    out = []
    while pid in table and table[pid] > 1 and len(out) < 64:
        pid = table[pid]
        out.append(pid)
    return out


def is_zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


# ---------------------------------------------------------------------------------------------

from s3_servers import free_ports  # noqa: E402 - one helper for free loopback ports


def spark_env(base=None, local_dirs=None, flavour=MAIN) -> dict:
    """base (default os.environ) with SPARK_HOME = the flavour's pyspark, its bin/ and its
    venv's bin/ first on PATH (find_spark_home uses the python on PATH), loopback only, the
    flavour's python for the driver and the Python workers, and Spark's scratch space (shipped
    archives, shuffle, block manager) in local_dirs when given (default /tmp). For an isolated
    flavour, no PYTHONPATH / PYTHONHOME / VIRTUAL_ENV leaks the test venv into it."""
    env = dict(os.environ if base is None else base)
    if local_dirs is not None:
        Path(local_dirs).mkdir(parents=True, exist_ok=True)
        env["SPARK_LOCAL_DIRS"] = str(local_dirs)
    venv_bin = flavour.python.parent
    env["SPARK_HOME"] = str(flavour.home)
    env["PATH"] = os.pathsep.join([str(venv_bin), str(flavour.home / "bin"), env.get("PATH", "")])
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env["SPARK_LOCAL_HOSTNAME"] = "127.0.0.1"
    env["PYSPARK_PYTHON"] = str(flavour.python)
    env["PYSPARK_DRIVER_PYTHON"] = str(flavour.python)
    env.pop("SPARK_CONF_DIR", None)
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    if flavour.isolated:
        for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(k, None)
    return env


class StandaloneCluster:
    """A Master and `workers` Workers (each `cores` cores, `memory`) on 127.0.0.1; env is the
    environment the daemons (and so the executors they launch) get."""

    def __init__(self, workers=2, cores=1, memory="1g", env=None, workdir=None, timeout=120.0, flavour=MAIN):
        self.tmpdir = Path(tempfile.mkdtemp(prefix="spark-standalone-", dir=workdir))
        self.flavour = flavour
        self.env = spark_env(env, local_dirs=self.tmpdir / "local", flavour=flavour)
        for name in ("logs", "pids", "work"):
            (self.tmpdir / name).mkdir()
        self.env.update(SPARK_LOG_DIR=str(self.tmpdir / "logs"), SPARK_PID_DIR=str(self.tmpdir / "pids"),
                        SPARK_WORKER_DIR=str(self.tmpdir / "work"), SPARK_NO_DAEMONIZE="1")
        self.master_port, self.master_ui_port = free_ports(2)
        self.url = f"spark://127.0.0.1:{self.master_port}"
        self.ui = f"http://127.0.0.1:{self.master_ui_port}"
        self.master = None
        self.workers = []       # Popen of each Worker (spark-class execs the JVM: pid = the JVM)
        self.killed = set()     # indexes of workers killed by kill_worker
        self._stopped = False
        atexit.register(self.stop)
        try:
            self._start(workers, cores, memory, timeout)
        except BaseException:
            self.stop(keep_tmpdir=True)
            raise

    def _spawn(self, name, argv):
        log = open(self.tmpdir / "logs" / f"{name}.log", "ab")
        try:
            return subprocess.Popen([str(self.flavour.spark_class), *argv], env=self.env, cwd=self.tmpdir,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            log.close()

    def _start(self, n, cores, memory, timeout):
        deadline = time.monotonic() + timeout
        self.master = self._spawn("master", [
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
            "--port", str(self.master_port), "--webui-port", str(self.master_ui_port)])
        self._wait(lambda: self.state() is not None, deadline, "the master to answer on its web UI")
        for i in range(n):
            (ui_port,) = free_ports(1)
            work = self.tmpdir / "work" / f"worker-{i}"
            work.mkdir()
            self.workers.append(self._spawn(f"worker-{i}", [
                "org.apache.spark.deploy.worker.Worker", self.url, "--cores", str(cores), "--memory", memory,
                "--host", "127.0.0.1", "--webui-port", str(ui_port), "--work-dir", str(work)]))
        self._wait(lambda: len(self.alive_workers()) >= n, deadline, f"{n} workers to register")

    def _wait(self, ready, deadline, what):
        while not ready():
            for name, p in [("master", self.master)] + [(f"worker-{i}", w) for i, w in enumerate(self.workers)]:
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"spark {name} exited with {p.returncode} while waiting for {what}:\n"
                                       f"{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; master log:\n{self.log_tail('master')}")
            time.sleep(0.25)

    def state(self):
        """The master's /json state (workers, apps), or None if it does not answer."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        try:
            with opener.open(self.ui + "/json/", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> list:
        state = self.state() or {}
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def log_tail(self, name, n=30) -> str:
        try:
            return "\n".join((self.tmpdir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def executor_pids(self, i: int) -> list:
        """The executor JVMs that worker i launched (its children running CoarseGrainedExecutorBackend)."""
        return [p for p in children(self.workers[i].pid) if EXECUTOR_CLASS in cmdline(p)]

    def kill_worker(self, i: int) -> list:
        """SIGKILLs worker i's JVM and the executor JVMs it launched, as a lost machine would;
        returns the pids killed (worker first)."""
        worker = self.workers[i]
        pids = [worker.pid, *self.executor_pids(i)]
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.killed.add(i)
        worker.wait(30)
        return pids

    def stop(self, keep_tmpdir=False):
        """Ends every process group this cluster started (workers first, then the master):
        SIGTERM, SIGKILL after 10 s; removes the temp folder (kept with the logs if keep_tmpdir)."""
        if not self._stopped:
            self._stopped = True
            procs = [p for p in [*self.workers, self.master] if p is not None]
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            for p in procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            for p in procs:  # the leader, and anything left in its group (executors)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            atexit.unregister(self.stop)
        if not keep_tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"StandaloneCluster({self.url}, {len(self.workers)} workers)"
