#!/usr/bin/env bash
# `legion package --push` against `buildah bud` + `buildah push` of the
# equivalent Containerfile (FROM the same base, COPY the same model files,
# dependencies and server, the same ENV/USER/ENTRYPOINT), into the same kind
# of loopback registry (Debian's docker-registry), for a model of about
# 100 MB. The floor is `skopeo copy` of Legion's finished image into a fresh
# registry. Also: the wine model's image layer by layer, and its launch to
# ready under podman.
#
#   bash scripts/bench-package.sh      # after scripts/setup.sh
#
# ROUNDS (default 3) sets how many times each measurement is taken; the
# median is reported. Every round starts from a fresh registry that holds
# only the base image (in its own repository). Uploaded bytes are the growth
# of the registry's blob store, the same meter for every tool.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
legion="$CARGO_TARGET_DIR/release/legion"
ROUNDS="${ROUNDS:-3}"
work=$(mktemp -d /tmp/legion-bench-package.XXXXXX)
export LEGION_HOME="$work/home" LEGION_ENV_DIR="${LEGION_ENV_DIR:-/var/cache/legion/envs}"
podman=(podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs)
reg_pid=""
stop_registry() { [ -n "$reg_pid" ] && { kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; }; reg_pid=""; }
cleanup() {
  stop_registry
  "${podman[@]}" rm -f -t 0 legion-bench-wine >/dev/null 2>&1 || true
  buildah rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
base_layout="oci:$(bash scripts/base-image.sh)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# A fresh registry holding only the base, as base/python:3; sets $reg.
fresh_registry() {
  stop_registry
  rm -rf "$work/registry"
  mkdir -p "$work/registry"
  local port; port=$(free_port)
  reg="127.0.0.1:$port"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$work/registry/data" "$reg" > "$work/registry/config.yml"
  docker-registry serve "$work/registry/config.yml" >/dev/null 2>&1 & reg_pid=$!
  for _ in $(seq 1 600); do curl -sf -o /dev/null "http://$reg/v2/" && break; sleep 0.1; done
  skopeo copy --quiet --dest-tls-verify=false "$base_layout" "docker://$reg/base/python:3"
}
blob_bytes() { du -sb "$work/registry/data/docker/registry/v2/blobs" | cut -f1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "== a model of about 100 MB: iris plus 100 MiB of (seeded, incompressible) weights"
mkdir -p "$work/project"
cp examples/python-iris/requirements.txt "$work/project/"
cat > "$work/project/train.py" <<'PY'
import os, pickle, random
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True, as_frame=True)
x.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
out = os.path.join(os.environ["LEGION_OUTPUT_DIR"], "model")
os.makedirs(out)
pickle.dump(LogisticRegression(max_iter=500).fit(x, y), open(os.path.join(out, "model.pkl"), "wb"))
open(os.path.join(out, "weights.bin"), "wb").write(random.Random(0).randbytes(100 << 20))
PY
"$legion" train "$work/project" --toolchain python --name big >/dev/null
model_bytes=$("$legion" -o json models show big:1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifest"]["layers"][0]["size"])')
echo "model layer: $model_bytes bytes"

echo "== cold: the first packaging ever on this data dir (pip cross-installs the dependency layer)"
fresh_registry
t0=$(now); "$legion" package big:1 --base "$reg/base/python:3" --push "$reg/models/big:cold" >/dev/null 2>&1; t1=$(now)
cold=$(echo "$t1 - $t0" | bc)
echo "cold first packaging: ${cold}s"

# The Containerfile buildah builds: the same files from the same image.
"$legion" package big:1 --base "$base_layout" >/dev/null 2>&1
rm -rf "$work/bundle"
umoci unpack --image "$LEGION_HOME/images:big:1" "$work/bundle" >/dev/null
ctx="$work/context"
rm -rf "$ctx"; mkdir -p "$ctx"
for p in model legion-model.json opt; do cp -a "$work/bundle/rootfs/$p" "$ctx/"; done
containerfile() {  # $1: base, $2: workers
  cat <<EOF
FROM $1
COPY model /model
COPY legion-model.json /legion-model.json
COPY opt/legion/bin /opt/legion/bin
COPY opt/legion/python /opt/legion/python
ENV LEGION_MODEL_ROOT=/ LEGION_MODEL_NAME=big LEGION_MODEL_VERSION=1 LEGION_PYTHON=python3 LEGION_SERVE_HOST=0.0.0.0 PYTHONPATH=/opt/legion/python PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LEGION_SERVE_PORT=8080 LEGION_SERVE_MAX_BATCH_SIZE=256 LEGION_SERVE_MAX_BATCH_DELAY_MS=2 LEGION_SERVE_TIMEOUT_MS=30000
ENV LEGION_SERVE_WORKERS=$2
EXPOSE 8080
USER 1000:1000
WORKDIR /opt/legion
ENTRYPOINT ["/opt/legion/bin/legion-serve"]
EOF
}

declare -a L1 L2 LB2 LD B1 B2 BB2 BD F1
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r/$ROUNDS"
  # Legion: first packaging (dependency layer cached), then an argument change.
  fresh_registry
  b0=$(blob_bytes)
  t0=$(now); "$legion" -o json package big:1 --base "$reg/base/python:3" --push "$reg/models/big:1" > "$work/l1.json" 2>/dev/null; t1=$(now)
  L1+=("$(echo "$t1 - $t0" | bc)")
  b1=$(blob_bytes)
  t0=$(now); "$legion" -o json package big:1 --base "$reg/base/python:3" --push "$reg/models/big:2" --arg workers=2 > "$work/l2.json" 2>/dev/null; t1=$(now)
  L2+=("$(echo "$t1 - $t0" | bc)"); b2=$(blob_bytes); LB2+=("$((b2 - b1))")
  d1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"]["imageDigest"])' "$work/l1.json")
  "$legion" -o json package big:1 --base "$reg/base/python:3" --push "$reg/models/big:again" > "$work/l3.json" 2>/dev/null
  d3=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"]["imageDigest"])' "$work/l3.json")
  LD+=("$([ "$d1" = "$d3" ] && echo same || echo different)")
  echo "legion: first ${L1[-1]}s ($((b1 - b0)) bytes stored), repackage ${L2[-1]}s (${LB2[-1]} bytes stored), digests ${LD[-1]}"

  # Floor: the finished image's bytes uploaded by a plain client into a
  # fresh registry that holds only the base.
  fresh_registry
  t0=$(now); skopeo copy --quiet --dest-tls-verify=false "oci:$LEGION_HOME/images:big:1" "docker://$reg/models/big-floor:1"; t1=$(now)
  F1+=("$(echo "$t1 - $t0" | bc)")
  echo "floor (skopeo copy): ${F1[-1]}s"

  # buildah: build from the Containerfile and push, base already pulled.
  fresh_registry
  buildah rmi -a -f >/dev/null 2>&1 || true
  buildah pull --quiet --tls-verify=false "$reg/base/python:3" >/dev/null
  containerfile "$reg/base/python:3" 1 > "$ctx/Containerfile"
  b0=$(blob_bytes)
  t0=$(now)
  buildah bud --quiet --layers --tls-verify=false -f "$ctx/Containerfile" -t localhost/big:1 "$ctx" >/dev/null
  buildah push --quiet --tls-verify=false --digestfile "$work/b1.digest" localhost/big:1 "docker://$reg/models/big-buildah:1"
  t1=$(now)
  B1+=("$(echo "$t1 - $t0" | bc)"); b1=$(blob_bytes)
  containerfile "$reg/base/python:3" 2 > "$ctx/Containerfile"
  t0=$(now)
  buildah bud --quiet --layers --tls-verify=false -f "$ctx/Containerfile" -t localhost/big:2 "$ctx" >/dev/null
  buildah push --quiet --tls-verify=false localhost/big:2 "docker://$reg/models/big-buildah:2"
  t1=$(now)
  B2+=("$(echo "$t1 - $t0" | bc)"); b2=$(blob_bytes); BB2+=("$((b2 - b1))")
  # Same Containerfile again, rebuilt without the layer cache: same digest?
  containerfile "$reg/base/python:3" 1 > "$ctx/Containerfile"
  buildah bud --quiet --no-cache --tls-verify=false -f "$ctx/Containerfile" -t localhost/big:again "$ctx" >/dev/null
  buildah push --quiet --tls-verify=false --digestfile "$work/b3.digest" localhost/big:again "docker://$reg/models/big-buildah:again"
  BD+=("$([ "$(cat "$work/b1.digest")" = "$(cat "$work/b3.digest")" ] && echo same || echo different)")
  echo "buildah: first ${B1[-1]}s ($((b1 - b0)) bytes stored), repackage ${B2[-1]}s (${BB2[-1]} bytes stored), digests ${BD[-1]}"
done

m() { printf '%s\n' "$@" | median; }
l1=$(m "${L1[@]}"); l2=$(m "${L2[@]}"); b1=$(m "${B1[@]}"); b2=$(m "${B2[@]}"); f1=$(m "${F1[@]}")
echo
echo "== medians of $ROUNDS rounds (model layer $model_bytes bytes)"
printf '%-34s %10s %12s\n' "" "legion" "buildah"
printf '%-34s %9.2fs %11.2fs\n' "first packaging, pushed" "$l1" "$b1"
printf '%-34s %9.2fs %11.2fs\n' "repackage after an argument change" "$l2" "$b2"
printf '%-34s %10s %12s\n' "bytes stored by the repackage" "$(m "${LB2[@]}")" "$(m "${BB2[@]}")"
printf '%-34s %10s %12s\n' "digest of a rebuild" "${LD[0]}" "${BD[0]}"
printf 'floor (skopeo copy of the same image): %.2fs\n' "$f1"
echo "legion vs buildah: first $(echo "scale=1; $b1 / $l1" | bc)x faster, repackage $(echo "scale=1; $b2 / $l2" | bc)x faster; first vs floor: $(echo "scale=2; $l1 / $f1" | bc)x"
echo "repackage upload vs model: $(echo "scale=4; 100 * $(m "${LB2[@]}") / $model_bytes" | bc)% of the model's bytes"
echo "cold first packaging (pip included): ${cold}s"

echo
echo "== the wine model's image, layer by layer"
"$legion" train examples/mlflow-wine --toolchain mlflow --name wine >/dev/null
"$legion" -o json package wine:1 --base "$base_layout" > "$work/wine.json" 2>/dev/null
python3 - "$work/wine.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
extra = 0
for l in p["layers"]:
    print(f'{l["kind"]:16} {l["size"] / 2**20:9.2f} MiB  {l["digest"][:19]}')
    if l["kind"] not in ("base", "model", "python-packages"):
        extra += l["size"]
print(f'{"total":16} {sum(l["size"] for l in p["layers"]) / 2**20:9.2f} MiB (compressed)')
print(f'layers Legion adds besides the model and its dependencies: {extra / 2**20:.2f} MiB')
PY

echo "== launch to ready under podman (wine, $ROUNDS runs)"
skopeo copy --quiet "oci:$LEGION_HOME/images:wine:1" "containers-storage:localhost/legion-bench/wine:1"
declare -a R
for r in $(seq 1 "$ROUNDS"); do
  port=$(free_port)
  t0=$(now)
  "${podman[@]}" run -d --rm --name legion-bench-wine --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -e LEGION_SERVE_PORT="$port" localhost/legion-bench/wine:1 >/dev/null
  for _ in $(seq 1 6000); do curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break; sleep 0.05; done
  t1=$(now)
  R+=("$(echo "$t1 - $t0" | bc)")
  "${podman[@]}" rm -f -t 0 legion-bench-wine >/dev/null
done
echo "launch to ready: median $(m "${R[@]}")s (runs: ${R[*]})"
"${podman[@]}" rmi -f localhost/legion-bench/wine:1 >/dev/null 2>&1 || true
