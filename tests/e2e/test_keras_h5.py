"""End to end: the same weights through two loaders. reference/keras_model.py writes the TF-slim
weights as a legacy Keras .h5 (the official *_no_top.h5 layout); `orchard featurize --model that.h5`
must give the embeddings `--model <npy folder>` gives, and both must match Keras itself.

Env: ORCHARD_BUILD (CMake build folder holding `orchard`), ORCHARD_SHARED (../shared).
"""
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "reference"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import embedding_parity as ep  # noqa: E402
import keras_model  # noqa: E402

from conftest import MODEL_DIR, SHARED, orchard_binary  # noqa: E402
from conftest import TEST_IMAGES as TEST_DIR  # noqa: E402

N_IMAGES = 16
SAME_WEIGHTS_COSINE = 0.99999
KERAS_COSINE = 0.9999


@pytest.fixture(scope="module")
def keras_net():
    return keras_model.build_model(str(MODEL_DIR))


@pytest.fixture(scope="module")
def h5_file(keras_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "mobilenet_v2_1.0_224_no_top.h5"
    keras_model.write_keras_h5(keras_net, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 Test images, 4 from each of 4 classes, copied as INPUT/<class>/<file>."""
    root = tmp_path_factory.mktemp("h5in") / "input"
    classes = sorted((p.name for p in TEST_DIR.iterdir() if p.is_dir()), key=os.fsencode)
    rels = []
    for c in [classes[i * len(classes) // 4 + 1] for i in range(4)]:
        (root / c).mkdir(parents=True)
        for f in sorted((f.name for f in (TEST_DIR / c).iterdir()), key=os.fsencode)[-4:]:
            shutil.copyfile(TEST_DIR / c / f, root / c / f)
            rels.append(f"{c}/{f}")
    assert len(rels) == N_IMAGES
    return root, rels


def run_orchard(exe, root, out, model):
    """orchard featurize with a model cache of its own, so each run really loads its --model."""
    cmd = [str(exe), "featurize", str(root), str(out), "--model", str(model)]
    env = dict(os.environ, ORCHARD_CACHE=str(out) + ".cache")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out


def test_h5_layout_is_keras2(h5_file, keras_net):
    import h5py
    with h5py.File(h5_file, "r") as f:
        layer_names = [n.decode() for n in f.attrs["layer_names"]]
        assert bytes(f.attrs["backend"]) == b"tensorflow" and "keras_version" in f.attrs
        assert "global_average_pooling2d" not in layer_names  # a no-top file
        assert f["Conv1"].attrs["weight_names"].tolist() == [b"Conv1/kernel:0"]
        assert f["bn_Conv1"].attrs["weight_names"].tolist() == [
            b"bn_Conv1/gamma:0", b"bn_Conv1/beta:0", b"bn_Conv1/moving_mean:0",
            b"bn_Conv1/moving_variance:0"]
        assert f["block_1_depthwise/block_1_depthwise/depthwise_kernel:0"].shape == (3, 3, 96, 1)
        assert f["Conv_1/Conv_1/kernel:0"].shape == (1, 1, 320, 1280)
        n = 0
        for name in layer_names:
            for w in f[name].attrs["weight_names"]:
                ds = f[name][w.decode()]
                assert ds.dtype == np.float32
                n += 1
        assert n == len(keras_net.weights) == 260


def test_h5_reloads_in_keras(h5_file, keras_net):
    assert keras_model.check_h5_roundtrip(keras_net, str(h5_file)) == 260


def test_h5_and_npy_loaders_agree_and_match_keras(h5_file, keras_net, images, tmp_path):
    from PIL import Image
    from keras.applications.mobilenet_v2 import preprocess_input
    exe = orchard_binary()
    root, rels = images
    out_h5 = run_orchard(exe, root, tmp_path / "from_h5", h5_file)
    out_npy = run_orchard(exe, root, tmp_path / "from_npy", MODEL_DIR)

    a = ep.load_side(str(out_h5), "orchard --model .h5", str(root))
    b = ep.load_side(str(out_npy), "orchard --model npy", str(root))
    p = ep.compare(a, b)
    assert ep.report(p, a, b, SAME_WEIGHTS_COSINE)
    assert p.matched == N_IMAGES

    # Keras itself, on the .h5 loaded through Keras' legacy loader.
    net = keras_model.new_model()
    net.load_weights(str(h5_file))
    batch = np.stack([
        preprocess_input(np.asarray(Image.open(io.BytesIO((root / r).read_bytes()))
                                    .convert("RGB").resize((224, 224)), dtype=np.float32))
        for r in rels])
    emb = net.predict(batch, verbose=0)
    k = ep.Side("keras", str(root), {r: (r.split("/")[0], e.astype(np.float32)) for r, e in zip(rels, emb)})
    pk = ep.compare(a, k)
    assert ep.report(pk, a, k, KERAS_COSINE)
    assert pk.matched == N_IMAGES
