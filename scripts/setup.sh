#!/usr/bin/env bash
# Installs what Legion needs on a fresh Debian 12 machine and builds it:
# system packages (git, Python with venv, the OCI registry, skopeo and umoci
# that read images back, podman + runc that run them, debootstrap and
# buildah for the base image and the packaging benchmark, PostgreSQL for
# the API's tests, wrk for its benchmark), wkg (wasm-pkg-tools), the
# wasm32-wasip2 and x86_64-unknown-linux-musl Rust targets, the plugins,
# the release `legion` binary, the static `legion-serve`, and the Python
# base image the demo and the tests package onto (scripts/base-image.sh,
# cached). Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Debian packages: a command to look for, and the package that brings it.
need_apt=()
want() { command -v "$1" >/dev/null 2>&1 || need_apt+=("$2"); }
want cc build-essential
want pkg-config pkg-config
want git git
want python3 python3
want docker-registry docker-registry
want skopeo skopeo
want hyperfine hyperfine
want file file
want curl curl
want bc bc
want umoci umoci
want podman podman
want buildah buildah
want debootstrap debootstrap
# PostgreSQL: the API's shared store, started per test on 127.0.0.1.
want psql postgresql-client
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# The API's load benchmark (scripts/bench-api.sh).
want wrk wrk
[ -x /usr/sbin/runc ] || need_apt+=(runc)
# `python3 -m venv` needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

for t in wasm32-wasip2 x86_64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

# wkg (wasm-pkg-tools), the independent client the tests read pushed
# toolchains back with; built once into the cache, outside the clone.
WKG_ROOT="${WKG_ROOT:-/var/cache/legion/wkg}"
if [ ! -x "$WKG_ROOT/bin/wkg" ]; then
  echo "building wkg 0.16.1 into $WKG_ROOT (once)"
  CARGO_TARGET_DIR=/var/cache/legion/wkg-target cargo install wkg --version 0.16.1 --locked --root "$WKG_ROOT" --quiet
  rm -rf /var/cache/legion/wkg-target
fi

bash scripts/build-plugins.sh
cargo build --release -p legion
# The built-ins are signed by the build (trust policies hold them too).
bash scripts/sign-builtins.sh
# The model server on its own, statically linked: the entrypoint of images.
cargo build --profile static --target x86_64-unknown-linux-musl -p legion-serve
# The Python base image packaged models are built on (Debian's python3).
bash scripts/base-image.sh >/dev/null
echo "legion: $CARGO_TARGET_DIR/release/legion"
echo "legion-serve: $CARGO_TARGET_DIR/x86_64-unknown-linux-musl/static/legion-serve"
echo "base image: oci:$(bash scripts/base-image.sh)"
