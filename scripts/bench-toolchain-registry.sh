#!/usr/bin/env bash
# Registering a toolchain from a registry, end to end: `legion toolchain add
# REGISTRY/REPO@sha256:…` as an admin runs it with a trust policy set
# (process start, database open, manifest and layer pulled with the digest
# checked, its signature found through the referrers tag schema and
# verified, compiled, `describe` in the sandbox, stored), on a warm local
# registry (Debian's
# docker-registry on 127.0.0.1). Each round removes the toolchain first, so
# every add pulls and compiles again.
#
#   bash scripts/bench-toolchain-registry.sh     # after scripts/setup.sh
#
# ROUNDS (default 15); TOOLCHAIN (default hello-toolchain, the example of
# docs/authoring.md). Prints the median, min and max in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
legion="$CARGO_TARGET_DIR/release/legion"
ROUNDS="${ROUNDS:-15}"
TOOLCHAIN="${TOOLCHAIN:-hello-toolchain}"
work=$(mktemp -d)
reg_pid=""
cleanup() {
  [ -n "$reg_pid" ] && { kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
reg_pid=$!
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done

export LEGION_HOME="$work/home"
digest=$("$legion" -o json toolchain push "$CARGO_TARGET_DIR/plugins/$TOOLCHAIN.wasm" "127.0.0.1:$port/toolchains/bench:1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["push"]["digest"])')
ref="127.0.0.1:$port/toolchains/bench@$digest"
"$legion" toolchain keygen "$work/bench" >/dev/null
"$legion" toolchain sign "$ref" --key "$work/bench.key" >/dev/null
"$legion" toolchain trust add "$work/bench.pub" >/dev/null
"$legion" toolchain add "$ref" --name bench >/dev/null 2>&1   # warms the registry and the data dir

times=()
for _ in $(seq 1 "$ROUNDS"); do
  "$legion" toolchain rm bench >/dev/null
  start=$(date +%s%N)
  "$legion" toolchain add "$ref" --name bench >/dev/null 2>&1
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
done
printf '%s\n' "${times[@]}" | sort -n | awk -v t="$TOOLCHAIN" '
  {v[NR]=$1} END {printf "%s from a registry, signature verified, %d rounds: median %d ms (min %d, max %d)\n", t, NR, v[int((NR+1)/2)], v[1], v[NR]}'
