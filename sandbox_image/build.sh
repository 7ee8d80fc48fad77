#!/usr/bin/env bash
# Build the shesha sandbox image, tagged with a hash of the runner's source:
#   shesha-sandbox:<first 12 hex of sha256(runner.py)>
# Tries python:3.12-slim first; when it cannot be pulled (no Docker Hub), builds an
# offline Debian bookworm base with debootstrap (build-base.sh) and builds FROM that.
# Idempotent: an image that is already there is kept.
#   usage: sandbox_image/build.sh [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runner="$here/../src/shesha/sandbox/runner.py"
log() { printf 'sandbox-image: %s\n' "$*" >&2; }

hash=$(sha256sum "$runner" | cut -c1-64)
tag="shesha-sandbox:${hash:0:12}"
if [ "${1:-}" != "--force" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  log "$tag is up to date."
  exit 0
fi

base=${SHESHA_SANDBOX_BASE:-python:3.12-slim}
offline_base=shesha-sandbox-base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  log "Pulling $base..."
  if ! timeout 120 docker pull -q "$base" >/dev/null 2>&1; then
    log "$base cannot be pulled here; using an offline Debian base ($offline_base)."
    base=$offline_base
    bash "$here/build-base.sh" "$base"
  fi
fi

ctx=$(mktemp -d /tmp/shesha-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$runner" "$ctx/runner.py"
log "Building $tag FROM $base (no network: nothing in it needs one)..."
docker build -q --network none --build-arg "BASE=$base" --build-arg "RUNNER_HASH=$hash" \
  -t "$tag" -t shesha-sandbox:latest "$ctx" >/dev/null
log "Built $tag."
