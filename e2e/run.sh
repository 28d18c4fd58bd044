#!/usr/bin/env bash
# End-to-end suite: the clacks binary against the real graphql-ws and
# subscriptions-transport-ws clients from npm.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${CLACKS_BIN:-}" ]; then
  (cd .. && cargo build -q -p clacks-server --bin clacks)
fi
./npm-ci.sh
# Runs every *.test.mjs here (chat.test.mjs, features.test.mjs, ...);
# node_modules is skipped.
node --test
