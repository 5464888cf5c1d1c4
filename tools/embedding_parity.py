"""Compares Orchard's embeddings with the reference pipeline's, image by image.

    python tools/embedding_parity.py ORCHARD_OUT REFERENCE_OUT [--min-cosine 0.9999]

ORCHARD_OUT is an `orchard featurize` output folder (features/*.parquet, errors/*.parquet);
REFERENCE_OUT is the Parquet folder reference/featurize_spark.py writes (or another Orchard output
folder: a folder with a features/ subfolder is read as Orchard's). Rows are joined on the path
relative to each side's input root (file: URIs normalised; the root defaults to the common folder
of the images' grandparents, i.e. INPUT for INPUT/<class>/<file>). Reference rows with null
features (images Pillow could not read) are skipped. Exit status 1 if the worst cosine is below
--min-cosine, any embedded image is only on one side, or any label differs.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq


def normalize_path(p: str) -> str:
    """Local path from what a side stored: 'file:/a/b', 'file:///a/b' and '/a/b' all give '/a/b'.
    Spark does not percent-encode its binaryFile paths, so nothing is decoded."""
    if p.startswith("file://"):
        p = p[len("file://"):]
    elif p.startswith("file:"):
        p = p[len("file:"):]
    return os.path.normpath(p)


def common_root(paths: list[str]) -> str:
    """The common folder of every image's grandparent (INPUT for INPUT/<class>/<file>)."""
    if not paths:
        return "/"
    return os.path.commonpath([os.path.dirname(os.path.dirname(p)) for p in paths])


@dataclass
class Side:
    """One side's rows: relative path -> (label, features or None); plus its error paths."""
    name: str
    root: str
    rows: dict[str, tuple[str, np.ndarray | None]]
    errors: set[str] = field(default_factory=set)   # relative paths listed as failed / null


def _read_parquet_files(files: list[str], columns: list[str]):
    tables = [pq.read_table(f, columns=columns) for f in sorted(files)]
    return tables


def _parquet_files(folder: str) -> list[str]:
    """Data files of a Parquet folder (Spark's _SUCCESS, .crc and other hidden files skipped)."""
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".parquet") and not f.startswith((".", "_")):
                out.append(os.path.join(dirpath, f))
    return sorted(out)


