#!/usr/bin/env bash
# Longer versions of the reliability tests (crates/cli/tests/reliability_*.rs), for a
# release check or after touching crates/oci, crates/cache/src/gc.rs or the export path.
#
#   scripts/stress.sh [ROUNDS]        default 20 rounds
#
# Each round runs, against one cache directory:
#   - WRITERS (default 32) concurrent `strata build --cache-to` (separate STRATA_ROOTs,
#     own content, half on one shared tag) plus READERS (default 8) importers, plus
#     `strata cache prune` in a loop while they run;
#   - KILLS (default 200) SIGKILLs of an exporting build at random moments;
# and after each round checks `strata cache verify --all` and that every tag is there.
# Environment: WRITERS, READERS, KILLS, STRATA (binary; default target/release/strata).
# Exits non-zero on the first violation and leaves the work directory for inspection.
set -euo pipefail

ROUNDS=${1:-20}
WRITERS=${WRITERS:-32}
READERS=${READERS:-8}
KILLS=${KILLS:-200}
cd "$(dirname "$0")/.."
STRATA=${STRATA:-target/release/strata}
if [[ ! -x $STRATA ]]; then
  cargo build --release -p strata-cli
fi
STRATA=$(realpath "$STRATA")
WORK=$(mktemp -d /tmp/strata-stress.XXXXXX)
echo "work directory: $WORK"
CACHE=$WORK/cache

ctx() { # ctx DIR SEED BYTES
  mkdir -p "$1"
  printf 'FROM scratch\nCOPY big /big\nCOPY n /n\n' > "$1/Dockerfile"
  head -c "$3" /dev/urandom > "$1/big"
  echo "$2" > "$1/n"
}

fail() { echo "FAIL: $*" >&2; exit 1; }

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS: $WRITERS writers, $READERS readers, prune loop"
  pids=()
  for i in $(seq 1 "$WRITERS"); do
    ctx "$WORK/w$i" "$round-$i" $((RANDOM * 16))
    tag=$([[ $((i % 2)) == 0 ]] && echo shared || echo "t$i")
    STRATA_ROOT=$WORK/s$i "$STRATA" build --progress plain \
      --cache-to "type=local,dest=$CACHE,mode=max,tag=$tag" "$WORK/w$i" \
      > "$WORK/w$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 "$READERS"); do
    ctx "$WORK/r$i" "reader-$i" 1000
    STRATA_ROOT=$WORK/r$i.state "$STRATA" build --progress plain \
      --cache-from "type=local,src=$CACHE,tag=shared" "$WORK/r$i" > "$WORK/r$i.log" 2>&1 &
    pids+=($!)
  done
  ( while :; do "$STRATA" cache prune "$CACHE" > /dev/null 2>&1 || true; sleep 0.05; done ) &
  pruner=$!
  for p in "${pids[@]}"; do
    wait "$p" || fail "a build failed; logs in $WORK/*.log"
  done
  kill "$pruner"; wait "$pruner" 2>/dev/null || true
  "$STRATA" cache verify --all "$CACHE" > "$WORK/verify.log" || fail "verify: $WORK/verify.log"
  for i in $(seq 1 2 "$WRITERS"); do
    "$STRATA" cache ls --json "$CACHE" | grep -q "\"t$i\"" || fail "tag t$i lost"
  done

  echo "== round $round/$ROUNDS: $KILLS kills during export"
  for k in $(seq 1 "$KILLS"); do
    ctx "$WORK/k" "$round-$k" $((2 * 1024 * 1024))
    STRATA_ROOT=$WORK/ks "$STRATA" build --progress plain \
      --cache-to "type=local,dest=$CACHE,mode=max,tag=killed" "$WORK/k" > /dev/null 2>&1 &
    pid=$!
    sleep "0.0$((RANDOM % 100))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    "$STRATA" cache verify --all "$CACHE" > "$WORK/verify.log" \
      || fail "verify after kill $k: $WORK/verify.log"
  done
  STRATA_ROOT=$WORK/ks "$STRATA" build --progress plain "$WORK/k" > /dev/null 2>&1 \
    || fail "state directory unusable after the kills"
done
"$STRATA" cache prune "$CACHE"
"$STRATA" cache verify --all "$CACHE"
echo "OK: $ROUNDS rounds"
rm -rf "$WORK"
