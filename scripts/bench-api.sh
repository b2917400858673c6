#!/usr/bin/env bash
# The HTTP API (EDI) under load, with wrk: the server pinned to core 0, wrk
# to core 1. On SQLite, then on PostgreSQL (a throwaway cluster on
# 127.0.0.1, fsync on, as shipped):
#
#   - GET of one run (/api/v1/trainings/ID),
#   - GET of a page of 100 runs (/api/v1/trainings?limit=100),
#   - creates (POST /api/v1/trainings) with the no-op test toolchain
#     (host/tests/plugins/noop: one step, `sh -c mkdir`): accepted means
#     recorded, the source fetched, planned in the sandbox and past the
#     policy; each then runs on the same core (one process, its model
#     stored).
#
#   bash scripts/bench-api.sh      # after scripts/setup.sh
#
# DURATION (default 10s) is each GET run's length; CREATES_FOR (default 5s)
# the creates run's. DBS (default "sqlite postgres") picks the stores.
# DISK_NOISE=MB has another process write MB megabytes to the same disk
# (dd, with an fsync) from the first second of the held creates: the API
# while the disk is busy with someone else's writes.
# PROFILE=DIR records the server with `perf record` during the creates
# (DIR/perf-DB-PHASE.data); PERF_CALLGRAPH (default `-g`; `--call-graph
# dwarf -F 999` for stacks through Rust code built without frame pointers). Prints one Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
legion="$CARGO_TARGET_DIR/release/legion"
DURATION="${DURATION:-10s}"
CREATES_FOR="${CREATES_FOR:-5s}"
DBS="${DBS:-sqlite postgres}"
PROFILE="${PROFILE:-}"
DISK_NOISE="${DISK_NOISE:-}"
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  # Newest first: a legion server before the PostgreSQL it holds
  # connections to (whose shutdown waits for its clients).
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
export LEGION_ENV_DIR="${LEGION_ENV_DIR:-/var/cache/legion/envs}"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

mkdir -p "$work/projects/noop"
echo 'the no-op toolchain reads nothing' > "$work/projects/noop/README"
body="{\"toolchain\":\"noop\",\"model\":{\"name\":\"noop\",\"version\":\"1\"},\"source\":{\"uri\":\"$work/projects/noop\"}}"
# Every answer other than 202 is kept, status and body, in refused.txt
# (wrk only counts them).
cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
response = function(status, headers, body)
  if status ~= 202 then
    local f = io.open("$work/refused.txt", "a")
    f:write(status, " ", body, "\\n")
    f:close()
  end
end
EOF

# "Requests/sec", p50 and p99 (ms) from `wrk --latency` output.
figures() {
  awk '/Requests\/sec/ {rps=$2}
       function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
       $1=="50.000%" || $1=="50%" {p50=ms($2)} $1=="99.000%" || $1=="99%" {p99=ms($2)}
       END {printf "%.0f | %.2f | %.2f", rps, p50, p99}' "$1"
}

