"""The portable bundle (tools/bundle.sh): unpacked in a temporary folder and run from another
directory with an empty environment, bin/orchard loads every library but glibc's and the GCC
runtime's from the bundle (never from the build tree, the venv or .deps/) and embeds real images
exactly as build/orchard does. The host check reports what an independent scan finds, passes for
the build ./setup.sh makes, and fails exactly when a file needs more than Amazon Linux 2023 (EMR 7)
provides: glibc 2.34, GCC 11's libstdc++ (GLIBCXX_3.4.29, CXXABI_1.3.13) and libgcc_s (GCC_7.0.0).

The archive is built once into $ORCHARD_BUILD/bundle-test and reused while it is newer than the
binary and the script (bundle.sh decides), so only the first run pays for it."""
import functools
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import MODEL_DIR, REPO, TEST_IMAGES, orchard_binary, run_orchard

BUNDLE_SH = REPO / "tools" / "bundle.sh"
# What Amazon Linux 2023 provides, per symbol-version namespace.
LIMITS = {"GLIBC": (2, 34), "GLIBCXX": (3, 4, 29), "CXXABI": (1, 3, 13), "GCC": (7, 0, 0)}
NAMESPACES = list(LIMITS)
VERSIONED = re.compile(r"\(?((GLIBC|GLIBCXX|CXXABI|GCC)_\d+(?:\.\d+)+)\)?\s+(\S+)$")
# The host's own objects: glibc's (plus gconv modules) and the GCC runtime, as in bundle.sh.
HOST_OWN = re.compile(
    r"^(ld-linux.*\.so.*|lib(c|m|mvec|pthread|dl|rt|resolv|util|anl|BrokenLocale|thread_db|c_malloc_debug)"
    r"\.so\.\d+|libnsl\.so\.1|libnss_.*\.so\.\d+|libstdc\+\+\.so\.6(\.\d+)*|libgcc_s\.so\.1)$")
CLASSES = ["Apple Braeburn 1", "Banana 1", "Kiwi 1", "Lemon 1", "Strawberry 1"]


def version_tuple(v: str) -> tuple:
    """GLIBCXX_3.4.29 -> (3, 4, 29)"""
    return tuple(int(x) for x in v.split("_", 1)[1].split("."))


# What OpenVINO (and oneTBB) dlopen() from libopenvino's folder: in the bundle, not in ldd's list.
DLOPENED = ("libopenvino_intel_cpu_plugin.so", "libopenvino_ir_frontend.so.", "libtbbbind_2_5.so.", "libhwloc.so.")

def host_own(path: str) -> bool:
    return bool(HOST_OWN.match(os.path.basename(path))) or "/gconv/" in path


def dynamic(path: Path) -> dict:
    """NEEDED, RPATH and RUNPATH of an ELF file (readelf -d)."""
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    d = {"NEEDED": [], "RPATH": [], "RUNPATH": []}
    for tag, value in re.findall(r"\((NEEDED|RPATH|RUNPATH)\)\s+[^\[]*\[([^\]]*)\]", out):
        d[tag] += value.split(":") if tag != "NEEDED" else [value]
    return d


def elf_files(root: Path) -> list[Path]:
    return [root / "bin" / "orchard", *sorted((root / "lib").iterdir())]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """Runs bundle.sh (with the TF-slim weights prepared into the bundle; no waiver: the build must
    pass the host check) and unpacks the archive with tar, as Spark's --archives does."""
    if shutil.which("patchelf") is None and os.geteuid() != 0:
        pytest.fail("patchelf is needed: apt-get install patchelf")
    exe = orchard_binary()
    out = exe.parent / "bundle-test"
    env = dict(os.environ, ORCHARD_BUILD=str(exe.parent))
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(BUNDLE_SH), "--out", str(out), "--model", str(MODEL_DIR)],
                       env=env, capture_output=True, text=True, timeout=2400)
    assert p.returncode == 0, f"bundle.sh exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    archive = Path(p.stdout.strip().splitlines()[-1])
    assert archive == out / f"orchard-{version}-linux-x86_64.tar.gz" and archive.is_file(), p.stdout
    root = tmp_path_factory.mktemp("unpacked").resolve() / "orchard"
    root.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(root)], check=True)
    print(f"bundle.sh: {time.monotonic() - t0:.1f} s; {archive.stat().st_size / 2**20:.1f} MiB")
    return SimpleNamespace(exe=exe, archive=archive, root=root, out=out, env=env, version=version,
                           stdout=p.stdout, stderr=p.stderr)


