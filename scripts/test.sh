#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs the whole test suite:
# formatting, clippy, and every test with real plugins built from the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
bash scripts/setup.sh
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The benchmarks compile as tests (one quick iteration each) so they cannot rot.
cargo nextest run --release --workspace --exclude legion-toolchain-python --exclude legion-toolchain-mlflow \
  --exclude legion-toolchain-docker-rest --exclude hello-toolchain --exclude legion-test-hostile \
  --exclude legion-test-future-contract --no-fail-fast
