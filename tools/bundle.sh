#!/usr/bin/env bash
# Builds the self-contained worker archive dist/orchard-VERSION-linux-x86_64.tar.gz that Spark ships
# with `--archives orchard-VERSION-linux-x86_64.tar.gz#orchard` (see --help). Only glibc comes from
# the host: every other shared library in build/orchard's closure is copied into lib/ and found
# through an $ORIGIN-relative DT_RPATH. The script reports the highest GLIBC symbol version the
# bundle requires and fails when it is above 2.34 (Amazon Linux 2023, the base of EMR 7).
set -euo pipefail

GLIBC_LIMIT=2.34
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/tools/bundle.sh"

usage() {
  cat <<EOF
Usage: tools/bundle.sh [--model WEIGHTS_OR_PT] [--out DIR] [--allow-glibc-above-2.34] [--check] [--force]

Builds DIR/orchard-VERSION-linux-x86_64.tar.gz (VERSION from \`orchard --version\`) and prints its
path as the last line. Its top level is what Spark's \`--archives X.tar.gz#orchard\` unpacks into
./orchard on every executor:

  bin/orchard                 the binary, DT_RPATH \$ORIGIN/../lib
  lib/*.so*                   every shared library it needs except glibc's own (DT_RPATH \$ORIGIN)
  share/orchard/model.pt      only with --model: a prepared model (use --model ./orchard/share/orchard/model.pt)
  share/orchard/glibc.txt     the GLIBC symbol versions each file requires
  README, VERSION

Options:
  --model WEIGHTS_OR_PT       bundle a prepared model: a .pt is copied as is; a TF-slim .npy folder
                              or a Keras .h5 file is prepared with \`orchard prepare-model --out\`
  --out DIR                   where the archive goes (default: dist/ in the repository)
  --allow-glibc-above-2.34    build even when the bundle needs a GLIBC newer than 2.34 (it then will
                              not start on Amazon Linux 2023 / EMR 7; fine for local Spark tests)
  --check                     resolve, stage and scan only: report the GLIBC requirement, apply the
                              gate, write no archive
  --force                     rebuild even when the archive is up to date
  -h, --help                  this help

The binary is \$ORCHARD_BUILD/orchard, else build/orchard. An archive newer than the binary and
this script, built with the same --model, is reused (the GLIBC gate is still applied).
Needs ldd, objdump, readelf, patchelf (Debian package \`patchelf\`; installed with apt-get when
missing and running as root), tar and gzip.
Exit status: 0 built (or up to date); 1 the GLIBC gate failed or something else went wrong.
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
    --allow-glibc-above-2.34) ALLOW=1; shift ;;
    --check) CHECK=1; shift ;;
    --force) FORCE=1; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

BIN="${ORCHARD_BUILD:-$REPO/build}/orchard"
[ -x "$BIN" ] || die "$BIN: no orchard binary (build it: cmake --build build, or ./setup.sh)"
BIN=$(readlink -f "$BIN")
[ "$(uname -m)" = x86_64 ] || die "only linux-x86_64 bundles are supported (this is $(uname -m))"
for t in ldd objdump readelf tar gzip flock sort; do
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
REPORT="$OUT/$NAME.glibc.txt"   # sidecar: the scan of the archive's content
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
# The highest version in a report (below), or "none".
report_max() {
  awk "$AWK_VCMP"'$1 ~ /^GLIBC_/ { v = $1; sub(/^GLIBC_/, "", v); if (m == "" || vcmp(v, m) > 0) m = v }
                  END { print (m == "" ? "none" : "GLIBC_" m) }' "$1"
}

# Applies the gate to a report (lines: "GLIBC_x.y FILE [symbol@GLIBC_v ...]"); returns 1 when it fails.
gate() {
  local report=$1 max
  max=$(report_max "$report")
  echo "GLIBC: highest version required by the bundle: $max (limit GLIBC_$GLIBC_LIMIT: Amazon Linux 2023 / EMR 7)"
  if [ "$max" = none ] || awk -v v="${max#GLIBC_}" -v limit="$GLIBC_LIMIT" "$AWK_VCMP"'BEGIN { exit vcmp(v, limit) > 0 }'; then
    echo "GLIBC: OK, every file in the bundle runs with glibc $GLIBC_LIMIT"
    return 0
  fi
  local lines
  lines=$(awk -v limit="$GLIBC_LIMIT" "$AWK_VCMP"'
    $1 ~ /^GLIBC_/ { v = $1; sub(/^GLIBC_/, "", v); if (vcmp(v, limit) > 0) {
      out = "  " $2 " requires " $1 ":"; for (i = 3; i <= NF; i++) out = out " " $i; print out } }' "$report")
  if [ "$ALLOW" = 1 ]; then
    cat >&2 <<EOF
################################################################################
WARNING: this bundle requires $max > GLIBC_$GLIBC_LIMIT. It will NOT start on Amazon Linux 2023
(EMR 7) or any host whose glibc is older than ${max#GLIBC_}: built anyway because of
--allow-glibc-above-2.34 (good for local Spark tests only). Files above the limit:
$lines
################################################################################
EOF
    return 0
  fi
  cat >&2 <<EOF
bundle.sh: error: the bundle requires $max, above the GLIBC_$GLIBC_LIMIT of Amazon Linux 2023 (EMR 7).
Files above the limit (symbol@version they import):
$lines
Build on a system with glibc <= $GLIBC_LIMIT (or with libraries built for one), or pass
--allow-glibc-above-2.34 for a bundle meant only for hosts with a newer glibc.
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
#    glibc's own libraries stay on the host: they are the one thing the target must provide.
is_glibc() {
  case "$1" in
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
  is_glibc "$soname" && continue
  cp -L "$path" "$STAGE/lib/$soname"
  chmod u+w,a+r "$STAGE/lib/$soname"
  n=$((n + 1))
done <<<"$LDD"
[ "$n" -gt 0 ] || die "ldd found no library to bundle (unexpected)"
log "copied $n libraries ($(( $(date +%s) - T0 )) s)"
cp "$BIN" "$STAGE/bin/orchard"
chmod 755 "$STAGE/bin/orchard"

# 2. Debug info, where a file has any. Today none has: Debian's libraries are stripped and the
#    pyarrow wheel's and orchard keep only symbol tables (dropping those too, --strip-unneeded,
#    saves 15 MiB of 602 unpacked and 3 MiB of 215 compressed: not worth altering the wheel's files).
for f in "$STAGE/bin/orchard" "$STAGE"/lib/*; do
  if readelf -S -W "$f" 2>/dev/null | grep -q ' \.debug_'; then strip --strip-debug "$f"; fi
done

# 3. Search paths. DT_RPATH rather than DT_RUNPATH: it applies before LD_LIBRARY_PATH (Hadoop and
#    EMR set one for executors) and also to dlopen() calls made by libraries that have none.
#    Every library gets $ORIGIN, replacing any path of its own (the wheel's $ORIGIN, openblas').
patchelf --set-rpath '$ORIGIN/../lib' --force-rpath "$STAGE/bin/orchard"
for f in "$STAGE"/lib/*; do
  patchelf --set-rpath '$ORIGIN' --force-rpath "$f"
done

log "set DT_RPATH on bin/orchard and lib/* ($(( $(date +%s) - T0 )) s)"

# 4. The GLIBC scan: the versions of the glibc symbols each file imports (undefined symbols in
#    objdump -T), one line per file: "MAX_VERSION FILE [symbol@version above the limit ...]".
( cd "$STAGE" && objdump -T bin/orchard lib/* ) | awk -v limit="$GLIBC_LIMIT" "$AWK_VCMP"'
  function flush(  k, s) {
    if (file == "") return
    s = ""; for (k in over) s = s " " k
    print (max == "" ? "none" : "GLIBC_" max), file s
    max = ""; split("", over)
  }
  /:[ \t]+file format / { flush(); file = $1; sub(/:$/, "", file); next }
  /\*UND\*/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^\(?GLIBC_[0-9]+(\.[0-9]+)+\)?$/) {
      v = $i; gsub(/[()]|GLIBC_/, "", v)
      if (max == "" || vcmp(v, max) > 0) max = v
      if (vcmp(v, limit) > 0) over[$NF "@GLIBC_" v] = 1
    }
  }
  END { flush() }' > "$STAGE/glibc.tmp"
{ grep '^GLIBC_' "$STAGE/glibc.tmp" | sort -k1,1Vr -k2,2 || true; grep -v '^GLIBC_' "$STAGE/glibc.tmp" | sort -k2,2 || true; } \
  > "$STAGE/share/orchard/glibc.txt"
rm -f "$STAGE/glibc.tmp"
[ "$(wc -l < "$STAGE/share/orchard/glibc.txt")" = $((n + 1)) ] || die "GLIBC scan: expected $((n + 1)) files, got $(wc -l < "$STAGE/share/orchard/glibc.txt")"
log "staged $n libraries in $(( $(date +%s) - T0 )) s"

if [ "$CHECK" = 1 ]; then
  gate "$STAGE/share/orchard/glibc.txt" || exit 1
  log "--check: no archive written"
  exit 0
fi
gate "$STAGE/share/orchard/glibc.txt" || exit 1

# 5. The model, README and VERSION.
if [ -n "$MODEL" ]; then
  case "$MODEL" in
    *.pt) cp "$MODEL" "$STAGE/share/orchard/model.pt" ;;
    *)
      log "preparing the model from $MODEL"
      cache=$(mktemp -d)
      ORCHARD_CACHE="$cache" "$BIN" prepare-model "$MODEL" --out "$STAGE/share/orchard/model.pt" >/dev/null ||
        { rm -rf "$cache"; die "orchard prepare-model $MODEL failed"; }
      rm -rf "$cache" ;;
  esac
fi
echo "$VERSION" > "$STAGE/VERSION"
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD 2>/dev/null || commit="$commit+local changes"
max=$(report_max "$STAGE/share/orchard/glibc.txt")
cat > "$STAGE/README" <<EOF
Orchard $VERSION for linux-x86_64 (built from commit $commit on $(. /etc/os-release && echo "$PRETTY_NAME"))

Self-contained: bin/orchard loads every library it needs from lib/ (DT_RPATH \$ORIGIN/../lib);
only glibc comes from the host, whose glibc must provide $max or newer (share/orchard/glibc.txt
lists, per file, the newest GLIBC symbol version it imports and its symbols above GLIBC_$GLIBC_LIMIT).
It runs from any directory, with any or no environment.

  ./bin/orchard --help
  ./bin/orchard run INPUT OUTPUT --model MODEL

On Spark, ship it with \`spark-submit --archives orchard-$VERSION-linux-x86_64.tar.gz#orchard\`:
every executor then has ./orchard/bin/orchard.
$( [ -n "$MODEL" ] && echo "A prepared MobileNetV2 is in share/orchard/model.pt: pass --model ./orchard/share/orchard/model.pt
(or the path where this archive is unpacked)." || echo "No model is bundled: pass --model (a prepared .pt, a TF-slim .npy folder or a Keras .h5, local or s3://)." )
EOF

# 6. The archive: top level bin/, lib/, share/, README, VERSION; written under a temporary name.
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner --sort=name -cf - README VERSION bin lib share |
  gzip -6 > "$ARCHIVE.tmp.$$"
rm -f "$STAMP"  # no stamp, no reuse: until the three files below agree
mv -f "$ARCHIVE.tmp.$$" "$ARCHIVE"
cp "$STAGE/share/orchard/glibc.txt" "$REPORT"
printf '%s\n' "$KEY" > "$STAMP"
log "built in $(( $(date +%s) - T0 )) s"
finish
