#!/usr/bin/env bash
# Legion's model server against `mlflow models serve --env-manager local -w 1`
# and Seldon MLServer (mlserver + mlserver-mlflow 1.7.1, adaptive batching,
# its fastest single-process setting), all serving the very same MLflow model
# (examples/mlflow-wine: a 50-tree random forest on 11 columns), on the same
# machine, in one run. Servers run on core 0, the load generator (wrk) on
# core 1. Bodies: MLflow's dataframe_split on /invocations for Legion and
# MLflow; Open Inference Protocol v2 (one FP64 tensor per column, MLServer's
# pandas codec) on /v2/models/wine/infer for Legion and MLServer.
#
#   bash scripts/bench-serve.sh        # after scripts/setup.sh; installs wrk,
#                                      # full MLflow and MLServer in venvs
#
# DURATION (default 10s) sets each wrk run's length; ROUNDS (default 3) how
# many times each is run (the median is reported).
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
# MLServer with its MLflow runtime, beside the model's own requirements;
# uvloop 0.21.0 because later ones break it (SeldonIO/MLServer#2286).
msvenv=/var/cache/legion/bench-mlserver
if [ ! -x "$msvenv/bin/mlserver" ]; then
  python3 -m venv "$msvenv"
  "$msvenv/bin/pip" install -q -r "$model_dir/requirements.txt" mlserver==1.7.1 mlserver-mlflow==1.7.1 uvloop==0.21.0
fi

# Bodies: one row, and 100 rows, from the model's own input example, in
# both dialects.
python3 - "$model_dir" "$work" <<'PY'
import json, sys
ex = json.load(open(sys.argv[1] + "/input_example.json"))
cols = ex["columns"]
def rows(n):
    return [ex["data"][i % len(ex["data"])] for i in range(n)]
def split(n):
    return {"dataframe_split": {"columns": cols, "data": rows(n)}}
def v2(n):
    r = rows(n)
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": c, "shape": [n], "datatype": "FP64", "data": [row[i] for row in r]}
                       for i, c in enumerate(cols)]}
for name, n in (("one", 1), ("hundred", 100)):
    json.dump(split(n), open(f"{sys.argv[2]}/{name}.json", "w"))
    json.dump(v2(n), open(f"{sys.argv[2]}/{name}-v2.json", "w"))
PY
for b in one hundred one-v2 hundred-v2; do
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = io.open("%s/%s.json"):read("*a")\n' "$work" "$b" > "$work/$b.lua"
done

echo "== the model's own predict, in process on core 0 (the ceiling)"
# The loading path Legion's worker takes for this model (the sklearn fast
# path: skops, predict on a float array), at the batch sizes servers form.
(taskset -c 0 "$mlvenv/bin/python" - "$model_dir" <<'PY'
import json, sys, timeit, warnings, yaml
import numpy as np, pandas as pd, mlflow.pyfunc
d = sys.argv[1]
meta = yaml.safe_load(open(d + "/MLmodel"))
sk = meta["flavors"]["sklearn"]
import skops.io
model = skops.io.load(d + "/" + sk["pickled_model"], trusted=sk.get("skops_trusted_types") or [])
pyfunc = mlflow.pyfunc.load_model(d)
ex = json.load(open(d + "/input_example.json"))
warnings.simplefilter("ignore")
for n in (1, 4, 8, 16, 100, 200, 400):
    X = np.array([ex["data"][i % len(ex["data"])] for i in range(n)], dtype=np.float64)
    df = pd.DataFrame(X, columns=ex["columns"])
    k = 200 if n < 100 else 50
    t = timeit.timeit(lambda: model.predict(X), number=k) / k
    tp = timeit.timeit(lambda: pyfunc.predict(df), number=k) / k
    print(f"predict rows={n} array_ms={t * 1000:.3f} pyfunc_ms={tp * 1000:.3f} ceiling_rows_s={n / t:.0f}")
PY
) | tee "$work/ceiling.txt"

wait_ready() { # url, launch time -> seconds from launch to the first 200
  local url=$1 start=$2
  for _ in $(seq 1 6000); do
    if curl -sf -o /dev/null "$url"; then
      python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$start"; return 0
    fi
    sleep 0.01
  done
  echo "never ready: $url" >&2; return 1
}

