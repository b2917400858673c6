#!/usr/bin/env bash
# The main job on the embedded default: sets up, then registers the example
# toolchain in a fresh data dir and asks it for a training plan.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
bash scripts/setup.sh
legion="$CARGO_TARGET_DIR/release/legion"
export LEGION_HOME="${LEGION_HOME:-$(mktemp -d)/legion}"
echo "== data dir: $LEGION_HOME"
echo "== built-in toolchains (registered on first use)"
"$legion" toolchain ls
echo "== register the example toolchain"
"$legion" toolchain add "$CARGO_TARGET_DIR/plugins/hello-toolchain.wasm" --config requirements=scikit-learn
echo "== plan a training of examples/hello-toolchain/demo"
"$legion" toolchain plan hello --request examples/hello-toolchain/demo/request.json --source examples/hello-toolchain/demo
