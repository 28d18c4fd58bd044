#!/usr/bin/env bash
# Profiles the server (perf, cpu-clock sampling: hardware counters are not
# available in this VM) while a clacks-bench scenario runs against it.
#
#   scripts/bench-profile.sh OUT_PREFIX SCENARIO [SCENARIO FLAGS...]
#   e.g. scripts/bench-profile.sh docs/bench/profile-latency latency --rates 100 --duration 10
#
# Writes OUT_PREFIX.perf.txt (perf report, children and self) and leaves
# the server log in OUT_PREFIX.server.log. Server: release build, fresh
# SQLite database (or PROFILE_DATABASE_URL, an empty database of your
# own), JWT secret shared with the tool.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
BENCH=target/release/clacks-bench
CLACKS=target/release/clacks
dir=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
ulimit -n "$(ulimit -Hn)"
DATABASE_URL="${PROFILE_DATABASE_URL:-sqlite://$dir/bench.db}" JWT_SECRET="$secret" \
CLACKS_CLIENT_ADDR="127.0.0.1:$cport" CLACKS_MANAGEMENT_ADDR="127.0.0.1:$mport" \
CLACKS_SEND_RATE=1000000 CLACKS_SEND_BURST=1000000 CLACKS_LOG=warn \
  ${SERVER_ENV:-} "$CLACKS" > "$out.server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$mport/healthz" >/dev/null && break; sleep 0.1; done
perf record -e cpu-clock -F 499 -g --call-graph dwarf,16384 -p "$server" -o "$dir/perf.data" 2>/dev/null &
perf=$!
JWT_SECRET="$secret" "$BENCH" "$@" --client-url "http://127.0.0.1:$cport" \
  --management-url "http://127.0.0.1:$mport" --server-pid "$server" --json "$out.json" | tee "$out.summary.txt"
kill -INT "$perf"; wait "$perf" || true
{
  echo "# self time (flat), percent of server samples"
  perf report -i "$dir/perf.data" --no-children --sort dso,symbol -g none --percent-limit 0.7 --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | cut -c1-200
  echo
  echo "# inclusive time (children), percent of server samples"
  perf report -i "$dir/perf.data" --children --sort symbol -g none --percent-limit 4 --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | cut -c1-200
} > "$out.perf.txt"
cp "$dir/perf.data" "/tmp/$(basename "$out").perf.data" 2>/dev/null || true
echo "wrote $out.perf.txt"