READY_RUNS="${READY_RUNS:-3}"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# launch NAME READY_URL CMD...: starts CMD READY_RUNS times (the last one
# stays up, as $p), timing launch to its first 200 on READY_URL; prints
# the median.
launch() {
  local name=$1 url=$2; shift 2
  local times=() i start
  for i in $(seq 1 "$READY_RUNS"); do
    start=$(date +%s.%N)
    "$@" > "$work/$name.log" 2>&1 & p=$!; pids+=($p)
    times+=("$(wait_ready "$url" "$start")")
    if [ "$i" -lt "$READY_RUNS" ]; then
      stop $p
      # A server's own children (gunicorn's) may outlive it for a moment:
      # the next launch must not be timed against the old one.
      for _ in $(seq 1 1000); do curl -s -o /dev/null "$url" || break; sleep 0.01; done
    fi
  done
  echo "$name ready_s=$(median "${times[@]}") (launches: ${times[*]})"
}

rss_mb() { # total RSS of a process tree in MiB
  ps -o rss= -p "$(tree "$1" | paste -sd,)" | awk '{s+=$1} END {printf "%.0f", s/1024}'
}

batch_stats() { # sum and count of rows per predict call, from Legion's metrics
  curl -s "$1/metrics" | awk '/^legion_batch_rows_sum/ {s=$2} /^legion_batch_rows_count/ {c=$2} END {print s+0, c+0}'
}

