#!/usr/bin/env bash
# Build a minimal Debian bookworm + python3 base image offline, for machines that
# cannot pull python:3.12-slim from Docker Hub. Uses debootstrap against the
# Debian mirror apt already uses, then `docker import`.
#   usage: sandbox_image/build-base.sh TAG
set -euo pipefail
tag=${1:?usage: build-base.sh TAG}
log() { printf 'build-base: %s\n' "$*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag already present."
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "Building the offline base needs root (debootstrap). Run as root, or make python:3.12-slim pullable."
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  log "Installing debootstrap..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

# Use the mirror apt is configured with (deb822 or classic sources), or DEBIAN_MIRROR.
mirror=${DEBIAN_MIRROR:-}
[ -n "$mirror" ] || mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | head -n1 | sed -E 's/^(URIs:|deb) +//; s/ *$//') || true
if [ -z "$mirror" ]; then
  log "apt names no Debian mirror (/etc/apt/sources.list*): set DEBIAN_MIRROR=<url of a Debian archive>, or make python:3.12-slim pullable."
  exit 1
fi

root=$(mktemp -d /tmp/shesha-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
log "debootstrap bookworm (minbase + python3) from $mirror; this takes about a minute..."
debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Trim what a sandbox never needs.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*
log "docker import -> $tag"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$tag" >/dev/null
log "done."
