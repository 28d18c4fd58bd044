#!/usr/bin/env bash
# Runs every clacks-bench scenario of BENCHMARKS.md with release builds,
# writes JSON reports and summaries to docs/bench/, then the plot.
#
#   scripts/bench-run.sh            # all scenarios
#   scripts/bench-run.sh fanout resume   # only these (names below)
#
# Needs MariaDB (127.0.0.1:3306), PostgreSQL (127.0.0.1:5432) and NATS
# (127.0.0.1:4222) for the durable-send-{mysql,postgres} and two-nodes runs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/bench
mkdir -p "$OUT"
cargo build --release -p clacks-server -p clacks-bench
BENCH=target/release/clacks-bench
CLACKS=target/release/clacks

run() {
  local name=$1; shift
  echo "=== $name: $BENCH $* --spawn $CLACKS" | tee "$OUT/$name.txt"
  { date; uptime; echo "tree: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + uncommitted changes')"; } | tee -a "$OUT/$name.txt"
  "$BENCH" "$@" --spawn "$CLACKS" --json "$OUT/$name.json" 2> >(tee "$OUT/$name.log" >&2) | tee -a "$OUT/$name.txt" || true
}

SELECTED="${*:-}"
sel() { [ -z "$SELECTED" ] || [[ " $SELECTED " == *" $1 "* ]]; }

sel fanout && run fanout fanout --subscribers 1000 --burst 200 --bursts 10
sel many-channels && run many-channels many-channels --channels 5000 --members 2 --rates 500,1000,2000 --duration 10
sel many-channels-idle && run many-channels-idle many-channels --channels 5000 --members 2 --no-subscribe
sel durable-send-sqlite && run durable-send-sqlite durable-send --senders 64 --db sqlite
sel durable-send-mysql && run durable-send-mysql durable-send --senders 64 --db mysql
sel durable-send-postgres && run durable-send-postgres durable-send --senders 64 --db postgres
sel latency-1000 && run latency-1000 latency --channels 1 --members 1000 --rates 25,50,100,200 --duration 10
sel latency-5000x2 && run latency-5000x2 latency --channels 5000 --members 2 --rates 500,1000,2000,4000 --duration 10
sel resume && run resume resume --missed 10000 --repeats 3
sel resume-events && run resume-events resume --missed 10000 --repeats 3 --stream events
sel two-nodes && run two-nodes two-nodes --subscribers 1000 --burst 200 --bursts 10

if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench && echo '*' > .venv-bench/.gitignore
  .venv-bench/bin/pip install -q matplotlib
fi
plots=()
for f in latency-1000 latency-5000x2 many-channels; do
  [ -f "$OUT/$f.json" ] && plots+=("$OUT/$f.json:$f")
done
[ ${#plots[@]} -gt 0 ] && .venv-bench/bin/python scripts/bench-plot.py "$OUT/latency-vs-rate.png" "${plots[@]}"
