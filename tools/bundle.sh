#!/usr/bin/env bash
# Builds the self-contained worker archive dist/orchard-VERSION-linux-x86_64.tar.gz that Spark ships
# with `--archives orchard-VERSION-linux-x86_64.tar.gz#orchard` (see --help). Only glibc and the
# GCC runtime (libstdc++, libgcc_s) come from the host, as for manylinux wheels: every other shared
# library in build/orchard's closure is copied into lib/ and found through an $ORIGIN-relative
# DT_RPATH. The script reports the highest GLIBC, GLIBCXX, CXXABI and GCC symbol versions the bundle
# requires and fails above what Amazon Linux 2023 (the base of EMR 7) provides.
set -euo pipefail

# Amazon Linux 2023: glibc 2.34, GCC 11's libstdc++ and libgcc_s (the limits of manylinux_2_34).
LIMITS="GLIBC=2.34 GLIBCXX=3.4.29 CXXABI=1.3.13 GCC=7.0.0"
HOST="Amazon Linux 2023 / EMR 7: glibc 2.34, GCC 11's libstdc++ and libgcc_s"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/tools/bundle.sh"

usage() {
  cat <<EOF
Usage: tools/bundle.sh [--model WEIGHTS_OR_OV] [--out DIR] [--allow-newer-host] [--check] [--force]

Builds DIR/orchard-VERSION-linux-x86_64.tar.gz (VERSION from \`orchard --version\`) and prints its
path as the last line. Its top level is what Spark's \`--archives X.tar.gz#orchard\` unpacks into
./orchard on every executor:

  bin/orchard                 the binary, DT_RPATH \$ORIGIN/../lib
  lib/*.so*                   every shared library it needs except glibc's and the GCC runtime
                              (libstdc++.so.6, libgcc_s.so.1), which the host provides (DT_RPATH \$ORIGIN)
  share/orchard/model.ov      only with --model: a prepared model (use --model ./orchard/share/orchard/model.ov)
  share/orchard/abi.txt       per file, the newest GLIBC, GLIBCXX, CXXABI and GCC symbol versions it
                              imports from the host, and its symbols above the limits
  README, VERSION

Options:
  --model WEIGHTS_OR_OV       bundle a prepared model: a .ov is copied as is; a TF-slim .npy folder
                              or a Keras .h5 file is prepared with \`orchard prepare-model --out\`
  --out DIR                   where the archive goes (default: dist/ in the repository)
  --allow-newer-host          build even when the bundle needs more than Amazon Linux 2023 provides
                              (it then will not start on EMR 7; fine for local Spark tests)
  --check                     resolve, stage and scan only: report what the bundle needs from the
                              host, apply the host check, write no archive
  --force                     rebuild even when the archive is up to date
  -h, --help                  this help

The binary is \$ORCHARD_BUILD/orchard, else build/orchard. An archive newer than the binary and
this script, built with the same --model, is reused (the host check is still applied).
Needs ldd, objdump, readelf, patchelf (Debian package \`patchelf\`; installed with apt-get when
missing and running as root), tar and gzip.
The host check: every symbol a file imports from glibc, libstdc++ or libgcc_s must have a version
within $LIMITS ($HOST).
Exit status: 0 built (or up to date); 1 the host check failed or something else went wrong.
EOF
}

die() { echo "bundle.sh: error: $*" >&2; exit 1; }
log() { echo "bundle.sh: $*" >&2; }

MODEL="" OUT="$REPO/dist" ALLOW=0 CHECK=0 FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --model) [ $# -ge 2 ] || die "--model needs a value"; MODEL=$2; shift 2 ;;
    --model=*) MODEL=${1#--model=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --allow-newer-host) ALLOW=1; shift ;;
    --check) CHECK=1; shift ;;
    --force) FORCE=1; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

BIN="${ORCHARD_BUILD:-$REPO/build}/orchard"
[ -x "$BIN" ] || die "$BIN: no orchard binary (build it: cmake --build build, or ./setup.sh)"
BIN=$(readlink -f "$BIN")
[ "$(uname -m)" = x86_64 ] || die "only linux-x86_64 bundles are supported (this is $(uname -m))"
for t in ldd objdump readelf strip tar gzip flock sort; do
  command -v "$t" >/dev/null || die "$t not found (Debian: binutils, libc-bin, tar, gzip, util-linux)"
done
if ! command -v patchelf >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "patchelf missing: apt-get install -y patchelf"
    apt-get install -y -qq patchelf >&2 || { apt-get update -qq >&2 && apt-get install -y -qq patchelf >&2; } ||
      die "cannot install patchelf (apt-get install patchelf)"
  else
    die "patchelf not found: apt-get install patchelf"
  fi
fi

VERSION=$("$BIN" --version | awk 'NR==1 {print $2}')
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+([.+~-][0-9A-Za-z.+~-]*)?$ ]] || die "unexpected \`orchard --version\` output: $("$BIN" --version)"
if [ -n "$MODEL" ]; then
  [ -e "$MODEL" ] || die "--model $MODEL: no such file or folder"
  MODEL=$(readlink -f "$MODEL")
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NAME="orchard-$VERSION-linux-x86_64"
ARCHIVE="$OUT/$NAME.tar.gz"
REPORT="$OUT/$NAME.abi.txt"     # sidecar: the scan of the archive's content
STAMP="$OUT/$NAME.stamp"        # sidecar: what the archive was built from

# Serialises concurrent runs on the same output folder (tests, a Spark test, a person).
exec 9>"$OUT/.bundle.lock"
flock 9

# What the archive is built from, besides the binary and this script (compared by mtime).
model_key() {
  if [ -z "$MODEL" ]; then echo "model=none"; return; fi
  echo "model=$MODEL $(find "$MODEL" -type f -printf '%P %s %T@\n' | LC_ALL=C sort | md5sum | cut -c1-32)"
}
KEY="binary=$BIN
$(model_key)"

# awk: vcmp(a, b) compares dotted versions numerically (2.2.5 < 2.34 < 2.35): -1, 0 or 1.
AWK_VCMP='function vcmp(a, b,  x, y, i, n, m, p, q) {
  n = split(a, x, "."); m = split(b, y, "."); if (m > n) n = m
  for (i = 1; i <= n; i++) { p = (i in x) ? x[i] + 0 : 0; q = (i in y) ? y[i] + 0 : 0; if (p != q) return p < q ? -1 : 1 }
  return 0 }'
# The highest version of namespace NS (GLIBC, GLIBCXX, CXXABI, GCC) in a report (below), or "none".
report_max() {
  awk -v ns="$2" "$AWK_VCMP"'
    !/^#/ { for (i = 2; i <= 5; i++) if ($i ~ ("^" ns "_[0-9]")) { v = $i; sub(/^[A-Z]+_/, "", v); if (m == "" || vcmp(v, m) > 0) m = v } }
    END { print (m == "" ? "none" : ns "_" m) }' "$1"
}

# Applies the host check to a report (lines: "FILE GLIBC_v GLIBCXX_v CXXABI_v GCC_v [symbol@VERSION
# above the limits ...]", "-" where a file imports none); returns 1 when it fails.
gate() {
  local report=$1 ns have=() lines
  for ns in GLIBC GLIBCXX CXXABI GCC; do have+=("$(report_max "$report" "$ns")"); done
  local limit_glibc=${LIMITS%% *}
  echo "GLIBC: highest version required by the bundle: ${have[0]} (limit GLIBC_${limit_glibc#GLIBC=}: Amazon Linux 2023 / EMR 7)"
  echo "GCC runtime: highest versions required by the bundle: ${have[1]} ${have[2]} ${have[3]} (limits ${LIMITS#* }: GCC 11's libstdc++ and libgcc_s)"
  lines=$(awk '!/^#/ && NF > 5 { out = "  " $1 ":"; for (i = 6; i <= NF; i++) out = out " " $i; print out }' "$report")
  if [ -z "$lines" ]; then
    echo "host check: OK, every file in the bundle runs on $HOST"
    return 0
  fi
  if [ "$ALLOW" = 1 ]; then
    cat >&2 <<EOF
################################################################################
WARNING: this bundle needs more than $HOST. It will NOT start on EMR 7 or on any host with an older
glibc or GCC runtime: built anyway because of --allow-newer-host (good for local Spark tests only).
Files above the limits ($LIMITS), with the symbols:
$lines
################################################################################
EOF
    return 0
  fi
  cat >&2 <<EOF
bundle.sh: error: the bundle needs more than $HOST.
Files above the limits ($LIMITS), with the symbols they import:
$lines
Build with what ./setup.sh sets up (g++-11, OpenVINO from PyPI's manylinux wheel) or with libraries
built for an older system, or pass --allow-newer-host for a bundle meant only for newer hosts.
EOF
  return 1
}

finish() {  # prints the summary of an archive and its path, last
  local summary
  summary=$(tar -tvzf "$ARCHIVE" | awk -v c="$(stat -c %s "$ARCHIVE")" '
    {s += $3; n++; if ($6 ~ /^lib\/./) l++}
    END {printf "%.1f MiB compressed, %.1f MiB unpacked, %d entries, %d libraries", c / 1048576, s / 1048576, n, l}')
  log "$(basename "$ARCHIVE"): $summary"
  echo "$ARCHIVE"
}

# Reuse: the archive is newer than the binary and this script, and was built from the same inputs.
if [ "$FORCE" = 0 ] && [ "$CHECK" = 0 ] && [ -f "$ARCHIVE" ] && [ -f "$REPORT" ] && [ -f "$STAMP" ] &&
   [ "$ARCHIVE" -nt "$BIN" ] && [ "$ARCHIVE" -nt "$SELF" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  log "up to date: $ARCHIVE (newer than $BIN and tools/bundle.sh; --force rebuilds)"
  gate "$REPORT" || exit 1
  log "$(basename "$ARCHIVE"): $(awk -v c="$(stat -c %s "$ARCHIVE")" 'BEGIN {printf "%.1f MiB", c / 1048576}')"
  echo "$ARCHIVE"
  exit 0
fi

T0=$(date +%s)
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE" "$ARCHIVE.tmp.$$"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/share/orchard"

# 1. The closure, as the loader resolves it for the built binary (its own RUNPATH included).
#    glibc's own libraries and the GCC runtime stay on the host: every Linux with a C++ compiler's
#    runtime has them, and a newer copy shipped here would need a newer glibc (GCC 12's libstdc++
#    needs 2.36). The host check below holds every file to the host's versions of them.
is_host() {
  case "$1" in
    libstdc++.so.6|libgcc_s.so.1|\
    ld-linux*.so*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|\
    libutil.so.*|libanl.so.*|libBrokenLocale.so.*|libnsl.so.1|libnss_*.so.*|libthread_db.so.*|\
    libc_malloc_debug.so.*|libmemusage.so|libpcprofile.so|libSegFault.so) return 0 ;;
  esac
  return 1
}
LDD=$(LC_ALL=C ldd "$BIN") || die "ldd $BIN failed"
if grep -q 'not found' <<<"$LDD"; then
  die "$BIN has unresolved libraries:
$(grep 'not found' <<<"$LDD")"
fi
n=0
while read -r soname arrow path _; do
  [ "$arrow" = "=>" ] && [ -n "$path" ] || continue
  is_host "$soname" && continue
  cp -L "$path" "$STAGE/lib/$soname"
  chmod u+w,a+r "$STAGE/lib/$soname"
  n=$((n + 1))
done <<<"$LDD"
[ "$n" -gt 0 ] || die "ldd found no library to bundle (unexpected)"
# OpenVINO loads its CPU plugin and its IR reader (and oneTBB its hwloc binding) with dlopen() from
# libopenvino's own folder, so ldd does not list them: they come from beside the libopenvino found.
ov=$(awk '$1 ~ /^libopenvino\.so/ && $2 == "=>" {print $3}' <<<"$LDD")
if [ -n "$ov" ]; then
  for f in libopenvino_intel_cpu_plugin.so 'libopenvino_ir_frontend.so.*' libtbbbind_2_5.so.3 libhwloc.so.15; do
    found=$(compgen -G "$(dirname "$ov")/$f" | head -1) || die "$(dirname "$ov")/$f: missing (run ./setup.sh)"
    cp -L "$found" "$STAGE/lib/" || die "cannot copy $found"
    chmod u+w,a+r "$STAGE/lib/$(basename "$found")"
    n=$((n + 1))
  done
fi
log "copied $n libraries ($(( $(date +%s) - T0 )) s)"
cp "$BIN" "$STAGE/bin/orchard"
chmod 755 "$STAGE/bin/orchard"

# 2. Symbol tables and debug info, which nothing at run time reads (the dynamic symbols stay): the
#    pyarrow wheel's libraries and orchard keep theirs, 4 MiB of the compressed archive.
for f in "$STAGE/bin/orchard" "$STAGE"/lib/*; do
  strip --strip-unneeded "$f" || die "strip $f failed"
done

# 3. Search paths. DT_RPATH rather than DT_RUNPATH: it applies before LD_LIBRARY_PATH (Hadoop and
#    EMR set one for executors) and also to dlopen() calls made by libraries that have none.
#    Every library gets $ORIGIN, replacing any path of its own (the wheel's $ORIGIN, openblas').
patchelf --set-rpath '$ORIGIN/../lib' --force-rpath "$STAGE/bin/orchard"
for f in "$STAGE"/lib/*; do
  patchelf --set-rpath '$ORIGIN' --force-rpath "$f"
done

log "set DT_RPATH on bin/orchard and lib/* ($(( $(date +%s) - T0 )) s)"

# 4. The host scan: the versions of the glibc / libstdc++ / libgcc_s symbols each file imports
#    (undefined symbols in objdump -T), one line per file (see gate above).
( cd "$STAGE" && objdump -T bin/orchard lib/* ) | awk -v limits="$LIMITS" "$AWK_VCMP"'
  BEGIN { n = split(limits, l, " "); for (i = 1; i <= n; i++) { split(l[i], kv, "="); limit[kv[1]] = kv[2] } }
  function flush(  k, s, ns) {
    if (file == "") return
    s = file
    for (k = 1; k <= 4; k++) { ns = order[k]; s = s " " (max[ns] == "" ? "-" : ns "_" max[ns]) }
    for (k in over) s = s " " k
    print s
    split("", max); split("", over)
  }
  BEGIN { order[1] = "GLIBC"; order[2] = "GLIBCXX"; order[3] = "CXXABI"; order[4] = "GCC" }
  /:[ \t]+file format / { flush(); file = $1; sub(/:$/, "", file); next }
  /\*UND\*/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^\(?(GLIBC|GLIBCXX|CXXABI|GCC)_[0-9]+(\.[0-9]+)+\)?$/) {
      v = $i; gsub(/[()]/, "", v); ns = v; sub(/_.*/, "", ns); sub(/^[A-Z]+_/, "", v)
      if (max[ns] == "" || vcmp(v, max[ns]) > 0) max[ns] = v
      if (vcmp(v, limit[ns]) > 0) over[$NF "@" ns "_" v] = 1
    }
  }
  END { flush() }' | sort -k1,1 > "$STAGE/abi.tmp"
{ echo "# file GLIBC GLIBCXX CXXABI GCC [symbol@version above $LIMITS ...]"; cat "$STAGE/abi.tmp"; } \
  > "$STAGE/share/orchard/abi.txt"
rm -f "$STAGE/abi.tmp"
[ "$(grep -vc '^#' "$STAGE/share/orchard/abi.txt")" = $((n + 1)) ] || die "host scan: expected $((n + 1)) files, got $(grep -vc '^#' "$STAGE/share/orchard/abi.txt")"
log "staged $n libraries in $(( $(date +%s) - T0 )) s"

if [ "$CHECK" = 1 ]; then
  gate "$STAGE/share/orchard/abi.txt" || exit 1
  log "--check: no archive written"
  exit 0
fi
gate "$STAGE/share/orchard/abi.txt" || exit 1

# 5. The model, README and VERSION.
if [ -n "$MODEL" ]; then
  case "$MODEL" in
    *.ov) cp "$MODEL" "$STAGE/share/orchard/model.ov" ;;
    *)
      log "preparing the model from $MODEL"
      cache=$(mktemp -d)
      ORCHARD_CACHE="$cache" "$BIN" prepare-model "$MODEL" --out "$STAGE/share/orchard/model.ov" >/dev/null ||
        { rm -rf "$cache"; die "orchard prepare-model $MODEL failed"; }
      rm -rf "$cache" ;;
  esac
fi
echo "$VERSION" > "$STAGE/VERSION"
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD 2>/dev/null || commit="$commit+local changes"
glibc=$(report_max "$STAGE/share/orchard/abi.txt" GLIBC)
gcc_rt="$(report_max "$STAGE/share/orchard/abi.txt" GLIBCXX), $(report_max "$STAGE/share/orchard/abi.txt" CXXABI), $(report_max "$STAGE/share/orchard/abi.txt" GCC)"
cat > "$STAGE/README" <<EOF
Orchard $VERSION for linux-x86_64 (built from commit $commit on $(. /etc/os-release && echo "$PRETTY_NAME"))

Self-contained: bin/orchard loads every library it needs from lib/ (DT_RPATH \$ORIGIN/../lib);
only glibc and the GCC runtime come from the host, which must provide $glibc and, in libstdc++ and
libgcc_s, $gcc_rt (Amazon Linux 2023 and any host with glibc >= 2.34 and GCC >= 11's runtime do).
share/orchard/abi.txt lists, per file, the newest versions it imports from them.
It runs from any directory, with any or no environment.

  ./bin/orchard --help
  ./bin/orchard run INPUT OUTPUT --model MODEL

On Spark, ship it with \`spark-submit --archives orchard-$VERSION-linux-x86_64.tar.gz#orchard\`:
every executor then has ./orchard/bin/orchard.
$( [ -n "$MODEL" ] && echo "A prepared MobileNetV2 is in share/orchard/model.ov: pass --model ./orchard/share/orchard/model.ov
(or the path where this archive is unpacked)." || echo "No model is bundled: pass --model (a prepared .ov, a TF-slim .npy folder or a Keras .h5, local or s3://)." )
EOF

# 6. The archive: top level bin/, lib/, share/, README, VERSION; written under a temporary name.
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner --sort=name -cf - README VERSION bin lib share |
  gzip -9 > "$ARCHIVE.tmp.$$"
rm -f "$STAMP"  # no stamp, no reuse: until the three files below agree
mv -f "$ARCHIVE.tmp.$$" "$ARCHIVE"
cp "$STAGE/share/orchard/abi.txt" "$REPORT"
printf '%s\n' "$KEY" > "$STAMP"
log "built in $(( $(date +%s) - T0 )) s"
finish
