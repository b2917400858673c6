#!/usr/bin/env bash
# The main job on the embedded default (local executor, SQLite, local OCI
# store): sets up, then trains examples/python-iris end to end in a fresh
# data dir, shows the run and the stored model, scores a CSV with it in a
# batch job, packages it into an OCI
# image (local image layout), runs the image with podman, and asks it for a
# prediction over the Open Inference Protocol.
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
echo "== batch inference: iris:1 scores a CSV (contract 0.2.0's batch interface, the python toolchain)"
batch_dir=$(mktemp -d)
printf 'sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n5.9,3.0,4.2,1.5\n' > "$batch_dir/rows.csv"
"$legion" batch iris:1 --data "$batch_dir/rows.csv" --output "$batch_dir/scored" --arg prediction-column=species
cat "$batch_dir/scored/rows.csv"
echo "== package iris:1 into an image: base = Debian's python3 (scripts/base-image.sh), kept in $LEGION_HOME/images"
base="oci:$(bash scripts/base-image.sh)"
"$legion" package iris:1 --base "$base"
"$legion" images ls
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman=(podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs)
if "${podman[@]}" info >/dev/null 2>&1; then
  echo "== run the image with podman and ask it for a prediction (Open Inference Protocol v2)"
  name="legion-demo-$$"
  # Into podman's store under a name of our own (podman would derive one
  # from the layout's path).
  skopeo copy --quiet "oci:$LEGION_HOME/images:iris:1" "containers-storage:localhost/legion-demo/iris:1"
  "${podman[@]}" run -d --rm --name "$name" --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -e LEGION_SERVE_PORT="$port" localhost/legion-demo/iris:1 >/dev/null
  trap '"${podman[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true' EXIT
  alive() { "${podman[@]}" container exists "$name"; }
else
  echo "== podman cannot run containers here: serving iris:1 with legion serve instead"
  "$legion" serve iris:1 --port "$port" & server=$!
  trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
  alive() { kill -0 "$server" 2>/dev/null; }
fi
for _ in $(seq 1 3000); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break
  alive || { echo "the server stopped" >&2; exit 1; }
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/v2/models/iris" > /dev/null
curl -sf -X POST "http://127.0.0.1:$port/v2/models/iris/infer" -H 'Content-Type: application/json' -d '{
  "inputs": [
    {"name": "sepal_length", "shape": [2], "datatype": "FP64", "data": [5.1, 6.7]},
    {"name": "sepal_width",  "shape": [2], "datatype": "FP64", "data": [3.5, 3.0]},
    {"name": "petal_length", "shape": [2], "datatype": "FP64", "data": [1.4, 5.2]},
    {"name": "petal_width",  "shape": [2], "datatype": "FP64", "data": [0.2, 2.3]}]}'
echo
