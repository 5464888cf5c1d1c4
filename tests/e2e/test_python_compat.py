"""What the cluster side of Orchard asks of a Spark node: the Spark application (spark/) and the
deployment files (deploy/) run on Python 3.9 (EMR 7's python3) with pyspark and the standard
library alone: no numpy, no pyarrow (the orchard binary computes every number and reads and writes
every Parquet file).

1. vermin (pinned in requirements.txt) finds nothing under spark/ and deploy/ that needs a Python
   newer than 3.9: `vermin --target=3.9- --violations`, with annotations taken as evaluated at run
   time (no `from __future__ import annotations` here) and `X | Y` unions detected.
2. No file under spark/ or deploy/ imports numpy or pyarrow (`import numpy`, `import os, pyarrow`,
   `from pyarrow import ...`, importlib / __import__ of them, also inside functions) or installs
   them with pip.
3. Both checks can fail: each finds the 3.10 features (`match`, `int | None` in an annotation,
   itertools.pairwise) and the imports planted in scratch files.

tests/e2e/test_spark.py runs the application itself under pyspark 3.5 in .venv-pyspark35 (pyspark
alone, on Python 3.9 where the machine has one)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SIDE = [REPO / "spark", REPO / "deploy"]
VERMIN = Path(sys.executable).parent / "vermin"
VERMIN_ARGS = ["--no-config-file", "--no-tips", "--target=3.9-", "--violations", "--eval-annotations",
               "--feature", "union-types"]
FORBIDDEN = "numpy|pyarrow"
IMPORT_PATTERNS = [
    re.compile(rf"^[ \t]*import[ \t]+[^#\n]*\b({FORBIDDEN})\b", re.M),              # import numpy / import os, numpy
    re.compile(rf"^[ \t]*from[ \t]+({FORBIDDEN})\b", re.M),                         # from pyarrow import parquet
    re.compile(rf"""(import_module|__import__)\(\s*['"]({FORBIDDEN})\b"""),        # importlib.import_module("numpy")
    re.compile(rf"\b(pip3?|-m[ \t]+pip)[ \t]+install\b[^\n]*\b({FORBIDDEN})\b"),   # pip install numpy
]


def vermin(*paths):
    if not VERMIN.is_file():
        pytest.fail(f"{VERMIN}: not installed; run ./setup.sh (vermin is in requirements.txt)")
    return subprocess.run([str(VERMIN), *VERMIN_ARGS, *map(str, paths)], capture_output=True, text=True,
                          timeout=300)


def files_under(roots):
    return sorted(p for root in roots for p in Path(root).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def python_files(roots):
    """The .py files and the scripts with a python #! line under roots."""
    def is_python(p):
        if p.suffix == ".py":
            return True
        with open(p, "rb") as f:
            first = f.readline(200)
        return first.startswith(b"#!") and b"python" in first
    return [p for p in files_under(roots) if is_python(p)]


def forbidden_imports(roots) -> list:
    """'path:line: text' of every import (or pip install) of numpy or pyarrow in the text files under roots."""
    hits = []
    for p in files_under(roots):
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # not text
        for pattern in IMPORT_PATTERNS:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{p}:{line}: {text.splitlines()[line - 1].strip()}")
    return hits


# ---------------------------------------------------------------------------------------------

def test_cluster_side_runs_on_python_3_9():
    files = python_files(CLUSTER_SIDE)
    assert REPO / "spark" / "orchard_spark.py" in files, files
    p = vermin(*CLUSTER_SIDE)
    assert p.returncode == 0 and "requires" not in p.stdout, \
        f"code under spark/ or deploy/ needs a Python newer than 3.9 (EMR 7 runs 3.9):\n{p.stdout}{p.stderr}"
    assert "Target versions not met" not in p.stdout


def test_cluster_side_needs_no_numpy_or_pyarrow():
    hits = forbidden_imports(CLUSTER_SIDE)
    assert not hits, ("the Spark driver and executors have pyspark alone (no numpy, no pyarrow): "
                      "let the orchard binary do that work\n" + "\n".join(hits))


# The checks themselves: each must catch what it is there for.

NEWER_THAN_3_9 = {
    "match.py": "def f(v):\n    match v:\n        case 1:\n            return 'one'\n    return 'other'\n",
    "union_annotation.py": "def f(x: int | None = None) -> int:\n    return x or 0\n",
    "pairwise.py": "import itertools\nprint(list(itertools.pairwise([1, 2, 3])))\n",
}


@pytest.mark.parametrize("name", sorted(NEWER_THAN_3_9))
def test_vermin_check_catches_a_3_10_feature(name, tmp_path):
    (tmp_path / "spark").mkdir()
    (tmp_path / "spark" / "fine.py").write_text("import json\nprint(json.dumps({'a': 1}))\n")
    assert vermin(tmp_path / "spark").returncode == 0
    (tmp_path / "spark" / name).write_text(NEWER_THAN_3_9[name])
    p = vermin(tmp_path / "spark")
    assert p.returncode != 0 and name in p.stdout and "3.10" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("line", [
    "import numpy as np",
    "    import pyarrow.parquet as pq",
    "import os, numpy",
    "from pyarrow import parquet",
    "from numpy.linalg import eigh",
    "pa = importlib.import_module('pyarrow')",
    "np = __import__(\"numpy\")",
    "sudo python3 -m pip install --quiet numpy pyarrow",
    "pip3 install pyarrow==14.0.2",
])
def test_import_check_catches_numpy_and_pyarrow(line, tmp_path):
    (tmp_path / "deploy").mkdir()
    clean = "import json\n# no numpy, no pyarrow: the binary reads Parquet\ndef f():\n    return json\n"
    (tmp_path / "deploy" / "app.py").write_text(clean)
    assert forbidden_imports([tmp_path]) == []
    (tmp_path / "deploy" / "app.py").write_text(clean + line + "\n")
    hits = forbidden_imports([tmp_path])
    assert len(hits) == 1 and hits[0].endswith(line.strip()) and ":5: " in hits[0], hits