# load PID: for each scenario (c=1 and c=16 one-row requests, c=4 100-row
# requests), runs wrk against each of "${targets[@]}" in turn, ROUNDS times
# over (default 3), and prints each figure's median: targets on one server
# are measured side by side, and this machine's drift from minute to minute
# does not decide a comparison. A target is NAME=URL=SUFFIX (SUFFIX picks
# the bodies: "" or "-v2").
ROUNDS="${ROUNDS:-3}"
load() {
  local pid=$1 spec round target
  : > "$work/results.txt"
  for round in $(seq 1 "$ROUNDS"); do
    for spec in "1 one c1" "16 one c16" "4 hundred batch"; do
      set -- $spec
      local c=$1 body=$2 scen=$3
      for target in "${targets[@]}"; do
        IFS== read -r name url sfx <<< "$target"
        local base=${url%%/v2/*}; base=${base%/invocations}
        local before; before=$(batch_stats "$base")
        taskset -c 1 wrk -t1 -c"$c" -d"$DURATION" --latency -s "$work/$body$sfx.lua" "$url" > "$work/wrk.txt" &
        local w=$!
        sleep 3; rss=$(rss_mb "$pid"); wait $w
        rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
        p50=$(awk '/ 50%/ {print $2}' "$work/wrk.txt")
        p99=$(awk '/ 99%/ {print $2}' "$work/wrk.txt")
        non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt")
        rows=$(echo "$before $(batch_stats "$base")" | awk '{ if ($4 > $2) printf "%.1f", ($3-$1)/($4-$2); else print "-" }')
        echo "$name $scen $rps $p50 $p99 $rss ${non2xx:-0} $rows" >> "$work/results.txt"
      done
    done
  done
  python3 - "$work/results.txt" "$work/ceiling.txt" <<'PY'
import sys, statistics
def ms(t):  # wrk prints 812.00us, 3.24ms or 1.02s
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    return float(t)
runs = {}
for line in open(sys.argv[1]):
    name, scen, rps, p50, p99, rss, non2xx, rows = line.split()
    runs.setdefault((name, scen), []).append(line.split())
# The model's own predict time by rows, to place a server's throughput
# against the ceiling of one core: rows_per_predict / predict_time.
cost = sorted((int(l.split()[1].split("=")[1]), float(l.split()[2].split("=")[1]))
              for l in open(sys.argv[2]) if l.startswith("predict rows="))
def predict_ms(rows):
    for (r0, t0), (r1, t1) in zip(cost, cost[1:]):
        if rows <= r1:
            return t0 + (t1 - t0) * (max(rows, r0) - r0) / (r1 - r0)
    return cost[-1][1] * rows / cost[-1][0]
for (name, scen), rs in runs.items():
    med = lambda i, f=float: statistics.median(f(r[i]) for r in rs)
    rows = [float(r[7]) for r in rs if r[7] != "-"]
    per_predict = statistics.median(rows) if rows else None
    of_ceiling = ""
    if per_predict:
        rows_s = med(2) * (100 if scen == "batch" else 1)
        ceiling = per_predict / predict_ms(per_predict) * 1000
        of_ceiling = f" of_ceiling={rows_s / ceiling:.0%}"
    print(f"{name} {scen} rps={med(2):.1f} p50={med(3, ms):.2f}ms p99={med(4, ms):.2f}ms "
          f"rss_mb={med(5):.0f} non2xx={sum(int(r[6]) for r in rs)} "
          f"rows_per_predict={per_predict or '-'}{of_ceiling} "
          f"(median of {len(rs)}; rps {min(float(r[2]) for r in rs):.0f}-{max(float(r[2]) for r in rs):.0f})")
PY
}

echo "== legion serve (1 worker)"
# A first start builds the serving environment; the measured start reuses it.
"$legion" serve wine:1 --port 18500 > "$work/legion-warm.log" 2>&1 & p=$!; pids+=($p)
wait_ready http://127.0.0.1:18500/v2/health/ready "$(date +%s.%N)" > /dev/null; stop $p
launch legion http://127.0.0.1:18501/v2/health/ready taskset -c 0 "$legion" serve wine:1 --port 18501 --workers 1
targets=("legion=http://127.0.0.1:18501/invocations=" "legion-v2=http://127.0.0.1:18501/v2/models/wine/infer=-v2")
load $p
stop $p

echo "== legion-serve, the static binary, on the same model folder"
root="$LEGION_HOME/serving/$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['modelDigest'].split(':')[1])" "$work/run.json")"
python="$(awk '/python environment/ {for (i=1;i<=NF;i++) if ($i=="environment") {print $(i+1); exit}}' "$root.env.log")/bin/python"
launch legion-serve http://127.0.0.1:18504/v2/health/ready taskset -c 0 "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/static/legion-serve" "$root" --python "$python" --port 18504
targets=("legion-serve-v2=http://127.0.0.1:18504/v2/models/wine/infer=-v2")
load $p
stop $p

echo "== the model alone in the worker's environment, on core 0"
# Each in a fresh process: loading through skops and from the load cache
# `legion serve` keeps, and the memory of a process that holds only the
# model and has predicted once: the floor under any Python worker's RSS.
for how in skops cache; do
  taskset -c 0 "$python" - "$root" "$how" <<'PY'
import sys, time, resource, warnings
warnings.simplefilter("ignore")  # predict on a bare array: no feature names
t = time.time()
import numpy as np
root, how = sys.argv[1], sys.argv[2]
if how == "cache":
    import pickle
    model = pickle.load(open(root + "/cache/sklearn.pkl", "rb"))
else:
    import yaml, skops.io
    sk = yaml.safe_load(open(root + "/model/MLmodel"))["flavors"]["sklearn"]
    model = skops.io.load(root + "/model/" + sk["pickled_model"], trusted=sk.get("skops_trusted_types") or [])
loaded = time.time() - t
model.predict(np.ones((1, model.n_features_in_)))
print(f"model alone via {how}: load_s={loaded:.2f} rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
PY
done

echo "== mlflow models serve -w 1"
curl -sf -o /dev/null http://127.0.0.1:18502/ping && { echo "port 18502 is taken by another server" >&2; exit 1; }
mlflow_serve() {
  cd "$work" && PATH="$mlvenv/bin:$PATH" MLFLOW_ALLOW_FILE_STORE=true exec taskset -c 0 "$mlvenv/bin/mlflow" models serve -m "$model_dir" --env-manager local -w 1 -h 127.0.0.1 -p 18502
}
launch mlflow http://127.0.0.1:18502/ping mlflow_serve
targets=("mlflow=http://127.0.0.1:18502/invocations=")
load "$p"
stop $p

echo "== mlserver start (mlserver-mlflow, adaptive batching, parallel_workers 0)"
msdir="$work/mlserver"; mkdir -p "$msdir/wine"
cat > "$msdir/settings.json" <<JSON
{"http_port": 18503, "grpc_port": 18513, "metrics_port": 18523, "parallel_workers": 0, "debug": false, "host": "127.0.0.1"}
JSON
cat > "$msdir/wine/model-settings.json" <<JSON
{"name": "wine", "implementation": "mlserver_mlflow.MLflowRuntime",
 "max_batch_size": 256, "max_batch_time": 0.002,
 "parameters": {"uri": "$model_dir"}}
JSON
mlserver_start() {
  cd "$msdir" && PATH="$msvenv/bin:$PATH" exec taskset -c 0 "$msvenv/bin/mlserver" start .
}
launch mlserver http://127.0.0.1:18503/v2/models/wine/ready mlserver_start
targets=("mlserver-v2=http://127.0.0.1:18503/v2/models/wine/infer=-v2" "mlserver-invocations=http://127.0.0.1:18503/invocations=")
load "$p"
stop $p