def empty_env(tmp: Path, **extra) -> list[str]:
    """`env -i` with only HOME and ORCHARD_CACHE, both pointing at fresh temporary folders."""
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "cache").mkdir(exist_ok=True)
    return ["env", "-i", f"HOME={tmp / 'home'}", f"ORCHARD_CACHE={tmp / 'cache'}",
            *(f"{k}={v}" for k, v in extra.items())]


def test_layout(bundle):
    with tarfile.open(bundle.archive) as t:
        names = t.getnames()
    top = {n.split("/")[0] for n in names}
    assert top <= {"bin", "lib", "share", "README", "VERSION"}, top
    assert "bin/orchard" in names and "share/orchard/model.ov" in names
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")]
    assert (bundle.root / "VERSION").read_text().strip() == bundle.version
    # What every executor downloads: at most 80 MiB with the model (LibTorch's was 169 MiB).
    assert bundle.archive.stat().st_size <= 80 * 2**20, bundle.archive.stat().st_size / 2**20
    # Exactly the non-glibc libraries the loader resolves for build/orchard, plus what OpenVINO
    # loads itself from its folder: the CPU plugin, the IR reader, oneTBB's hwloc binding.
    ldd = subprocess.run(["ldd", str(bundle.exe)], capture_output=True, text=True, check=True).stdout
    wanted = {m for m in re.findall(r"^\s*(\S+) => /", ldd, re.M) if not host_own(m)}
    wanted |= {f.name for f in Path(re.search(r"libopenvino\.so\.\d+ => (\S+)", ldd)[1]).parent.iterdir()
               if f.name.startswith(DLOPENED)}
    assert {f.name for f in (bundle.root / "lib").iterdir()} == wanted
    assert len(wanted) > 10


def test_search_paths_are_origin_relative(bundle):
    root = bundle.root
    d = dynamic(root / "bin" / "orchard")
    assert d["RPATH"] + d["RUNPATH"] == ["$ORIGIN/../lib"], d
    libs = {f.name for f in (root / "lib").iterdir()}
    for f in elf_files(root):
        d = dynamic(f)
        paths = d["RPATH"] + d["RUNPATH"]
        assert all(p.startswith("$ORIGIN") for p in paths), (f, paths)
        if f.parent.name == "lib":
            assert paths == ["$ORIGIN"], (f, paths)
        missing = [n for n in d["NEEDED"] if not host_own(n) and n not in libs]
        assert not missing, f"{f.name} needs {missing}, not in the bundle"


@pytest.mark.parametrize("hostile", [False, True], ids=["empty-env", "LD_LIBRARY_PATH-to-system-and-venv"])
def test_loader_resolves_inside_bundle(bundle, tmp_path, hostile):
    """The loader's own resolution (ld.so --list) of the unpacked binary: every non-glibc library
    comes from the bundle's lib/, also when LD_LIBRARY_PATH points at the build's libraries."""
    extra = {}
    if hostile:
        pyarrow_dir = next((REPO / ".venv").glob("lib/python3*/site-packages/pyarrow"), REPO / ".venv")
        openvino_dirs = [str(d) for d in (REPO / ".deps").glob("openvino-*/openvino/libs")]
        extra["LD_LIBRARY_PATH"] = ":".join([str(bundle.exe.parent), str(pyarrow_dir), *openvino_dirs,
                                             "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"])
    ld_so = "/lib64/ld-linux-x86-64.so.2"
    p = subprocess.run([*empty_env(tmp_path, **extra), ld_so, "--list", str(bundle.root / "bin" / "orchard")],
                       capture_output=True, text=True, cwd=tmp_path, check=True)
    resolved = {n: os.path.normpath(p) for n, p in re.findall(r"^\s*(\S+) => (\S+)", p.stdout, re.M)}
    lib = str(bundle.root / "lib") + "/"
    outside = {n: p for n, p in resolved.items() if not host_own(n) and not p.startswith(lib)}
    assert not outside, outside
    linked = [f for f in (bundle.root / "lib").iterdir() if not f.name.startswith(DLOPENED)]
    assert len([p for p in resolved.values() if p.startswith(lib)]) == len(linked)


