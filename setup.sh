#!/usr/bin/env bash
# Sets up Orchard on a fresh Debian 12 machine and builds build/orchard. Quick when all is there.
#   1. Debian packages (LibTorch, libjpeg-turbo, libpng, LAPACK, HDF5, CLI11, Chromium, ...)
#   2. .venv: the reference pipeline (PySpark, TensorFlow/Keras, Pillow) and pyarrow, whose
#      Arrow/Parquet C++ headers and libraries the build links against
#   3. CMake build into build/
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  build-essential cmake pkg-config git
  libtorch-dev libjpeg62-turbo-dev libpng-dev
  liblapacke-dev libopenblas-dev libhdf5-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libgmock-dev
  python3-venv python3-dev openjdk-17-jre-headless chromium patchelf
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A JDK already on PATH (java 17+) serves PySpark as well as Debian's.
if command -v java >/dev/null 2>&1; then
  missing=("${missing[@]/openjdk-17-jre-headless/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv is rebuilt only when requirements.txt changes.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: creating .venv from requirements.txt"
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DORCHARD_PYTHON="$PWD/.venv/bin/python" >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: ready (build/orchard)"
