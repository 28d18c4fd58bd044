#!/usr/bin/env bash
# Property-based test of the management API with schemathesis: generates
# requests from the served OpenAPI document and checks that no response is a
# 5xx (not_a_server_error) and that every response matches the document
# (response_schema_conformance).
#
# Usage:
#   scripts/schemathesis.sh                  # build target/debug/clacks, start it on
#                                            # free loopback ports over a temporary
#                                            # SQLite database, test it, stop it
#   scripts/schemathesis.sh http://127.0.0.1:7999
#                                            # test a running server (its management
#                                            # base URL); set CLACKS_MANAGEMENT_TOKEN
#                                            # when it needs one
#
# Environment:
#   CLACKS_BIN                  binary to start instead of building target/debug/clacks
#                               (e.g. target/release/clacks)
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default 100)
#   SCHEMATHESIS_SEED           fix the random seed to reproduce a run
#   SCHEMATHESIS_TIMEOUT        hard limit on the whole run, in seconds (default 600)
#
# schemathesis comes from PyPI, installed into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

if [ ! -x .venv/bin/schemathesis ]; then
  log "installing schemathesis into .venv"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_pid=""
workdir=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  [ -z "$workdir" ] || rm -rf "$workdir"
}
trap cleanup EXIT

token="${CLACKS_MANAGEMENT_TOKEN:-}"
if [ $# -ge 1 ]; then
  base="${1%/}"
else
  bin="${CLACKS_BIN:-}"
  if [ -z "$bin" ]; then
    log "building target/debug/clacks"
    cargo build --quiet --bin clacks
    bin=target/debug/clacks
  fi
  workdir="$(mktemp -d)"
  management_port="$(free_port)"
  client_port="$(free_port)"
  # A token, so every request also goes through the auth layer.
  token="schemathesis-$RANDOM$RANDOM"
  log "starting $bin (management 127.0.0.1:$management_port, SQLite in $workdir)"
  DATABASE_URL="sqlite://$workdir/s.db" \
    CLACKS_MANAGEMENT_ADDR="127.0.0.1:$management_port" \
    CLACKS_CLIENT_ADDR="127.0.0.1:$client_port" \
    CLACKS_MANAGEMENT_TOKEN="$token" \
    JWT_SECRET="schemathesis-jwt-secret-0123456789abcdef" \
    "$bin" serve >"$workdir/server.log" 2>&1 &
  server_pid=$!
  base="http://127.0.0.1:$management_port"
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/api/v1/healthz" 2>/dev/null; then
      break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      log "the server exited; its log:"
      cat "$workdir/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
fi

args=(
  run "$base/openapi.json"
  --url "$base"
  --checks not_a_server_error,response_schema_conformance
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}"
  --request-timeout 10
  --suppress-health-check too_slow
)
[ -z "${SCHEMATHESIS_SEED:-}" ] || args+=(--seed "$SCHEMATHESIS_SEED")
[ -z "$token" ] || args+=(--header "Authorization: Bearer $token")

log "running schemathesis against $base"
status=0
timeout "${SCHEMATHESIS_TIMEOUT:-600}" .venv/bin/schemathesis "${args[@]}" || status=$?
if [ "$status" -ne 0 ] && [ -n "$workdir" ]; then
  log "schemathesis failed ($status); server log tail:"
  tail -n 50 "$workdir/server.log" >&2 || true
fi
exit "$status"
