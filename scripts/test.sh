#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit and end-to-end test.
# Tests that need root or runc say "skipped: …" when they cannot run; as root (CI) they run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
