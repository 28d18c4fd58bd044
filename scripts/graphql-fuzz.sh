#!/usr/bin/env bash
# Property-based fuzzing of the client API (/graphql) with schemathesis'
# GraphQL mode: queries and mutations generated from the introspected schema
# (hypothesis-graphql), sent with a valid token by a member of a channel
# that holds messages, so resolvers reach real data. Fails on any 5xx, any
# error with `extensions.code = INTERNAL` or none (the check in
# scripts/graphql_fuzz_checks.py), any request taking longer than
# --request-timeout (a hang), and any panic or error in the server's log.
#
# Usage:
#   scripts/graphql-fuzz.sh
#
# Environment:
#   CLACKS_BIN        binary to start instead of building target/release/clacks
#   FUZZ_SECONDS      time budget of the generation (default 60)
#   FUZZ_SEED         fix the random seed to reproduce a run
#
# The release binary is what .ci/run has built already (scripts/first-command.sh).
# schemathesis comes from PyPI, installed into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[graphql-fuzz.sh] %s\n' "$*" >&2; }

if [ ! -x .venv/bin/schemathesis ]; then
  log "installing schemathesis into .venv"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

bin="${CLACKS_BIN:-}"
if [ -z "$bin" ]; then
  log "building target/release/clacks"
  cargo build --quiet --release --bin clacks
  bin=target/release/clacks
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_pid=""
workdir="$(mktemp -d)"
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

management_port="$(free_port)"
client_port="$(free_port)"
# Default request limits (a generated query over them gets LIMIT_EXCEEDED,
# a fine answer); rate limits raised so that the generated traffic reaches
# the resolvers instead of RATE_LIMITED.
log "starting $bin (client 127.0.0.1:$client_port, SQLite in $workdir)"
env -u JWT_SECRET \
  DATABASE_URL="sqlite://$workdir/fuzz.db" \
  CLACKS_CLIENT_ADDR="127.0.0.1:$client_port" \
  CLACKS_MANAGEMENT_ADDR="127.0.0.1:$management_port" \
  CLACKS_SEND_RATE=100000 CLACKS_SEND_BURST=100000 \
  CLACKS_EDIT_RATE=100000 CLACKS_EDIT_BURST=100000 \
  CLACKS_DELETE_RATE=100000 CLACKS_DELETE_BURST=100000 \
  CLACKS_MARK_READ_RATE=100000 CLACKS_MARK_READ_BURST=100000 \
  CLACKS_TYPING_RATE=100000 CLACKS_TYPING_BURST=100000 \
  CLACKS_QUERY_COST_RATE=1000000 CLACKS_QUERY_COST_BURST=1000000 \
  "$bin" serve >"$workdir/server.log" 2>&1 &
server_pid=$!

management="http://127.0.0.1:$management_port/api/v1"
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$management/healthz" 2>/dev/null; then
    break
  fi
  # A request the server failed on inside (a database error, a caught panic)
# is logged at ERROR even when its answer looks fine.
if sed 's/\x1b\[[0-9;]*m//g' "$workdir/server.log" | grep -q " ERROR "; then
  log "the server logged errors:"
  sed 's/\x1b\[[0-9;]*m//g' "$workdir/server.log" | grep " ERROR " | head -n 10 >&2
  status=1
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    log "the server exited; its log:"
    cat "$workdir/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

# The fuzz user is a member of a channel with messages (its own, another
# member's, a system one), read state and a second member.
token=$(python3 - "$management" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
channel = call("POST", "/channel", {"displayName": "fuzz", "initialUsers": ["fuzzer", "other"]})["id"]
call("POST", "/channel", {"displayName": "elsewhere", "initialUsers": ["other"]})
for i in range(30):
    sender = ["fuzzer", "other", None][i % 3]
    body = {"content": f"message {i}", "clientMessageId": f"seed-{i}"}
    if sender:
        body["senderId"] = sender
    call("POST", f"/channel/{channel}/messages", body)
token = call("GET", "/jwt/fuzzer?name=Fuzzer")
print(token if isinstance(token, str) else token["token"])
PY
)

args=(
  run "http://127.0.0.1:$client_port/graphql"
  --header "Authorization: Bearer $token"
  --checks no_internal_error
  --max-time "${FUZZ_SECONDS:-60}"
  --request-timeout 5
  --workers 2
  --suppress-health-check all
)
[ -z "${FUZZ_SEED:-}" ] || args+=(--seed "$FUZZ_SEED")

log "fuzzing http://127.0.0.1:$client_port/graphql for ${FUZZ_SECONDS:-60} s"
status=0
SCHEMATHESIS_HOOKS=graphql_fuzz_checks PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" \
  timeout $((${FUZZ_SECONDS:-60} * 3 + 120)) .venv/bin/schemathesis "${args[@]}" || status=$?

if grep -q "panicked" "$workdir/server.log"; then
  log "the server panicked:"
  grep -B2 -A10 "panicked" "$workdir/server.log" | head -n 40 >&2
  status=1
fi
# A request the server failed on inside (a database error, a caught panic)
# is logged at ERROR even when its answer looks fine.
if sed 's/\x1b\[[0-9;]*m//g' "$workdir/server.log" | grep -q " ERROR "; then
  log "the server logged errors:"
  sed 's/\x1b\[[0-9;]*m//g' "$workdir/server.log" | grep " ERROR " | head -n 10 >&2
  status=1
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
  log "the server is gone"
  status=1
fi
if [ "$status" -ne 0 ]; then
  log "failed ($status); server log tail:"
  tail -n 30 "$workdir/server.log" >&2 || true
else
  log "no 5xx, no INTERNAL, no error logged, no panic, no hang"
fi
exit "$status"
