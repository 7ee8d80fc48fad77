#!/usr/bin/env bash
# Make sure a Docker daemon answers. Idempotent.
#  - If `docker info` already answers (local daemon, DOCKER_HOST, rootless...), do nothing.
#  - Otherwise, as root on Debian/Ubuntu: install docker.io when dockerd is missing,
#    start dockerd in the background (log: /var/log/shesha-dockerd.log), wait for it.
#  - Elsewhere: print what to do and exit 1.
# It never stops or kills a daemon it did not start.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

daemon_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && daemon_answers; then
  log "Docker daemon answers (${DOCKER_HOST:-unix:///var/run/docker.sock})."
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ]; then
  log "DOCKER_HOST=$DOCKER_HOST is set but no daemon answers there."
  log "Start that daemon, or unset DOCKER_HOST to use a local one."
  exit 1
fi

if [ "$(id -u)" != 0 ]; then
  log "No Docker daemon answers, and this script is not root, so it cannot start one."
  log "Start Docker yourself (e.g. 'sudo systemctl start docker', or Docker Desktop), then re-run."
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "dockerd is not installed and this is not a Debian-like system."
    log "Install Docker Engine: https://docs.docker.com/engine/install/"
    exit 1
  fi
  log "Installing Debian's docker.io (one time)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker.io tini iptables ca-certificates >/dev/null
fi

# A socket file without an answering daemon is stale (e.g. a machine restored from snapshot).
if pgrep -x dockerd >/dev/null 2>&1; then
  log "dockerd is running but does not answer yet; waiting for it."
else
  log "Starting dockerd in the background (log: /var/log/shesha-dockerd.log)..."
  nohup dockerd >/var/log/shesha-dockerd.log 2>&1 &
fi

for _ in $(seq 1 120); do
  if daemon_answers; then
    log "Docker daemon is ready."
    exit 0
  fi
  sleep 0.5
done
log "dockerd did not answer within 60 s. Last lines of /var/log/shesha-dockerd.log:"
tail -n 20 /var/log/shesha-dockerd.log >&2 || true
exit 1
