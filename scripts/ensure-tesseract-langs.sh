#!/usr/bin/env bash
# Make sure Tesseract has the language data asked for (tesseract-ocr-LANG packages).
#   ensure-tesseract-langs.sh eng deu fra
set -euo pipefail
log() { printf 'ensure-tesseract-langs: %s\n' "$*" >&2; }
have=$(tesseract --list-langs 2>/dev/null | tail -n +2 || true)
missing=()
for lang in "$@"; do
  grep -qx "$lang" <<<"$have" || missing+=("tesseract-ocr-$lang")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "Tesseract reads: $*."
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  log "missing: ${missing[*]}. Install them (Debian/Ubuntu: apt-get install ${missing[*]})."
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
log "Tesseract reads: $*."
