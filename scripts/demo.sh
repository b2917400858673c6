#!/usr/bin/env bash
# The main job on the embedded default (local executor, SQLite, local OCI
# store): sets up, then trains examples/python-iris end to end in a fresh
# data dir and shows the run, its log and the stored model.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
bash scripts/setup.sh
legion="$CARGO_TARGET_DIR/release/legion"
export LEGION_HOME="${LEGION_HOME:-$(mktemp -d)/legion}"
# Python environments are cached beside the build, so a second demo is quick.
export LEGION_ENV_DIR="${LEGION_ENV_DIR:-/var/cache/legion/envs}"
echo "== data dir: $LEGION_HOME"
echo "== toolchains (built-ins are registered on first use)"
"$legion" toolchain ls
echo "== train examples/python-iris with the python toolchain"
"$legion" train examples/python-iris --toolchain python --name iris --version 1 -P C=0.5
echo "== runs"
"$legion" runs ls
echo "== models (an OCI image layout at $LEGION_HOME/models)"
"$legion" models ls