def sample_images(dest: Path, per_class: int = 2) -> int:
    n = 0
    for c in CLASSES:
        (dest / c).mkdir(parents=True)
        for f in sorted((TEST_IMAGES / c).glob("*.jpg"))[:per_class]:
            shutil.copy(f, dest / c / f.name)
            n += 1
    return n


def features(out: Path) -> pa.Table:
    t = pa.concat_tables([pq.read_table(p) for p in sorted((out / "features").glob("part-*.parquet"))])
    return t.sort_by("path")


def test_runs_with_empty_env_from_anywhere_and_matches_build(bundle, model_env, tmp_path):
    images = tmp_path / "in"
    n = sample_images(images)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    binary = bundle.root / "bin" / "orchard"

    v = subprocess.run([*empty_env(tmp_path), str(binary), "--version"], capture_output=True, text=True,
                       cwd=elsewhere)
    assert v.returncode == 0 and v.stdout.strip() == f"orchard {bundle.version}", v

    # The reference: build/orchard, the same images, the TF-slim weights the bundled model came from.
    run_orchard(bundle.exe, model_env, "featurize", images, tmp_path / "ref", "--model", MODEL_DIR, "--quiet")

    # The bundle: empty environment, another working directory, the bundled model.
    cmd = [*empty_env(tmp_path), str(binary), "featurize", str(images), str(tmp_path / "out"),
           "--model", str(bundle.root / "share" / "orchard" / "model.ov"), "--quiet"]
    log = tmp_path / "bundle-featurize.log"  # a file, not a pipe: nothing can block while we sample
    proc = subprocess.Popen(cmd, cwd=elsewhere, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    mapped, samples = set(), 0
    while proc.poll() is None:  # what the running process really mapped (dlopen included)
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except (FileNotFoundError, ProcessLookupError):
            break
        samples += 1
        mapped |= {line.split(None, 5)[5] for line in maps.splitlines() if len(line.split(None, 5)) == 6}
        time.sleep(0.02)
    assert proc.wait(timeout=600) == 0, log.read_text()

    shared_objects = {m for m in mapped if m.startswith("/") and re.search(r"\.so(\.\d+)*$", m)}
    print(f"{samples} samples of /proc/PID/maps: {len(shared_objects)} shared objects mapped, outside the bundle:",
          sorted(m for m in shared_objects if not m.startswith(str(bundle.root) + "/")))
    inside = str(bundle.root) + "/"
    for engine in ("libopenvino.so", "libopenvino_intel_cpu_plugin.so", "libopenvino_ir_frontend.so"):
        assert [m for m in shared_objects if re.fullmatch(re.escape(inside + "lib/" + engine) + r"[.\d]*", m)], \
            f"{engine} never seen mapped from the bundle ({samples} samples of /proc/PID/maps)"
    foreign = sorted(m for m in shared_objects if not m.startswith(inside) and not host_own(m))
    assert not foreign, f"mapped from outside the bundle: {foreign}"
    for forbidden in (str(REPO / "build") + "/", str(REPO / ".venv") + "/", str(bundle.exe.parent) + "/"):
        assert not [m for m in mapped if m.startswith(forbidden)], forbidden
    assert not [m for m in mapped if "libopenvino" in m and not m.startswith(inside)]

    ref, got = features(tmp_path / "ref"), features(tmp_path / "out")
    assert got.num_rows == ref.num_rows == n
    assert got.column("path").to_pylist() == ref.column("path").to_pylist()
    assert got.column("label").to_pylist() == ref.column("label").to_pylist()
    a = np.array(got.column("features").to_pylist(), dtype=np.float32)
    b = np.array(ref.column("features").to_pylist(), dtype=np.float32)
    assert a.shape == (n, 1280) and np.isfinite(a).all() and np.abs(a).sum() > 0
    assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()}"


