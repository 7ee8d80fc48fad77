#!/usr/bin/env bash
# Make sure a Chromium the browser tests can drive is installed (Debian's package; Playwright
# drives it by its path, so nothing is downloaded at test time). Idempotent.
set -euo pipefail
log() { printf 'ensure-chromium: %s\n' "$*" >&2; }
for candidate in "${SHESHA_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    log "Chromium is installed ($candidate)."
    exit 0
  fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  log "Chromium is missing. Install it (Debian/Ubuntu: apt-get install chromium), or set"
  log "SHESHA_CHROMIUM to its path. Only the browser tests need it."
  exit 1
fi
log "Installing Debian's chromium (one time)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
log "Chromium is installed ($(command -v chromium))."