wait_idle() { # until no run is queued or running
  local url=$1 token=$2
  for _ in $(seq 1 1200); do
    n=$(curl -s -H "Authorization: Bearer $token" "$url/api/v1/trainings?state=running&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
    q=$(curl -s -H "Authorization: Bearer $token" "$url/api/v1/trainings?state=queued&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
    [ "$n$q" = "00" ] && return 0
    sleep 1
  done
  echo "runs never finished" >&2; return 1
}

# Before each measurement: write back what is dirty (the build, the
# phase before) so that its writeback does not share the disk with the
# phase measured. A run of creates right after a build measured a p99 of
# 234 ms; with another process writing 400 MB/s meanwhile, 528 ms - 1 s
# before the writer stopped checkpointing (docs/benchmarks.md).
quiet() { sync; }

rows=()
for db in $DBS; do
  home="$work/$db"
  mkdir -p "$home"
  export LEGION_HOME="$home"
  unset LEGION_DATABASE
  if [ "$db" = postgres ]; then
    mkdir -p "$work/pg"; chown postgres:postgres "$work/pg"
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$pgbin/initdb" --auth=trust -U postgres -D "$work/pg/data" >/dev/null
    pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    taskset -c 0 setpriv --reuid=postgres --regid=postgres --init-groups -- "$pgbin/postgres" -D "$work/pg/data" \
      -p "$pgport" -k "$work/pg" -c listen_addresses=127.0.0.1 -c max_connections=200 >"$work/pg.log" 2>&1 &
    pids+=($!)
    until "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport"; do sleep 0.2; done
    psql -h 127.0.0.1 -p "$pgport" -U postgres -qc 'CREATE DATABASE legion'
    export LEGION_DATABASE="postgres://postgres@127.0.0.1:$pgport/legion"
  fi
  "$legion" toolchain add "$CARGO_TARGET_DIR/plugins/noop.wasm" >/dev/null
  token=$("$legion" -o json server token bench --role data-scientist)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); json.dump({"tokens":[d["entry"]]}, open(sys.argv[2],"w"))' "$token" "$home/tokens.json"
  token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$token")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  taskset -c 0 "$legion" server --listen "127.0.0.1:$port" --tokens "$home/tokens.json" \
    --allow-path "$work/projects" >"$work/server-$db.log" 2>&1 &
  pids+=($!)
  server=$!
  until curl -sf "$url/health" >/dev/null; do sleep 0.2; done

  echo "== $db: 120 runs to read" >&2
  seq 1 120 | xargs -P 8 -I{} curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d "$body" "$url/api/v1/trainings"
  wait_idle "$url" "$token"
  # Let what the last runs left behind settle (PostgreSQL, on the same
  # core, writes for seconds after them: measured at once, GET p99 was
  # 300-900 ms instead of 7).
  sleep 5
  quiet
  id=$(curl -s -H "Authorization: Bearer $token" "$url/api/v1/trainings?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')

  echo "== $db: GET one run" >&2
  taskset -c 1 wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $token" "$url/api/v1/trainings/$id" > "$work/one.txt"
  echo "== $db: GET a page of 100" >&2
  quiet
  taskset -c 1 wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $token" "$url/api/v1/trainings?limit=100" > "$work/page.txt"
  # Creates, twice. First with the run slot held (the server runs one
  # run at a time on its one core; a first run waits for a file): every
  # create is recorded, fetched, planned and answered, then queued — the
  # cost of accepting. Then with the slot free: the accepted runs execute
  # on the same core meanwhile (a process each, a model stored each).
  hold="$work/hold-$db"
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "${body%\}},\"env\":{\"HOLD\":\"$hold\"}}" "$url/api/v1/trainings"
  for phase in held running; do
    echo "== $db: creates ($phase)" >&2
    quiet
    if [ -n "$PROFILE" ]; then
      mkdir -p "$PROFILE"
      perf record ${PERF_CALLGRAPH:--g} -p "$server" -o "$PROFILE/perf-$db-$phase.data" -- sleep "${CREATES_FOR%s}" 2>/dev/null &
      perf_pid=$!
    fi
    noise=
    if [ -n "$DISK_NOISE" ] && [ "$phase" = held ]; then
      # Left until the end: deleting it now would discard its blocks
      # during the next phase.
      (sleep 1; taskset -c 1 dd if=/dev/zero of="$work/noise" bs=1M count="$DISK_NOISE" conv=fsync 2>/dev/null) &
      noise=$!
    fi
    written=$(awk '/^write_bytes/ {print $2}' "/proc/$server/io")
    taskset -c 1 wrk -t1 -c8 -d"$CREATES_FOR" --latency -s "$work/post.lua" -H "Authorization: Bearer $token" "$url/api/v1/trainings" > "$work/create-$phase.txt"
    written=$(( $(awk '/^write_bytes/ {print $2}' "/proc/$server/io") - written ))
    creates=$(awk '/requests in/ {print $1}' "$work/create-$phase.txt")
    # The server's own writes (on SQLite, its database's): bytes a create.
    [ "$db" = sqlite ] && echo "$db $phase: $((written / (creates > 0 ? creates : 1))) bytes written a create by the server ($creates creates)" >&2
    [ -n "$noise" ] && wait "$noise"
    [ -n "$PROFILE" ] && wait "$perf_pid"
    touch "$hold"
  done
  rows+=("| $db | GET one run | $(figures "$work/one.txt") |")
  rows+=("| $db | GET page of 100 | $(figures "$work/page.txt") |")
  for phase in held running; do
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/create-$phase.txt"); non2xx=${non2xx:-0}
    what="accepted, queued behind a held run"
    [ "$phase" = running ] && what="accepted while the runs execute"
    rows+=("| $db | POST create ($what) | $(figures "$work/create-$phase.txt") (non-2xx: $non2xx) |")
  done
  # The runs still queued are left: the server goes with the temp dir.
done

if [ -s "$work/refused.txt" ]; then
  echo "creates not accepted (count, status, body):" >&2
  sort "$work/refused.txt" | uniq -c | sort -rn | head -20 >&2
fi
echo
echo "| store | request | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
