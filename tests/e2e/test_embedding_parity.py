"""End to end: `orchard featurize` against the notebooks' PySpark + Keras pipeline on the same images.

Env: ORCHARD_BUILD (CMake build folder holding `orchard`), ORCHARD_SHARED (../shared: data, models).
One sample folder (a temporary copy) holds 64 Fruits-360 Test images from 8 classes, a "Variants"
class (the same fruit as grayscale, CMYK, progressive and 4:4:4 JPEG, larger and non-square
JPEG, and RGB/palette/RGBA/16-bit PNG content named .jpg, as Pillow opens by content) and a
"Broken" class (garbage, truncated and empty files). Both pipelines run once over it.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import embedding_parity as ep  # noqa: E402

from conftest import MODEL_DIR, SHARED, orchard_binary  # noqa: E402
from conftest import TEST_IMAGES as TEST_DIR  # noqa: E402

MIN_COSINE = 0.9999
N_CLASSES, PER_CLASS = 8, 8
BROKEN = ["Broken/empty.jpg", "Broken/garbage.jpg", "Broken/truncated.jpg"]


def make_variants(src: Path, dest: Path) -> list[str]:
    """Writes the same fruit in the colour modes and encodings Pillow's convert('RGB') handles."""
    from PIL import Image
    dest.mkdir(parents=True)
    img = Image.open(src).convert("RGB")
    img.convert("L").save(dest / "gray.jpg", quality=90)
    img.convert("CMYK").save(dest / "cmyk.jpg", quality=90)
    img.save(dest / "progressive.jpg", quality=85, progressive=True)
    img.save(dest / "q95_444.jpg", quality=95, subsampling=0)
    img.resize((640, 480), Image.BICUBIC).save(dest / "large_640x480.jpg", quality=92)
    img.resize((90, 60), Image.BILINEAR).save(dest / "small_90x60.jpg", quality=90)
    img.save(dest / "png_rgb.jpg", format="PNG")
    img.convert("P", palette=Image.ADAPTIVE, colors=64).save(dest / "png_palette.jpg", format="PNG")
    rgba = img.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(img.size))
    rgba.save(dest / "png_rgba.jpg", format="PNG")
    # 16-bit values 0..765: Pillow's convert clips to 255 (it does not scale by 1/257).
    gray16 = np.asarray(img.convert("L"), dtype=np.uint16) * 3
    Image.fromarray(gray16).save(dest / "png_gray16.jpg", format="PNG")  # uint16 array: mode I;16
    return sorted(f"Variants/{p.name}" for p in dest.iterdir())


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """(input folder, list of relative paths of real fruit images, of variants)."""
    if not TEST_DIR.is_dir():
        pytest.fail(f"{TEST_DIR}: Fruits-360 Test folder missing (set ORCHARD_SHARED)")
    root = tmp_path_factory.mktemp("parity") / "input"
    classes = sorted((p.name for p in TEST_DIR.iterdir() if p.is_dir()), key=os.fsencode)
    chosen = [classes[i * len(classes) // N_CLASSES] for i in range(N_CLASSES)]
    fruits = []
    for c in chosen:
        files = sorted((f.name for f in (TEST_DIR / c).iterdir() if f.name.endswith(".jpg")),
                       key=os.fsencode)[:PER_CLASS]
        (root / c).mkdir(parents=True)
        for f in files:
            shutil.copyfile(TEST_DIR / c / f, root / c / f)
            fruits.append(f"{c}/{f}")
    variants = make_variants(root / fruits[0], root / "Variants")
    (root / "Broken").mkdir()
    (root / "Broken" / "empty.jpg").write_bytes(b"")
    (root / "Broken" / "garbage.jpg").write_bytes(np.random.RandomState(7).bytes(5000))
    good = (root / fruits[1]).read_bytes()
    (root / "Broken" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root, fruits, variants


@pytest.fixture(scope="module")
def reference_out(sample, tmp_path_factory):
    root, _, _ = sample
    out = tmp_path_factory.mktemp("reference") / "out"
    cmd = [sys.executable, str(REPO / "reference" / "featurize_spark.py"), str(root), str(out),
           "--weights", str(MODEL_DIR), "--repartition", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"reference failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def orchard_out(sample, tmp_path_factory):
    exe = orchard_binary()
    root, _, _ = sample
    out = tmp_path_factory.mktemp("orchard") / "out"
    cmd = [str(exe), "featurize", str(root), str(out), "--model", str(MODEL_DIR)]
    env = dict(os.environ, ORCHARD_CACHE=str(out) + ".cache")  # a fresh model cache
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out


def restrict(side: ep.Side, keep) -> ep.Side:
    return ep.Side(side.name, side.root, {k: v for k, v in side.rows.items() if k in keep},
                   {k for k in side.errors if k in keep})


def sides(sample, orchard_out, reference_out, keep):
    root = str(sample[0])
    a = ep.load_side(str(orchard_out), "orchard", root)
    b = ep.load_side(str(reference_out), "reference", root)
    return restrict(a, set(keep)), restrict(b, set(keep))


def test_reference_embeds_every_readable_image(sample, reference_out):
    root, fruits, variants = sample
    ref = ep.load_side(str(reference_out), "reference", str(root))
    # Spark's file scan drops zero-byte files before the UDF sees them: no row at all.
    broken = set(BROKEN) - {"Broken/empty.jpg"}
    assert set(ref.rows) == set(fruits) | set(variants) | broken
    assert ref.errors == broken, "Pillow should fail exactly on the Broken files"
    for k in fruits + variants:
        label, f = ref.rows[k]
        assert label == k.split("/")[0]
        assert f.shape == (1280,) and np.isfinite(f).all()


def test_fruit_images_match_reference(sample, orchard_out, reference_out):
    _, fruits, _ = sample
    a, b = sides(sample, orchard_out, reference_out, fruits)
    p = ep.compare(a, b)
    ok = ep.report(p, a, b, MIN_COSINE)
    assert p.matched == len(fruits) and p.unmatched() == 0 and not p.label_mismatches
    wc, wk = p.worst_cosine
    assert wc >= MIN_COSINE, f"worst cosine {wc} at {wk}"
    assert ok


def test_colour_modes_and_encodings_match_reference(sample, orchard_out, reference_out):
    _, _, variants = sample
    a, b = sides(sample, orchard_out, reference_out, variants)
    p = ep.compare(a, b)
    ep.report(p, a, b, MIN_COSINE)
    for k in variants:
        print(f"  {k}: cosine {p.cosines.get(k, float('nan')):.7f}")
    missing = [k for k in variants if k not in p.cosines]
    assert not missing, f"orchard gave no embedding for {missing}"
    bad = {k: c for k, c in p.cosines.items() if c < MIN_COSINE}
    assert not bad, f"cosine below {MIN_COSINE}: {bad}"


def test_unreadable_files_go_to_errors(sample, orchard_out):
    root, fruits, variants = sample
    o = ep.load_side(str(orchard_out), "orchard", str(root))
    embedded = {k for k, (_, f) in o.rows.items() if f is not None}
    assert o.errors == set(BROKEN), f"errors/ holds {sorted(o.errors)}"
    # Every input exactly once: in features/ or in errors/.
    assert embedded.isdisjoint(o.errors)
    assert embedded | o.errors == set(fruits) | set(variants) | set(BROKEN)
