"""Keras MobileNetV2 (no top, average pooling) on the TF-slim weights, and its legacy Keras .h5 file.

The notebooks run `MobileNetV2(weights='imagenet')` from Keras. That download is not possible here,
so the reference builds the same Keras network with `weights=None` and sets every weight from the
TF-slim .npy dump in ../shared/models/mobilenet_v2_1.0_224_tfslim (mapping: that folder's README).

    python reference/keras_model.py --weights DIR --write-h5 OUT.h5 [--check]

writes OUT.h5 in the layout of the official Keras-2 file
`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5` and, with --check, loads it
back into a fresh Keras model (legacy .h5 path) and verifies every weight is bit-identical.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_WEIGHTS = "/work/shared/models/mobilenet_v2_1.0_224_tfslim"
INPUT_SHAPE = (224, 224, 3)
BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
# The TF-slim file that has no Keras counterpart in a no-top model (the 1001 ImageNet logit biases).
UNUSED_TFSLIM = {"Logits_Conv2d_1c_1x1_biases"}


def _slim_prefixes() -> list[tuple[str, str, str]]:
    """(TF-slim prefix, Keras conv layer, Keras BN layer) for every conv of the backbone, in order."""
    rows = [("Conv", "Conv1", "bn_Conv1"),
            ("expanded_conv_depthwise", "expanded_conv_depthwise", "expanded_conv_depthwise_BN"),
            ("expanded_conv_project", "expanded_conv_project", "expanded_conv_project_BN")]
    for n in range(1, 17):
        for part in ("expand", "depthwise", "project"):
            rows.append((f"expanded_conv_{n}_{part}", f"block_{n}_{part}", f"block_{n}_{part}_BN"))
    rows.append(("Conv_1", "Conv_1", "Conv_1_bn"))
    return rows


def tfslim_to_keras_names() -> dict[str, tuple[str, str]]:
    """TF-slim tensor name (file stem) -> (Keras layer name, Keras-2 weight name).

    Keras-2 weight names are the ones of the official .h5 ("kernel", "depthwise_kernel", "gamma",
    ...); Keras 3 calls the depthwise weight "kernel", which `build_model` accounts for.
    """
    mapping: dict[str, tuple[str, str]] = {}
    for slim, conv, bn in _slim_prefixes():
        if slim.endswith("depthwise"):
            mapping[f"{slim}_depthwise_weights"] = (conv, "depthwise_kernel")
        else:
            mapping[f"{slim}_weights"] = (conv, "kernel")
        for p in BN_PARAMS:
            mapping[f"{slim}_BatchNorm_{p}"] = (bn, p)
    return mapping


def load_tfslim(weights_dir: str) -> dict[str, np.ndarray]:
    """Reads every .npy in weights_dir; fails if a file is missing, extra, or not float32."""
    if not os.path.isdir(weights_dir):
        raise FileNotFoundError(f"{weights_dir}: no such folder of TF-slim .npy weights")
    files = {f[:-4]: os.path.join(weights_dir, f) for f in os.listdir(weights_dir) if f.endswith(".npy")}
    expected = set(tfslim_to_keras_names()) | UNUSED_TFSLIM
    missing, extra = expected - set(files), set(files) - expected
    if missing or extra:
        raise ValueError(f"{weights_dir}: TF-slim files do not match the MobileNetV2 mapping; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    out = {}
    for stem, path in files.items():
        arr = np.load(path, allow_pickle=False)
        if arr.dtype != np.float32:
            raise ValueError(f"{path}: dtype {arr.dtype}, expected float32")
        out[stem] = arr
    return out


def _keras_weight_key(layer, weight) -> tuple[str, str]:
    """(layer name, Keras-2 weight name) of a Keras 3 variable."""
    import keras
    name = weight.name
    if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
        name = "depthwise_kernel"
    return layer.name, name


def new_model():
    """A fresh Keras MobileNetV2 as the notebooks use it: no top, global average pooling, 1280-d."""
    import keras
    return keras.applications.MobileNetV2(input_shape=INPUT_SHAPE, include_top=False,
                                          pooling="avg", weights=None)


def build_model(weights_dir: str = DEFAULT_WEIGHTS):
    """Keras MobileNetV2(include_top=False, pooling='avg') with every weight set from the TF-slim
    .npy folder. Raises if any Keras weight is not set exactly once or a shape differs."""
    slim = load_tfslim(weights_dir)
    by_keras = {v: k for k, v in tfslim_to_keras_names().items()}
    model = new_model()
    used: dict[str, str] = {}
    for layer in model.layers:
        for w in layer.weights:
            key = _keras_weight_key(layer, w)
            stem = by_keras.get(key)
            if stem is None:
                raise ValueError(f"Keras weight {w.path} ({key}) has no TF-slim tensor in the mapping")
            if stem in used:
                raise ValueError(f"TF-slim tensor {stem} mapped twice: {used[stem]} and {w.path}")
            value = slim[stem]
            if tuple(value.shape) != tuple(w.shape):
                raise ValueError(f"{stem}.npy has shape {value.shape}, Keras {w.path} wants {tuple(w.shape)}")
            w.assign(value)
            used[stem] = w.path
    if len(used) != len(model.weights):
        raise ValueError(f"set {len(used)} of {len(model.weights)} Keras weights")
    unused = set(slim) - set(used) - UNUSED_TFSLIM
    if unused:
        raise ValueError(f"TF-slim tensors left unused: {sorted(unused)}")
    # Read back: every variable holds exactly its file's value.
    for layer in model.layers:
        for w in layer.weights:
            if not np.array_equal(np.asarray(w.numpy()), slim[by_keras[_keras_weight_key(layer, w)]]):
                raise AssertionError(f"{w.path} does not hold the value assigned to it")
    return model


def _legacy_weights(layer):
    # Keras-2 .h5 order: trainable then non-trainable (gamma, beta, moving_mean, moving_variance).
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def write_keras_h5(model, path: str, keras_version: str | None = None) -> None:
    """Writes model's weights as a legacy Keras-2 weights .h5, laid out like the official
    `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`:

      /  attrs layer_names (every layer, in model order; the pooling layer is left out, as in the
         no-top file), backend=b"tensorflow", keras_version
      /<layer>  attr weight_names = [b"<layer>/<weight>:0", ...] (empty for layers without weights)
      /<layer>/<layer>/<weight>:0  float32 dataset

    Weight names are Keras-2's ("depthwise_kernel", not Keras 3's "kernel"). Keras 3 loads the
    file with `model.load_weights(path)` (order-based legacy path); see `check_h5_roundtrip`.
    """
    import h5py
    import keras
    layers = [l for l in model.layers if not isinstance(l, keras.layers.GlobalAveragePooling2D)]
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = np.array([l.name.encode("utf8") for l in layers])
        # Fixed-length byte strings, as h5py 2 wrote Keras 2's `str.encode('utf8')` attributes.
        f.attrs["backend"] = np.bytes_(b"tensorflow")
        f.attrs["keras_version"] = np.bytes_((keras_version or keras.__version__).encode("utf8"))
        for layer in layers:
            g = f.create_group(layer.name)
            names, values = [], []
            for w in _legacy_weights(layer):
                lname, wname = _keras_weight_key(layer, w)
                names.append(f"{lname}/{wname}:0".encode("utf8"))
                values.append(np.asarray(w.numpy(), dtype=np.float32))
            # h5py cannot store an empty list of strings as 'S' array; Keras-2 wrote an empty array.
            g.attrs["weight_names"] = np.array(names, dtype="S") if names else np.array([], dtype="S1")
            for n, v in zip(names, values):
                g.create_dataset(n.decode("utf8"), data=v)
    os.replace(tmp, path)


def check_h5_roundtrip(model, path: str) -> int:
    """Loads path into a fresh Keras model through Keras' legacy .h5 loader and checks every
    weight equals model's, bit for bit. Returns the number of weights checked; raises otherwise."""
    fresh = new_model()
    fresh.load_weights(path)
    a, b = model.get_weights(), fresh.get_weights()
    if len(a) != len(b):
        raise AssertionError(f"{path}: {len(b)} weights loaded, expected {len(a)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape or not np.array_equal(x, y):
            raise AssertionError(f"{path}: weight #{i} ({model.weights[i].path}) differs after reload")
    return len(a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="TF-slim .npy folder")
    ap.add_argument("--write-h5", metavar="OUT.h5", help="write the legacy Keras .h5 weights file")
    ap.add_argument("--check", action="store_true", help="reload OUT.h5 with Keras and compare")
    args = ap.parse_args(argv)
    model = build_model(args.weights)
    n = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"built Keras MobileNetV2 (no top, avg pool) from {args.weights}: "
          f"{len(model.weights)} weights, {n} values")
    if args.write_h5:
        write_keras_h5(model, args.write_h5)
        print(f"wrote {args.write_h5}")
        if args.check:
            print(f"reloaded with Keras load_weights: {check_h5_roundtrip(model, args.write_h5)} weights identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
