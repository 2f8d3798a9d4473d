#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: the PERF.md workload of BuildKit's fixtures (a ~204 MB context
# and a ~95 MB RUN layer), each scenario as the median of RUNS runs, plus peak memory.
#
#   bench/run.sh            # as root (RUN steps need runc); RUNS=3 by default
#   RUNS=5 bench/run.sh
#
# Needs: a release build (done here), python3, GNU time, zstd and pigz (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)
FIX=${FIXTURES:-$ROOT_DIR/../shared/fixtures/buildkit}
RUNS=${RUNS:-3}
W=${BENCH_DIR:-/tmp/strata-bench}
BASE="base=oci-layout://$FIX/_base/busybox-oci@sha256:d470348f8348647975c19ab59157b2a1a2c4dcf4d41f32439c13973f97794273"

cargo build --release --locked -q
S=$ROOT_DIR/target/release/strata
mkdir -p "$W"
if [ ! -d "$W/context/data" ]; then
  python3 "$FIX/perf/gen-perf-context.py" "$W/context" >/dev/null
fi
cp "$FIX/perf/Dockerfile" "$W/context/Dockerfile"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# run LABEL CMD...: time a command, record wall seconds and peak RSS (KiB), keep its log.
run() {
  local label=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$W/time.$label" "$@" >"$W/log.$label" 2>&1 || { cat "$W/log.$label"; exit 1; }
  read -r secs kib <"$W/time.$label"
  echo "$secs" >>"$W/secs.$label"
  echo "$kib" >>"$W/rss.$label"
  # The export step's own time, from the plain progress line "#N DONE x.ys" of "exporting cache".
  awk '/exporting cache to/ {id=$1} id && $1==id && /DONE/ {sub("s","",$3); print $3; id=""}' "$W/log.$label" >>"$W/export.$label"
}
rm -f "$W"/secs.* "$W"/rss.* "$W"/export.*

B=("$S" build --progress plain --build-context "$BASE")
C=$W/context

for i in $(seq "$RUNS"); do
  rm -rf "$W/state" "$W/cache-gzip" "$W/cache-zstd" "$W/state-b" "$W/out.tar"
  STRATA_ROOT=$W/state-base run baseline "${B[@]}" --no-cache "$C"
  rm -rf "$W/state-base"
  STRATA_ROOT=$W/state run a-gzip "${B[@]}" --cache-to "type=local,dest=$W/cache-gzip,mode=max" "$C"
  STRATA_ROOT=$W/state run e-noop "${B[@]}" "$C"
  rm -rf "$W/state"
  STRATA_ROOT=$W/state run b-zstd "${B[@]}" --cache-to "type=local,dest=$W/cache-zstd,mode=max,compression=zstd" "$C"
  rm -rf "$W/state"
  STRATA_ROOT=$W/state-b run c-import "${B[@]}" --cache-from "type=local,src=$W/cache-gzip" "$C"
  rm -rf "$W/state-b"
  STRATA_ROOT=$W/state-b run c-import-zstd "${B[@]}" --cache-from "type=local,src=$W/cache-zstd" "$C"
  rm -rf "$W/state-b"
  STRATA_ROOT=$W/state-b run c-import-oci "${B[@]}" --cache-from "type=local,src=$W/cache-gzip" -o "type=oci,dest=$W/out.tar" "$C"
  rm -rf "$W/state-b"
done

# (f) verify and prune on a cache holding 10,000 blobs: the gzip cache plus 9,995 small
# unreferenced blobs (aged past prune's one-hour grace so prune removes them).
rm -rf "$W/big"
cp -a "$W/cache-gzip" "$W/big"
python3 - "$W/big" <<'PY'
import hashlib, os, sys, time
d = os.path.join(sys.argv[1], "blobs", "sha256")
old = time.time() - 7200
for i in range(9995):
    data = os.urandom(4096)
    p = os.path.join(d, hashlib.sha256(data).hexdigest())
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, 0o444)
    os.utime(p, (old, old))
PY
for i in $(seq "$RUNS"); do
  run f-verify "$S" cache verify --all "$W/big"
done
run f-prune "$S" cache prune "$W/big"

# The hardware reference: the same uncompressed context layer through zstd -T2 -3 and pigz -6.
tar -C "$W/context" -cf "$W/context.tar" data
for i in $(seq "$RUNS"); do
  run ref-zstd sh -c "zstd -q -T2 -3 -c '$W/context.tar' >/dev/null"
  run ref-pigz sh -c "pigz -6 -p 2 -c '$W/context.tar' >/dev/null"
done

printf '| scenario | median wall (s) | export step (s) | peak RSS (MiB) |\n|---|---|---|---|\n'
for l in baseline a-gzip b-zstd c-import c-import-zstd c-import-oci e-noop f-verify f-prune ref-zstd ref-pigz; do
  [ -f "$W/secs.$l" ] || continue
  s=$(median <"$W/secs.$l")
  e=$( [ -s "$W/export.$l" ] && median <"$W/export.$l" || echo "–")
  m=$(sort -n "$W/rss.$l" | tail -1)
  printf '| %s | %s | %s | %s |\n' "$l" "$s" "$e" "$((m / 1024))"
done
echo
echo "cache sizes (du -sb): gzip $(du -sb "$W/cache-gzip" | cut -f1), zstd $(du -sb "$W/cache-zstd" | cut -f1); context tar $(stat -c %s "$W/context.tar")"
