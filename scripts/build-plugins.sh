#!/usr/bin/env bash
# Builds every wasm plugin in the workspace (built-in toolchains, the example,
# the test plugins) for wasm32-wasip2 and copies them to $TARGET/plugins/,
# where the `legion` binary and the tests look for them.
#
# `scripts/build-plugins.sh --clippy` lints each plugin instead of building it.
#
# Each plugin is built (and linted) by its own cargo invocation: legion-sdk's features pick
# the world a plugin exports, and building plugins together would unify those
# features across them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

plugins=(
  legion-toolchain-python
  legion-toolchain-mlflow
  legion-toolchain-docker-rest
  hello-toolchain
  legion-test-hostile
  legion-test-future-contract
  legion-test-noop
  legion-test-contract-v0-1
)
if [ "${1:-}" = "--clippy" ]; then
  for p in "${plugins[@]}"; do
    cargo clippy --quiet --profile wasm --target wasm32-wasip2 -p "$p" -- -D warnings
  done
  exit 0
fi

out="$CARGO_TARGET_DIR/plugins"
mkdir -p "$out"
for p in "${plugins[@]}"; do
  cargo build --quiet --profile wasm --target wasm32-wasip2 -p "$p"
  src="$CARGO_TARGET_DIR/wasm32-wasip2/wasm/${p//-/_}.wasm"
  # Built-in toolchains are installed under their short name (python.wasm, …).
  name="${p#legion-toolchain-}"; name="${name#legion-test-}"
  cp "$src" "$out/$name.wasm.tmp" && mv "$out/$name.wasm.tmp" "$out/$name.wasm"
done
echo "plugins in $out:"
ls -l "$out"
