#!/usr/bin/env bash
# Legion's model server against `mlflow models serve --env-manager local -w 1`
# serving the very same MLflow model (examples/mlflow-wine: a 50-tree random
# forest on 11 columns), on the same machine, same endpoint and bodies
# (POST /invocations, dataframe_split). Servers run on core 0, the load
# generator (wrk) on core 1.
#
#   bash scripts/bench-serve.sh        # after scripts/setup.sh; installs wrk and full MLflow in a venv
#
# DURATION (default 10s) sets each wrk run's length.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
legion="$CARGO_TARGET_DIR/release/legion"
work=$(mktemp -d)
pids=()
tree() { echo "$1"; for c in $(pgrep -P "$1"); do tree "$c"; done; }
stop() { local t; t=$(tree "$1"); kill $t 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cleanup() { for p in "${pids[@]}"; do stop "$p"; done; rm -rf "$work"; }
trap cleanup EXIT
export LEGION_HOME="$work/home" LEGION_ENV_DIR="${LEGION_ENV_DIR:-/var/cache/legion/envs}"
DURATION="${DURATION:-10s}"

echo "== train the model"
"$legion" -o json train examples/mlflow-wine -t mlflow --name wine > "$work/run.json"
model_dir="$(python3 -c "import json,sys,glob; r=json.load(open(sys.argv[1])); print(glob.glob(r['workspace'] + '/output/mlruns/*/models/*/artifacts')[0])" "$work/run.json")"

# Full MLflow for `mlflow models serve`, pinned to what the model was logged with.
mlvenv=/var/cache/legion/bench-mlflow
if [ ! -x "$mlvenv/bin/mlflow" ]; then
  python3 -m venv "$mlvenv"
  "$mlvenv/bin/pip" install -q -r "$model_dir/requirements.txt"
fi

# Bodies: one row, and 100 rows, from the model's own input example.
python3 - "$model_dir" "$work" <<'PY'
import json, sys
ex = json.load(open(sys.argv[1] + "/input_example.json"))
row = ex["data"][0]
json.dump({"dataframe_split": {"columns": ex["columns"], "data": [row]}}, open(sys.argv[2] + "/one.json", "w"))
json.dump({"dataframe_split": {"columns": ex["columns"], "data": [ex["data"][i % len(ex["data"])] for i in range(100)]}}, open(sys.argv[2] + "/hundred.json", "w"))
PY
for b in one hundred; do
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = io.open("%s/%s.json"):read("*a")\n' "$work" "$b" > "$work/$b.lua"
done

echo "== the model's own predict, in process"
"$mlvenv/bin/python" - "$model_dir" <<'PY'
import json, sys, timeit
import pandas as pd, mlflow.pyfunc
d = sys.argv[1]
m = mlflow.pyfunc.load_model(d)
ex = json.load(open(d + "/input_example.json"))
one = pd.DataFrame([ex["data"][0]], columns=ex["columns"])
hundred = pd.DataFrame([ex["data"][i % len(ex["data"])] for i in range(100)], columns=ex["columns"])
for name, df in (("1 row", one), ("100 rows", hundred)):
    n = 200
    t = timeit.timeit(lambda: m.predict(df), number=n) / n
    print(f"predict {name}: {t * 1000:.2f} ms")
PY

wait_ready() { # url, pid -> seconds from $2's launch time in $3
  local url=$1 start=$2
  for _ in $(seq 1 6000); do
    if curl -sf -o /dev/null "$url"; then
      python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$start"; return 0
    fi
    sleep 0.01
  done
  echo "never ready: $url" >&2; return 1
}

rss_mb() { # total RSS of a process tree in MiB
  ps -o rss= -p "$(tree "$1" | paste -sd,)" | awk '{s+=$1} END {printf "%.0f", s/1024}'
}

load() { # name url
  local name=$1 url=$2 pid=$3
  for spec in "1 one c1" "16 one c16" "4 hundred batch"; do
    set -- $spec
    taskset -c 1 wrk -t1 -c"$1" -d"$DURATION" --latency -s "$work/$2.lua" "$url" > "$work/$name-$3.txt" &
    local w=$!
    sleep 3; rss=$(rss_mb "$pid"); wait $w
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name-$3.txt")
    p50=$(awk '/ 50%/ {print $2}' "$work/$name-$3.txt")
    p99=$(awk '/ 99%/ {print $2}' "$work/$name-$3.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/$name-$3.txt")
    echo "$name $3 rps=$rps p50=$p50 p99=$p99 rss_mb=$rss non2xx=${non2xx:-0}"
  done
}

echo "== legion serve (1 worker)"
# A first start builds the serving environment; the measured start reuses it.
"$legion" serve wine:1 --port 18500 > "$work/legion-warm.log" 2>&1 & p=$!; pids+=($p)
wait_ready http://127.0.0.1:18500/v2/health/ready "$(date +%s.%N)" > /dev/null; stop $p
start=$(date +%s.%N)
taskset -c 0 "$legion" serve wine:1 --port 18501 --workers 1 > "$work/legion.log" 2>&1 & p=$!; pids+=($p)
echo "legion ready_s=$(wait_ready http://127.0.0.1:18501/v2/health/ready "$start")"
load legion http://127.0.0.1:18501/invocations $p
stop $p

echo "== mlflow models serve -w 1"
curl -sf -o /dev/null http://127.0.0.1:18502/ping && { echo "port 18502 is taken by another server" >&2; exit 1; }
start=$(date +%s.%N)
(cd "$work" && PATH="$mlvenv/bin:$PATH" MLFLOW_ALLOW_FILE_STORE=true taskset -c 0 "$mlvenv/bin/mlflow" models serve -m "$model_dir" --env-manager local -w 1 -h 127.0.0.1 -p 18502 > "$work/mlflow.log" 2>&1) & p=$!; pids+=($p)
echo "mlflow ready_s=$(wait_ready http://127.0.0.1:18502/ping "$start")"
load mlflow http://127.0.0.1:18502/invocations "$p"
stop $p
