#!/usr/bin/env bash
# The client guides' examples (docs/examples/), run as written against the
# clacks binary (target/debug/clacks, built here, or CLACKS_BIN): the
# JavaScript ones with the npm packages of e2e/package.json, the Python ones
# in a venv (e2e/.venv) with docs/examples/python/requirements.txt from PyPI,
# both installed once and again only when their lock or requirements change.
# First, the guides must show the example files as they are (doc-snippets.mjs).
set -euo pipefail
cd "$(dirname "$0")"

node doc-snippets.mjs

if [ -z "${CLACKS_BIN:-}" ]; then
  (cd .. && cargo build -q -p clacks-server --bin clacks)
fi
./npm-ci.sh
# The examples import their packages as an app would; these are e2e/'s.
ln -sfn ../../../e2e/node_modules ../docs/examples/js/node_modules

requirements=../docs/examples/python/requirements.txt
if ! cmp -s "$requirements" .venv/installed-requirements.txt 2>/dev/null; then
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" .venv/installed-requirements.txt
fi

# Browsers have fetch and WebSocket built in; Node 22 too, Node 20 behind a flag.
flags=()
node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' || flags=(--experimental-websocket)
timeout 300 node "${flags[@]}" --test guides.mjs
