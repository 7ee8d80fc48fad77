#!/usr/bin/env bash
# Make sure a system tool is installed, from Debian's packages when it is missing.
#   ensure-packages.sh COMMAND PACKAGE [PACKAGE...]   e.g. ensure-packages.sh bwrap bubblewrap
#   (COMMAND may be a file's absolute path instead, e.g. a font the tests draw with)
# Idempotent; as root on Debian/Ubuntu it installs, elsewhere it says what to install.
set -euo pipefail
command_name=$1
shift
log() { printf 'ensure-packages: %s\n' "$*" >&2; }
present() {
  case "$command_name" in
    /*) [ -e "$command_name" ] ;;
    *) command -v "$command_name" >/dev/null 2>&1 ;;
  esac
}
if present; then
  log "$command_name is installed."
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  log "$command_name is missing. Install it (Debian/Ubuntu: apt-get install $*)."
  exit 1
fi
log "Installing $* (one time)..."
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
log "$command_name is installed."
