#!/usr/bin/env bash
# Legion's own overhead per training, against `mlflow run` of the same no-op
# MLflow project (examples/mlflow-wine, entry point `noop`, which logs a
# constant pyfunc model) on the same machine, in the same venv.
#
#   bash scripts/bench-train.sh            # needs scripts/setup.sh first; installs hyperfine
#
# Legion's figure includes the whole `legion train` process: start, SQLite,
# source copy, plan (plugin), policy, venv lookup, the very same `mlflow run`,
# collect (plugin), the OCI artifact, and the final record.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
command -v hyperfine >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine; }
legion="$CARGO_TARGET_DIR/release/legion"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LEGION_HOME="$work/home" LEGION_ENV_DIR="${LEGION_ENV_DIR:-/var/cache/legion/envs}"

# One training first: registers the toolchain and builds (or finds) the venv.
"$legion" -o json train examples/mlflow-wine -t mlflow -e noop --name noop > "$work/first.json"
venv=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['state'])" "$work/first.json")
[ "$venv" = succeeded ] || { cat "$work/first.json"; exit 1; }
venv=$(grep -o 'python environment [^ ]*' "$LEGION_HOME"/runs/*/legion.log | head -1 | awk '{print $3}')

# mlflow runs a copy outside any git repository, like Legion's workspace
# copy: inside one, MLflow spends time reading git metadata.
cp -r examples/mlflow-wine "$work/project"

hyperfine --warmup 1 --runs "${RUNS:-10}" --export-markdown "$work/result.md" \
  --prepare "rm -rf $work/mlruns" \
  --command-name "legion train (mlflow, noop)" \
  "$legion train examples/mlflow-wine -t mlflow -e noop --name noop > /dev/null 2>&1" \
  --command-name "mlflow run (noop)" \
  "cd $work/project && PATH=$venv/bin:\$PATH MLFLOW_ALLOW_FILE_STORE=true MLFLOW_TRACKING_URI=file://$work/mlruns mlflow run . -e noop --env-manager local > /dev/null 2>&1"
cat "$work/result.md"

# Per run, from Legion's own records: wall time from the run's creation to
# its end, minus the time the `mlflow run` step took. Process start-up
# (before the run is created) is in the hyperfine figure, not here.
echo
echo "Legion overhead per training (run record wall time minus the step's time):"
for log in "$LEGION_HOME"/runs/*/legion.log; do
  id=$(basename "$(dirname "$log")")
  step=$(grep -o "step 'train' succeeded in [0-9.]*s" "$log" | grep -o '[0-9.]*s$' | tr -d s)
  "$legion" -o json runs show "$id" | python3 -c "
import json, sys
r = json.load(sys.stdin)
wall = (r['finishedAt'] - r['createdAt']) / 1000
print(f'{wall - float(sys.argv[1]):.3f}')" "$step"
done | sort -n | awk '{a[NR]=$1} END {printf "  runs %d, median %.0f ms, max %.0f ms\n", NR, a[int((NR+1)/2)]*1000, a[NR]*1000}'

