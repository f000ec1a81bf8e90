#!/usr/bin/env bash
# Installs the system browser the browser tests drive: Debian's `chromium` (Playwright's own
# browser download cannot be fetched here; the tests launch /usr/bin/chromium instead).
# Called by `make dev`; does nothing when the browser is already there.
set -euo pipefail
BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_browser: $BROWSER is missing and this machine has no apt-get;" \
       "install Chromium there by hand to run the browser tests" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
"$BROWSER" --version
