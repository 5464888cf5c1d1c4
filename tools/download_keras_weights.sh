#!/usr/bin/env bash
# Downloads the official Keras MobileNetV2 (1.0, 224, no top) ImageNet weights and makes them
# Orchard's default model. Needs internet access (these build machines have none: tests use the
# TF-slim weights in ../shared/models, prepared by the same `orchard prepare-model`).
set -euo pipefail
cd "$(dirname "$0")/.."
name=mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
url=https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/$name
dest=${ORCHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orchard}/$name
mkdir -p "$(dirname "$dest")"
if [ ! -s "$dest" ]; then
  curl -fL --retry 3 -o "$dest.part" "$url" || { echo "download failed: $url (no internet?)" >&2; exit 1; }
  mv -f "$dest.part" "$dest"
fi
build/orchard prepare-model "$dest"