# ---- the host check ---------------------------------------------------------------------------

@functools.lru_cache
def objdump_scan(root: Path) -> dict:
    """Independently of bundle.sh: for each file, {version: {symbols}} of the glibc / libstdc++ /
    libgcc_s symbols it imports."""
    scan = {}
    for f in elf_files(root):
        out = subprocess.run(["objdump", "-T", str(f)], capture_output=True, text=True, check=True).stdout
        vers = {}
        for line in out.splitlines():
            if "*UND*" in line and (m := VERSIONED.search(line)):
                vers.setdefault(m.group(1), set()).add(m.group(3))
        scan[str(f.relative_to(root))] = vers
    return scan


def newest(versions, ns: str):
    """The highest version of namespace ns among versions, as a tuple, or None."""
    found = [version_tuple(v) for v in versions if v.split("_", 1)[0] == ns]
    return max(found) if found else None


def above_limits(vers: dict) -> set:
    return {f"{sym}@{v}" for v, syms in vers.items() if version_tuple(v) > LIMITS[v.split("_", 1)[0]] for sym in syms}


def verneed_max(root: Path) -> dict:
    """A second, separate source: the versions in each file's version-needs section."""
    names = set()
    for f in elf_files(root):
        out = subprocess.run(["readelf", "-V", "-W", str(f)], capture_output=True, text=True, check=True).stdout
        names |= set(re.findall(r"Name: ((?:GLIBC|GLIBCXX|CXXABI|GCC)_\d+(?:\.\d+)+)", out))
    return {ns: newest(names, ns) for ns in NAMESPACES}


def reported(stdout: str) -> dict:
    """The highest versions bundle.sh printed, {namespace: tuple or None}."""
    m = re.search(r"^GLIBC: highest version required by the bundle: (\S+)", stdout, re.M)
    n = re.search(r"^GCC runtime: highest versions required by the bundle: (\S+) (\S+) (\S+)", stdout, re.M)
    assert m and n, stdout
    got = {}
    for ns, v in zip(NAMESPACES, [m.group(1), *n.groups()]):
        got[ns] = None if v == "none" else version_tuple(v)
        assert v == "none" or v.startswith(ns + "_"), (ns, v)
    return got


