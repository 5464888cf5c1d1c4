"""Runs a command (the GoogleTest binary) with a SeaweedFS S3 server on 127.0.0.1 for it.

    python tests/unit_with_s3.py build/tests/orchard_unit_tests [--gtest_filter=...]

Starts the server (tests/e2e/s3_servers.py), creates a bucket, puts 1,100 tiny objects under
one prefix for the listing case, and runs the command with the server's AWS_* environment
(EC2 metadata lookups disabled) plus ORCHARD_TEST_S3=s3://bucket/prefix,
ORCHARD_TEST_S3_MANY=s3://bucket/many and ORCHARD_REQUIRE_S3=1 (so the S3 cases fail rather than
skip when the server is missing). Stops the server whatever happens and exits with the command's
status (128 + N when a signal N ended it).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))  # s3_servers, also without PYTHONPATH
from s3_servers import SeaweedFS  # noqa: E402

BUCKET = "orchard-unit"
MANY = 1100  # more than one ListObjectsV2 page


def _terminate(signum, _frame):
    """SIGTERM/SIGHUP (ctest's timeout, a CI cancel): unwind so the server is stopped."""
    raise SystemExit(128 + signum)


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    t0 = time.monotonic()
    child = None
    try:
        with SeaweedFS() as s3:
            s3.create_bucket(BUCKET)
            s3.put_many(BUCKET, "many", MANY)
            env = s3.env()
            env.update(ORCHARD_TEST_S3=f"s3://{BUCKET}/unit", ORCHARD_TEST_S3_MANY=f"s3://{BUCKET}/many",
                       ORCHARD_REQUIRE_S3="1")
            print(f"unit_with_s3: SeaweedFS at {s3.endpoint} (up in {s3.startup_s:.1f} s, "
                  f"{MANY} objects put, {time.monotonic() - t0:.1f} s); running {' '.join(argv)}",
                  flush=True)
            child = subprocess.Popen(argv, env=env)
            rc = child.wait()
    except BaseException:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        raise
    print(f"unit_with_s3: exit {rc}, {time.monotonic() - t0:.1f} s in all", flush=True)
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
