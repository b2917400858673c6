#!/usr/bin/env bash
# Signs the built-in toolchains as the build made them: each
# $CARGO_TARGET_DIR/plugins/NAME.wasm gets NAME.wasm.sig (ed25519 over its
# sha256, `legion toolchain sign FILE`), and the build's public key goes
# beside them as legion-build.pub. An admin with a trust policy trusts that
# key (`legion toolchain trust add …/plugins/legion-build.pub`) to keep the
# built-ins; a release build would sign with the project's key instead.
#
# The key is made once per machine, outside the clone:
# $LEGION_BUILD_KEY (default /var/cache/legion/build-key/legion-build.key).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
legion="$CARGO_TARGET_DIR/release/legion"
plugins="$CARGO_TARGET_DIR/plugins"
key="${LEGION_BUILD_KEY:-/var/cache/legion/build-key/legion-build.key}"
# Key and signing touch no data directory: a throwaway one.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export LEGION_HOME="$home"
if [ ! -f "$key" ]; then
  mkdir -p "$(dirname "$key")"
  "$legion" toolchain keygen "${key%.key}" >/dev/null
fi
cp "${key%.key}.pub" "$plugins/legion-build.pub"
for p in python mlflow docker-rest; do
  "$legion" toolchain sign "$plugins/$p.wasm" --key "$key" >/dev/null
done
echo "built-ins signed with $(basename "$key") in $plugins"
