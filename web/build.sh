#!/usr/bin/env bash
# Rebuilds crates/clacks-web/assets/vendor/ (GraphiQL, React and graphql-ws,
# bundled and minified, with the licenses of everything bundled) from the
# versions locked in package-lock.json. The output is checked in: building
# Clacks never needs npm, only changing these libraries does.
#
# To upgrade: edit package.json, run `npm install` here (it updates the
# lock), then this script, then the browser test (e2e/browser/run.sh).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
node build.mjs
