"""Shared fixtures for the end-to-end tests: the built binary, ../shared, a private model cache."""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ORCHARD_SHARED", REPO.parent / "shared"))
TEST_IMAGES = SHARED / "data" / "fruits-360" / "Test"
MODEL_DIR = SHARED / "models" / "mobilenet_v2_1.0_224_tfslim"


def copy_sample(dest: Path, classes, per_class: int) -> list:
    """Copies the first per_class Test images (sorted) of each class into dest/<class>/; returns them."""
    import shutil
    out = []
    for c in classes:
        (dest / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((TEST_IMAGES / c).glob("*.jpg"))[:per_class]:
            shutil.copyfile(f, dest / c / f.name)
            out.append(dest / c / f.name)
    return out


def orchard_binary() -> Path:
    """The built orchard ($ORCHARD_BUILD/orchard, else build/orchard); fails the test if missing."""
    exe = Path(os.environ.get("ORCHARD_BUILD", REPO / "build")) / "orchard"
    if not exe.is_file():
        pytest.fail(f"{exe}: not built; run ./setup.sh")
    return exe


@pytest.fixture(scope="session")
def orchard_bin() -> Path:
    return orchard_binary()


@pytest.fixture(scope="session")
def model_env(tmp_path_factory) -> dict:
    """Environment with a fresh model cache, so the tests also exercise model preparation."""
    env = dict(os.environ)
    env["ORCHARD_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    return env


def run_orchard(orchard_bin, env, *args, check=True, timeout=1800):
    """Runs orchard, returns the CompletedProcess; fails the test with its stderr when check."""
    p = subprocess.run([str(orchard_bin), *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"orchard {' '.join(map(str, args))} exited {p.returncode}:\n{p.stderr}")
    return p


# S3-speaking servers on loopback (tests/e2e/s3_servers.py), one per test module that asks for it.
# Imported lazily: only the S3 tests need boto3.
@pytest.fixture(scope="module")
def seaweedfs():
    """A SeaweedFS S3 server on a free 127.0.0.1 port for the module; stopped (and its data
    removed) after the module."""
    from s3_servers import SeaweedFS
    with SeaweedFS() as server:
        yield server


@pytest.fixture(scope="module")
def moto_s3():
    """moto's S3 server on a free 127.0.0.1 port for the module; stopped after the module."""
    from s3_servers import MotoServer
    with MotoServer() as server:
        yield server
