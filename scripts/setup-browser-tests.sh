#!/usr/bin/env bash
# Prepares the browser test of the labelling app (crates/rlhf-server/tests/browser.rs):
#   - Debian's chromium at /usr/bin/chromium (apt-get; needs root), no browser download;
#   - playwright-core from npm in crates/rlhf-server/tests/browser/node_modules (npm ci).
# Safe to run again: it does nothing when both are present and node_modules matches the lock file.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/crates/rlhf-server/tests/browser"

# shellcheck source=apt-install.sh
. "$root/scripts/apt-install.sh"

if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi

# node_modules is stale when the lock file changed since the last `npm ci` (recorded as its hash).
stamp="$dir/node_modules/.setup-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/node_modules/playwright-core/package.json" ]; then
  echo "node_modules up to date: $dir/node_modules"
else
  echo "installing npm packages in $dir"
  # Playwright must never fetch its own browsers: the test runs /usr/bin/chromium.
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  echo "$want" >"$stamp"
fi
echo "browser tests ready: cargo test -p rlhf-server --test browser"
