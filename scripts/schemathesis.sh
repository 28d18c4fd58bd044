#!/usr/bin/env bash
# Property-based test of the management API with schemathesis: generates
# requests from the served OpenAPI document, including stateful sequences
# that follow the document's links (create a channel, add a member, post a
# message, mint a token, ...), and runs every check schemathesis has
# (--checks all): no 5xx, every status, header, content type and body as
# documented, invalid requests refused and valid ones accepted, auth as
# declared, deleted resources gone.
#
# Usage:
#   scripts/schemathesis.sh                  # build target/debug/clacks, then test it
#                                            # twice on free loopback ports over a
#                                            # fresh SQLite database: without a
#                                            # management token, then with one
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
#   SCHEMATHESIS_TIMEOUT        hard limit on each run, in seconds (default 300)
#
# schemathesis comes from PyPI, installed into .venv on first use (pinned below).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

# The version this API was last checked with: a newer one may add checks
# (--checks all takes them all), to adopt deliberately.
version=4.32.5
if ! .venv/bin/schemathesis --version 2>/dev/null | grep -qF "version $version"; then
  log "installing schemathesis $version into .venv"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_pid=""
workdir=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
  [ -z "$workdir" ] || rm -rf "$workdir"
  workdir=""
}
trap stop_server EXIT

# Runs schemathesis against the management API at $1, with bearer token $2
# when not empty.
run_schemathesis() {
  local base=$1 token=$2
  local args=(
    --config-file scripts/schemathesis.toml
    run "$base/openapi.json"
    --url "$base"
    --checks all
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}"
    --request-timeout 10
    --suppress-health-check too_slow,filter_too_much
    # No example database: a run depends on its seed only, not on what
    # earlier runs left in .hypothesis/ (and Hypothesis 6.170's Pareto
    # optimiser, used only with a database, can crash while shrinking:
    # "IndexError: Index 69 out of range" in try_lower_node_as_alternative).
    --generation-database none
  )
  [ -z "${SCHEMATHESIS_SEED:-}" ] || args+=(--seed "$SCHEMATHESIS_SEED")
  [ -z "$token" ] || args+=(--header "Authorization: Bearer $token")
  if [ -n "$token" ]; then
    log "running schemathesis against $base, with a management token"
  else
    log "running schemathesis against $base, without a management token"
  fi
  local status=0
  timeout "${SCHEMATHESIS_TIMEOUT:-300}" .venv/bin/schemathesis "${args[@]}" || status=$?
  if [ "$status" -ne 0 ] && [ -n "$workdir" ]; then
    log "schemathesis failed ($status); server log tail:"
    tail -n 50 "$workdir/server.log" >&2 || true
  fi
  return "$status"
}

if [ $# -ge 1 ]; then
  run_schemathesis "${1%/}" "${CLACKS_MANAGEMENT_TOKEN:-}"
  exit
fi

bin="${CLACKS_BIN:-}"
if [ -z "$bin" ]; then
  log "building target/debug/clacks"
  cargo build --quiet --bin clacks
  bin=target/debug/clacks
fi

# Starts $bin on free loopback ports over a fresh SQLite database, with
# management token $1 when not empty; sets base.
start_server() {
  local token=$1
  workdir="$(mktemp -d)"
  local management_port client_port
  management_port="$(free_port)"
  client_port="$(free_port)"
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
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      log "the server exited; its log:"
      cat "$workdir/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  log "the server did not answer /healthz"
  exit 1
}

# No management token: the document declares no security requirement.
start_server ""
run_schemathesis "$base" ""
stop_server

# A management token: every protected operation goes through the bearer
# check, and the document declares it.
token="schemathesis-$RANDOM$RANDOM"
start_server "$token"
run_schemathesis "$base" "$token"
stop_server
log "both runs passed"
