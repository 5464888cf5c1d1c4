#!/usr/bin/env bash
# Sets up Orchard on a fresh Debian 12 machine and builds build/orchard. Quick when all is there.
#   1. Debian packages (GCC 11, libjpeg-turbo, libpng, LAPACK, HDF5, CLI11, libLBFGS, Boost.Beast,
#      Chromium and its driver, ...)
#   2. .venv: the reference pipeline (PySpark, TensorFlow/Keras, Pillow) and pyarrow, whose
#      Arrow/Parquet C++ headers and libraries the build links against; .venv-pyspark35: pyspark
#      3.5 alone, the cluster side of the Spark tests (no numpy, no pyarrow)
#   3. .deps/openvino-VERSION: the inference engine (OpenVINO's C++ headers and CPU runtime) from
#      PyPI's openvino wheel
#   4. CMake build into build/, with g++-11
# Why PyPI's OpenVINO and GCC 11: neither needs more than glibc 2.28 and GCC 11's libstdc++, so the
# worker bundle (tools/bundle.sh) runs on Amazon Linux 2023 (EMR 7: glibc 2.34, GCC 11's
# libstdc++); GCC 12 needs glibc 2.36 (docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  build-essential g++-11 cmake pkg-config git
  libjpeg62-turbo-dev libpng-dev
  libopenblas-dev libhdf5-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libgmock-dev
  liblbfgs-dev libboost-dev
  python3-venv python3-dev openjdk-17-jre-headless chromium chromium-driver patchelf
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

# .venv-pyspark35: pyspark 3.5 alone (and its py4j), what an EMR 7 node gives the Spark driver and
# executors: Spark 3.5, Python 3.9, no numpy, no pyarrow. tests/e2e/test_spark.py runs the Spark
# application with it too. Its Python is a 3.9 where the machine has one (pyenv's), else python3.
# Rebuilt from scratch when the pin or that Python changes.
PYSPARK35=pyspark==3.5.9
py35=/usr/bin/python3
for p in "$(command -v python3.9 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3.9; do
  if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys, venv; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
    py35=$p; break
  fi
done
want35="$PYSPARK35 $py35 $("$py35" -c 'import platform; print(platform.python_version())')"
stamp35=.venv-pyspark35/.requirements
if [ ! -f "$stamp35" ] || [ "$(cat "$stamp35")" != "$want35" ]; then
  echo "setup: creating .venv-pyspark35 ($PYSPARK35 alone, $("$py35" --version))"
  rm -rf .venv-pyspark35
  "$py35" -m venv .venv-pyspark35
  .venv-pyspark35/bin/pip install -q --disable-pip-version-check "$PYSPARK35"
  echo "$want35" > "$stamp35"
fi

# OpenVINO: its C++ headers and the CPU runtime (libopenvino, the CPU plugin, the IR reader, oneTBB
# and hwloc: 82 MB of the wheel's 180), from the pinned 59 MB wheel; the wheel's layout is kept.
OPENVINO_VERSION=2026.4.1
OPENVINO=.deps/openvino-$OPENVINO_VERSION
if [ ! -f "$OPENVINO/.complete" ]; then
  echo "setup: fetching OpenVINO $OPENVINO_VERSION from PyPI (openvino wheel: ~59 MB)"
  wheels=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --only-binary=:all: -d "$wheels" "openvino==$OPENVINO_VERSION"
  rm -rf "$OPENVINO" && mkdir -p "$OPENVINO"
  .venv/bin/python - "$wheels" "$OPENVINO" <<'EOF'
import pathlib, re, sys, zipfile
wheels, dest = pathlib.Path(sys.argv[1]), sys.argv[2]
wanted = re.compile(r"openvino/(include/.*|libs/(libopenvino\.so\.\d+|libopenvino_intel_cpu_plugin\.so"
                    r"|libopenvino_ir_frontend\.so\.\d+|libtbb\.so\.12|libtbbmalloc\.so\.2|libtbbbind_2_5\.so\.3"
                    r"|libhwloc\.so\.15))$")
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest, [n for n in z.namelist() if wanted.match(n)])
EOF
  rm -rf "$wheels"
  touch "$OPENVINO/.complete"
fi

# The build uses GCC 11 (see the top); a build folder configured with another compiler starts over.
if [ -f build/CMakeCache.txt ] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*g++-11$' build/CMakeCache.txt; then
  echo "setup: build/ was configured with another compiler: reconfiguring with g++-11"
  rm -rf build/CMakeCache.txt build/CMakeFiles
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc-11 -DCMAKE_CXX_COMPILER=g++-11 \
  -DORCHARD_PYTHON="$PWD/.venv/bin/python" -DORCHARD_OPENVINO="$PWD/$OPENVINO" >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: ready (build/orchard)"
