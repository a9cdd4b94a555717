#!/usr/bin/env bash
# The system packages the test suite needs beyond .venv: Debian's Chromium and its chromedriver, for the
# notebook's real-browser test (tests/test_notebook_browser.py). scripts/setup.sh runs this; so can you.
# Idempotent and quiet: nothing is done when both are there. Installing needs root (apt-get); without it the
# missing packages are named and the browser test will fail saying so (setup itself goes on).
set -euo pipefail
PACKAGES=(chromium chromium-driver)
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "note: /usr/bin/chromium or /usr/bin/chromedriver is missing and this is not root: the notebook's" \
         "browser test will fail until you run: sudo apt-get install ${PACKAGES[*]}" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "note: no apt-get here: install Chromium and chromedriver as /usr/bin/chromium and /usr/bin/chromedriver" \
         "for the notebook's browser test" >&2
    exit 0
fi
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
echo "installing ${PACKAGES[*]} with apt-get (for the notebook's browser test; about 40 s)"
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -f "$log"
    echo "error: apt-get could not install ${PACKAGES[*]}" >&2
    exit 1
fi
rm -f "$log"
/usr/bin/chromium --version 2>/dev/null || true