def test_host_report_matches_independent_scan(bundle):
    scan = objdump_scan(bundle.root)
    top = {ns: newest({v for vers in scan.values() for v in vers}, ns) for ns in NAMESPACES}
    assert reported(bundle.stdout) == top == verneed_max(bundle.root)
    # The per-file report shipped in the bundle agrees file by file.
    report = {}
    for line in (bundle.root / "share" / "orchard" / "abi.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        f, *vs = line.split()
        report[f] = (vs[:4], set(vs[4:]))
    assert set(report) == set(scan)
    for f, vers in scan.items():
        columns, syms = report[f]
        for ns, col in zip(NAMESPACES, columns):
            want = newest(vers, ns)
            assert col == ("-" if want is None else f"{ns}_" + ".".join(map(str, want))), (f, ns)
        assert syms == above_limits(vers), f
    print("highest:", {ns: v for ns, v in top.items()})


def test_build_passes_the_host_check(bundle):
    """The build ./setup.sh makes runs on Amazon Linux 2023: nothing above the limits, and neither
    libstdc++ nor libgcc_s in the bundle (the host's serve)."""
    over = {f: above_limits(v) for f, v in objdump_scan(bundle.root).items() if above_limits(v)}
    assert not over, over
    assert "host check: OK" in bundle.stdout and "WARNING" not in bundle.stderr
    libs = {f.name for f in (bundle.root / "lib").iterdir()}
    assert not {"libstdc++.so.6", "libgcc_s.so.1"} & libs
    assert "libopenvino_intel_cpu_plugin.so" in libs and [n for n in libs if n.startswith("libopenvino.so.")]


def test_check_agrees_with_independent_scan(bundle, tmp_path):
    over = sorted(f for f, v in objdump_scan(bundle.root).items() if above_limits(v))
    # The plain invocation (the up-to-date archive is reused; the check still applies) ...
    plain = subprocess.run(["bash", str(BUNDLE_SH), "--out", str(bundle.out), "--model", str(MODEL_DIR)],
                           env=bundle.env, capture_output=True, text=True, timeout=2400)
    # ... and a fresh resolve + stage + scan in an empty folder (--check: no archive).
    fresh = subprocess.run(["bash", str(BUNDLE_SH), "--out", str(tmp_path / "dist"), "--check"],
                           env=bundle.env, capture_output=True, text=True, timeout=2400)
    for p in (plain, fresh):
        assert (p.returncode != 0) == bool(over), f"exit {p.returncode}, files above: {over}:\n{p.stdout}\n{p.stderr}"
        assert reported(p.stdout) == reported(bundle.stdout)
    assert plain.stdout.strip().splitlines()[-1] == str(bundle.archive)
    assert not list((tmp_path / "dist").glob("*.tar.gz"))


# A stand-in for build/orchard that answers --version, links one library to bundle (zlib) and
# imports one symbol newer than Amazon Linux 2023's: arc4random (glibc 2.36), or, built with the system g++ (GCC 12) and without
# src/orchard/libstdcxx_compat.hpp, std::condition_variable::wait@GLIBCXX_3.4.30.
TOO_NEW = {
    "glibc": ("c", "gcc", "arc4random@GLIBC_2.36", r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
int main(int argc, char** argv) {
  if (argc > 1 && !strcmp(argv[1], "--version")) { printf("orchard 0.0.1 (zlib %s)\n", zlibVersion()); return 0; }
  printf("%u\n", arc4random());
  return 0;
}"""),
    "libstdc++": ("cpp", "g++", "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.30", r"""
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <zlib.h>
int main(int argc, char** argv) {
  if (argc > 1 && !std::strcmp(argv[1], "--version")) { std::printf("orchard 0.0.1 (zlib %s)\n", zlibVersion()); return 0; }
  std::mutex m; std::condition_variable cv; std::unique_lock<std::mutex> lock(m);
  if (argc > 5) cv.wait(lock);
  return 0;
}"""),
}


@pytest.mark.parametrize("kind", list(TOO_NEW))
def test_check_fails_above_amazon_linux_2023(kind, tmp_path):
    ext, compiler, symbol, source = TOO_NEW[kind]
    build = tmp_path / "build"
    build.mkdir()
    (tmp_path / f"main.{ext}").write_text(source)
    subprocess.run([compiler, "-O1", "-o", str(build / "orchard"), str(tmp_path / f"main.{ext}"), "-lz"], check=True)
    env = dict(os.environ, ORCHARD_BUILD=str(build))
    p = subprocess.run(["bash", str(BUNDLE_SH), "--out", str(tmp_path / "dist"), "--check"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, f"{p.stdout}\n{p.stderr}"
    assert "needs more than Amazon Linux 2023" in p.stderr and f"bin/orchard: {symbol}" in p.stderr, p.stderr
    assert "--allow-newer-host" in p.stderr
    # The waiver builds it anyway, loudly.
    w = subprocess.run(["bash", str(BUNDLE_SH), "--out", str(tmp_path / "dist"), "--allow-newer-host"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert w.returncode == 0 and w.stdout.strip().endswith(".tar.gz"), w.stderr
    assert "WARNING" in w.stderr and symbol in w.stderr
