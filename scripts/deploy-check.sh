#!/usr/bin/env bash
# The Docker deployment, checked where no Docker engine runs (CI):
# docker-compose.yml through Debian's `docker-compose config`; the image's
# ENTRYPOINT, CMD and HEALTHCHECK, read from the Dockerfile, against the
# release binary; and the compose file's HAProxy and NATS configurations and
# node settings, run here with local addresses: two nodes on a fresh MariaDB
# database behind HAProxy (and behind deploy/nginx.conf.template), with
# WebSocket clients and management calls through the balancer. The checks
# themselves are e2e/deploy.mjs.
#
# Needs docker-compose, haproxy, nginx and nats-server (.ci/run installs the
# missing ones), MariaDB on 127.0.0.1:3306 (root, no password), a
# non-loopback IPv4 address to connect from, and target/release/clacks
# (scripts/first-command.sh builds it earlier in .ci/run; CLACKS_BIN picks
# another binary).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[deploy-check.sh] %s\n' "$*" >&2; }

export PATH="$PATH:/usr/sbin:/sbin"
bin=${CLACKS_BIN:-target/release/clacks}
if [ ! -x "$bin" ]; then
  log "$bin is missing: cargo build --release --bin clacks (or set CLACKS_BIN)"
  exit 1
fi
for tool in docker-compose haproxy nginx nats-server mariadb node; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "$tool is missing (.ci/run installs docker-compose, haproxy and nginx-light)"
    exit 1
  fi
done

e2e/npm-ci.sh
CLACKS_BIN="$bin" timeout 300 node --test e2e/deploy.mjs
