#!/usr/bin/env bash
# Builds the `legion` platform image — the operator, and the pods' own
# phases (legion step fetch|collect|package) — with Legion's own image
# builder (`legion images build`): the static `legion` and `legion-serve`
# binaries and the built-in toolchains, as one deterministic layer on a
# Debian bookworm base with python3, pip, git and CA certificates
# (scripts/base-image.sh platform). It runs as uid 1000, never root.
#
#   scripts/platform-image.sh --push REGISTRY/REPO[:TAG]   push it
#   scripts/platform-image.sh --tag NAME[:TAG]             keep it in the
#                          image store of LEGION_HOME (default ~/.legion);
#                          `legion images ls` names it as oci:DIR:NAME
#   scripts/platform-image.sh --stage DIR                  only stage the
#                          files where the Containerfile expects them
#                          (buildah bud -f Containerfile DIR)
#
# Prints the image's reference. The same sources give the same digest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
mode="${1:-}"
dest="${2:-}"
case "$mode" in
  --push|--tag|--stage) [ -n "$dest" ] || { echo "usage: $0 --push REF | --tag NAME | --stage DIR" >&2; exit 2; } ;;
  *) echo "usage: $0 --push REF | --tag NAME | --stage DIR" >&2; exit 2 ;;
esac
# LEGION_PLATFORM_PREBUILT=1 uses what an earlier run built (the tests do:
# scripts/test.sh builds first, and no test runs cargo).
if [ "${LEGION_PLATFORM_PREBUILT:-}" != 1 ]; then
  # The static legion links C (SQLite, the TLS providers): musl's gcc.
  command -v musl-gcc >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
  }
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
  bash scripts/build-plugins.sh >&2
  cargo build --quiet --release -p legion
  bash scripts/sign-builtins.sh >&2
  # One package a build: together, their features would unify and change
  # the legion-serve that scripts/setup.sh builds alone (a rebuild each time).
  cargo build --quiet --profile static --target x86_64-unknown-linux-musl -p legion-serve
  cargo build --quiet --profile static --target x86_64-unknown-linux-musl -p legion
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
static="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/static"
stage="$CARGO_TARGET_DIR/platform-stage"
[ "$mode" = --stage ] && stage="$dest"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/plugins"
cp "$static/legion" "$static/legion-serve" "$stage/bin/"
for p in python mlflow docker-rest; do
  cp "$CARGO_TARGET_DIR/plugins/$p.wasm" "$CARGO_TARGET_DIR/plugins/$p.wasm.sig" "$stage/plugins/"
done
cp "$CARGO_TARGET_DIR/plugins/legion-build.pub" "$stage/plugins/"
if [ "$mode" = --stage ]; then
  echo "$stage"
  exit 0
fi

base=$(bash scripts/base-image.sh platform)
target=(--tag "$dest")
[ "$mode" = --push ] && target=(--push "$dest")
"$CARGO_TARGET_DIR/release/legion" images build --base "oci:$base" \
  --add "$stage/bin/legion=/usr/local/bin/legion" \
  --add "$stage/bin/legion-serve=/usr/local/bin/legion-serve" \
  --add "$stage/plugins=/usr/local/lib/legion/plugins" \
  --env LEGION_PLUGIN_DIR=/usr/local/lib/legion/plugins \
  --env LEGION_SERVE_BIN=/usr/local/bin/legion-serve \
  --env LEGION_HOME=/tmp/legion \
  --env HOME=/tmp \
  --user 1000:1000 \
  --workdir /tmp \
  --entrypoint legion \
  --cmd=--help \
  --label org.opencontainers.image.title=legion \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.source=https://github.com/legion-platform/legion \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "${target[@]}" -o json
