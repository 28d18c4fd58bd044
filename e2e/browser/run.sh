#!/usr/bin/env bash
# Browser test: the demo chat page, GraphiQL and CORS in Debian's chromium
# (installed by .ci/run when missing), driven by playwright-core, against
# the clacks binary (target/debug/clacks, or CLACKS_BIN). Screenshots go
# to e2e/browser/output/.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "chromium is missing: apt-get install -y chromium (or set CHROMIUM)" >&2
  exit 1
fi
if [ -z "${CLACKS_BIN:-}" ]; then
  (cd ../.. && cargo build -q -p clacks-server --bin clacks)
fi
npm ci --no-audit --no-fund
# Named explicitly: a bare `node --test` in e2e/ must not pick it up.
node --test browser.mjs
