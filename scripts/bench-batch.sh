#!/usr/bin/env bash
# Batch inference jobs end to end with hyperfine: python-iris trained once in
# a fresh data dir, then `legion batch iris:1` on 1 row and on 100,000 rows
# (seeded random rows over the iris ranges); the job's Python environment is
# made by the warm-up run. Prints hyperfine's summary for each.
#
#   bash scripts/bench-batch.sh      # after scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/legion/target}"
legion="$CARGO_TARGET_DIR/release/legion"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LEGION_HOME="$work/home"
export LEGION_ENV_DIR="${LEGION_ENV_DIR:-/var/cache/legion/envs}"
"$legion" train examples/python-iris --toolchain python --name iris >/dev/null
python3 - "$work" <<'PY'
import random, sys
random.seed(1)
header = "sepal_length,sepal_width,petal_length,petal_width\n"
ranges = [(4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5)]
for name, n in (("one", 1), ("many", 100_000)):
    with open(f"{sys.argv[1]}/{name}.csv", "w") as f:
        f.write(header)
        for _ in range(n):
            f.write(",".join("%.2f" % random.uniform(a, b) for a, b in ranges) + "\n")
PY
for rows in one many; do
  hyperfine -N -w 1 -r 5 "$legion batch iris:1 --data $work/$rows.csv --output $work/out-$rows"
done
