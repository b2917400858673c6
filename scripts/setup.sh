#!/usr/bin/env bash
# Installs what Legion needs on a fresh Debian 12 machine and builds it:
# the wasm32-wasip2 Rust target, cargo-nextest, the plugins and the release
# `legion` binary. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
mkdir -p "$CARGO_TARGET_DIR"

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

bash scripts/build-plugins.sh
cargo build --release -p legion
echo "legion: $CARGO_TARGET_DIR/release/legion"
