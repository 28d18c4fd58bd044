#!/usr/bin/env bash
# Installs e2e/'s npm packages with `npm ci`, unless node_modules (kept
# between runs, gitignored) was installed from this very package-lock.json:
# the suites that share them (run.sh, guides.sh, scripts/deploy-check.sh)
# then pay for one install, not one each.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.installed-from-package-lock.json
if cmp -s package-lock.json "$stamp" 2>/dev/null; then
  exit 0
fi
npm ci --no-audit --no-fund
cp package-lock.json "$stamp"
