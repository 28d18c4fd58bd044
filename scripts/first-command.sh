#!/usr/bin/env bash
# The README's first command, run the way a new user runs it: `cargo run
# --release` with no configuration, until /healthz answers on both
# listeners; then SIGTERM, and it must stop cleanly.
#
# It runs from a scratch directory under target/ (cargo finds the workspace
# from there), so the SQLite database the server creates in its working
# directory (./clacks.db) never lands in the repository, nor meets one a
# developer already has there.
#
# Environment:
#   CLACKS_CLIENT_ADDR, CLACKS_MANAGEMENT_ADDR  move the listeners when the
#       default ports (8000, 7999) are taken. Every other CLACKS_* variable,
#       DATABASE_URL and JWT_SECRET are dropped: a new user has none.
#   FIRST_COMMAND_TIMEOUT  seconds for the release build and startup
#       (default 2400).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[first-command.sh] %s\n' "$*" >&2; }

expected='cargo run --release'
first=$(awk '/^```sh$/ { inside = 1; next } inside { print; exit }' README.md |
  sed 's/[[:space:]]*#.*$//')
if [ "$first" != "$expected" ]; then
  log "the README's first command is now '$first', this script runs '$expected': update it"
  exit 1
fi

client_addr=${CLACKS_CLIENT_ADDR:-0.0.0.0:8000}
management_addr=${CLACKS_MANAGEMENT_ADDR:-127.0.0.1:7999}

# host:port of a listener address, as a client on this machine reaches it.
probe_target() {
  local host=${1%:*} port=${1##*:}
  host=${host#[}
  host=${host%]}
  case $host in 0.0.0.0 | ::) host=127.0.0.1 ;; esac
  printf '%s %s\n' "$host" "$port"
}
read -r client_host client_port < <(probe_target "$client_addr")
read -r management_host management_port < <(probe_target "$management_addr")

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

healthy() {
  local status
  status=$(
    exec 2>/dev/null 3<>"/dev/tcp/$1/$2" &&
      printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 &&
      head -n 1 <&3
  ) || return 1
  [[ $status == "HTTP/1.1 200"* ]]
}

for listener in "$client_host $client_port" "$management_host $management_port"; do
  # shellcheck disable=SC2086 # host and port, split on purpose
  if port_open $listener; then
    log "something already listens on ${listener/ /:}: stop it, or move the server with" \
      "CLACKS_CLIENT_ADDR / CLACKS_MANAGEMENT_ADDR"
    exit 1
  fi
done

unset_args=()
while IFS= read -r name; do
  case $name in
    CLACKS_CLIENT_ADDR | CLACKS_MANAGEMENT_ADDR) ;;
    CLACKS_* | DATABASE_URL | JWT_SECRET) unset_args+=(-u "$name") ;;
  esac
done < <(compgen -e)

mkdir -p target
workdir=$(mktemp -d "$PWD/target/first-command.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

log "running '$expected' in $workdir"
started=$SECONDS
# `cargo run` replaces itself with the server once built, so $pid ends up
# being the server's.
(cd "$workdir" && exec env "${unset_args[@]}" cargo run --release) >"$workdir/output.log" 2>&1 &
pid=$!

timeout=${FIRST_COMMAND_TIMEOUT:-2400}
until healthy "$client_host" "$client_port" && healthy "$management_host" "$management_port"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    log "'$expected' exited before serving:"
    tail -n 40 "$workdir/output.log" >&2
    exit 1
  fi
  if ((SECONDS - started > timeout)); then
    log "'$expected' did not serve /healthz within $timeout s:"
    tail -n 40 "$workdir/output.log" >&2
    exit 1
  fi
  sleep 1
done
log "serving on $client_host:$client_port and $management_host:$management_port" \
  "after $((SECONDS - started)) s (build included)"
if [ ! -f "$workdir/clacks.db" ]; then
  log "the server did not create clacks.db in its working directory"
  exit 1
fi

kill -TERM "$pid"
for _ in $(seq 1 30); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$pid" 2>/dev/null; then
  log "still running 30 s after SIGTERM:"
  tail -n 20 "$workdir/output.log" >&2
  exit 1
fi
status=0
wait "$pid" || status=$?
pid=""
if [ "$status" -ne 0 ]; then
  log "exited with status $status after SIGTERM:"
  tail -n 20 "$workdir/output.log" >&2
  exit 1
fi
log "stopped cleanly on SIGTERM"
