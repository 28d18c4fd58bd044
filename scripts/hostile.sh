#!/usr/bin/env bash
# The hostile-input suite (issue 10, SECURITY.md): starts the release
# binary on free loopback ports over temporary SQLite databases, replays
# every attack SECURITY.md lists against it, and checks each is refused as
# documented (error code, close code or HTTP status) within
# --refusal-bound-ms; then runs several attackers at once for
# --storm-seconds while /healthz is probed (its p99 within
# --health-p99-bound-ms) and the server's RSS sampled (its peak within
# --rss-bound-mib). Prints a table: attack, refusal, time, server CPU.
#
# Usage:
#   scripts/hostile.sh [hostile.py options: --only WORD, --json FILE, ...]
#
# Environment:
#   CLACKS_BIN       binary to test instead of building target/release/clacks
#                    (.ci/run has built it already for scripts/first-command.sh)
#   HOSTILE_TIMEOUT  hard limit on the run, in seconds (default 300)
#
# The driver is scripts/hostile.py (Python 3); its one dependency,
# `websockets`, comes from PyPI, installed into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[hostile.sh] %s\n' "$*" >&2; }

if ! .venv/bin/python -c 'import websockets.sync.client' 2>/dev/null; then
  log "installing websockets into .venv"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'websockets>=14,<18'
fi

bin="${CLACKS_BIN:-}"
if [ -z "$bin" ]; then
  log "building target/release/clacks"
  cargo build --quiet --release --bin clacks
  bin=target/release/clacks
fi

exec timeout "${HOSTILE_TIMEOUT:-300}" .venv/bin/python scripts/hostile.py "$bin" "$@"