def load_side(folder: str, name: str, root: str | None = None) -> Side:
    """Reads an Orchard output folder (features/ + errors/) or a reference Parquet folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such output folder")
    orchard_layout = os.path.isdir(os.path.join(folder, "features"))
    feat_files = _parquet_files(os.path.join(folder, "features") if orchard_layout else folder)
    if not feat_files:
        raise FileNotFoundError(f"{folder}: no Parquet files with embeddings")
    raw: list[tuple[str, str, np.ndarray | None]] = []
    for t in _read_parquet_files(feat_files, ["path", "label", "features"]):
        paths = t.column("path").to_pylist()
        labels = t.column("label").to_pylist()
        feats = t.column("features").to_pylist()
        for p, l, f in zip(paths, labels, feats):
            raw.append((normalize_path(p), l, None if f is None else np.asarray(f, dtype=np.float32)))
    err_paths: list[str] = []
    if orchard_layout:
        for t in _read_parquet_files(_parquet_files(os.path.join(folder, "errors")), ["path"]):
            err_paths += [normalize_path(p) for p in t.column("path").to_pylist()]
    root = os.path.normpath(root) if root else common_root([r[0] for r in raw] + err_paths)
    rows: dict[str, tuple[str, np.ndarray | None]] = {}
    errors: set[str] = set()
    for p, l, f in raw:
        rel = os.path.relpath(p, root)
        if rel in rows:
            raise ValueError(f"{folder}: {rel} appears twice")
        if f is None:
            errors.add(rel)
        rows[rel] = (l, f)
    errors |= {os.path.relpath(p, root) for p in err_paths}
    return Side(name=name, root=root, rows=rows, errors=errors)


@dataclass
class Parity:
    matched: int
    only_a: list[str]            # embedded by A, unknown to B
    only_b: list[str]            # embedded by B, unknown to A
    failed_a_embedded_b: list[str]   # A failed (error/null) where B gave an embedding
    failed_b_embedded_a: list[str]   # B failed where A gave an embedding (skipped: a reference null)
    failed_both: list[str]
    label_mismatches: list[tuple[str, str, str]]
    cosines: dict[str, float]
    max_abs: dict[str, float]
    bad_dims: list[tuple[str, int, int]]

    @property
    def worst_cosine(self) -> tuple[float, str]:
        k = min(self.cosines, key=self.cosines.get) if self.cosines else ""
        return (self.cosines.get(k, float("nan")), k)

    @property
    def worst_max_abs(self) -> tuple[float, str]:
        k = max(self.max_abs, key=self.max_abs.get) if self.max_abs else ""
        return (self.max_abs.get(k, float("nan")), k)

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(list(self.cosines.values()))) if self.cosines else float("nan")

    def unmatched(self) -> int:
        return len(self.only_a) + len(self.only_b) + len(self.failed_a_embedded_b)


def compare(a: Side, b: Side) -> Parity:
    """Joins A and B on relative path and measures every matched pair (A: Orchard, B: reference)."""
    emb_a = {k for k, (_, f) in a.rows.items() if f is not None}
    emb_b = {k for k, (_, f) in b.rows.items() if f is not None}
    both = sorted(emb_a & emb_b)
    cos, mad, labels, dims = {}, {}, [], []
    for k in both:
        (la, fa), (lb, fb) = a.rows[k], b.rows[k]
        if la != lb:
            labels.append((k, la, lb))
        if fa.shape != fb.shape:
            dims.append((k, fa.size, fb.size))
            continue
        x, y = fa.astype(np.float64), fb.astype(np.float64)
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        cos[k] = float(x @ y / (nx * ny)) if nx > 0 and ny > 0 else (1.0 if nx == ny else 0.0)
        mad[k] = float(np.max(np.abs(x - y))) if x.size else 0.0
    return Parity(
        matched=len(both),
        only_a=sorted(emb_a - emb_b - b.errors),
        only_b=sorted(emb_b - emb_a - a.errors),
        failed_a_embedded_b=sorted(a.errors & emb_b),
        failed_b_embedded_a=sorted(b.errors & emb_a),
        failed_both=sorted(a.errors & b.errors),
        label_mismatches=labels, cosines=cos, max_abs=mad, bad_dims=dims)


# Embedding values lie in [0, 6] (ReLU6, averaged); float32 rounding across two frameworks stays
# near 1e-4. The bound catches what cosine alone cannot: a pure scale error (sum vs mean pooling).
MAX_ABS = 1e-3


def report(p: Parity, a: Side, b: Side, min_cosine: float, out=sys.stdout, max_abs: float = MAX_ABS) -> bool:
    """Prints the comparison; returns True when it passes."""
    w = lambda s: print(s, file=out)  # noqa: E731
    w(f"{a.name}: {len(a.rows)} rows, root {a.root}")
    w(f"{b.name}: {len(b.rows)} rows, root {b.root}")
    w(f"matched rows: {p.matched}")
    w(f"embedded only in {a.name}: {len(p.only_a)}{_ex(p.only_a)}")
    w(f"embedded only in {b.name}: {len(p.only_b)}{_ex(p.only_b)}")
    w(f"failed in {a.name}, embedded by {b.name}: {len(p.failed_a_embedded_b)}{_ex(p.failed_a_embedded_b)}")
    w(f"failed in {b.name}, embedded by {a.name} (skipped): {len(p.failed_b_embedded_a)}{_ex(p.failed_b_embedded_a)}")
    w(f"failed in both: {len(p.failed_both)}")
    w(f"labels equal: {'yes' if not p.label_mismatches else 'NO, ' + str(len(p.label_mismatches))}"
      f"{_ex([f'{k}: {x!r} vs {y!r}' for k, x, y in p.label_mismatches])}")
    if p.bad_dims:
        w(f"embedding sizes differ: {len(p.bad_dims)}{_ex([f'{k}: {x} vs {y}' for k, x, y in p.bad_dims])}")
    wc, wk = p.worst_cosine
    wm, wmk = p.worst_max_abs
    w(f"worst cosine: {wc:.9f} (1 - cos = {1 - wc:.2e})  ({wk})")
    w(f"worst max-abs difference: {wm:.6g}  ({wmk})")
    w(f"mean cosine: {p.mean_cosine:.9f} (1 - cos = {1 - p.mean_cosine:.2e})")
    ok = (p.matched > 0 and p.unmatched() == 0 and not p.label_mismatches and not p.bad_dims
          and wc >= min_cosine and wm <= max_abs)
    w(f"{'PASS' if ok else 'FAIL'} (min cosine {min_cosine}, max-abs difference {max_abs})")
    return ok


def _ex(items, n=3) -> str:
    return "" if not items else "  e.g. " + "; ".join(map(str, items[:n]))


def run(orchard_out: str, reference_out: str, min_cosine: float = 0.9999,
        orchard_root: str | None = None, reference_root: str | None = None, out=sys.stdout,
        max_abs: float = MAX_ABS):
    """Loads both sides, compares, prints. Returns (passed, Parity)."""
    a = load_side(orchard_out, "orchard", orchard_root)
    b = load_side(reference_out, "reference", reference_root)
    p = compare(a, b)
    return report(p, a, b, min_cosine, out=out, max_abs=max_abs), p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("orchard_out")
    ap.add_argument("reference_out")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--max-abs", type=float, default=MAX_ABS, help="largest allowed |difference| of any value")
    ap.add_argument("--orchard-root", help="input root of ORCHARD_OUT's paths (default: inferred)")
    ap.add_argument("--reference-root", help="input root of REFERENCE_OUT's paths (default: inferred)")
    args = ap.parse_args(argv)
    try:
        ok, _ = run(args.orchard_out, args.reference_out, args.min_cosine,
                    args.orchard_root, args.reference_root, max_abs=args.max_abs)
    except (FileNotFoundError, ValueError) as e:
        print(f"embedding_parity: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
