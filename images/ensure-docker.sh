#!/usr/bin/env bash
# Make sure a Docker engine answers, for CI and fresh machines:  bash images/ensure-docker.sh
#
# Idempotent: does nothing when `docker info` already answers. Otherwise (needs root):
#   - installs docker.io from Debian when dockerd is missing (and debootstrap, which
#     `python -m images.build` needs for its local Debian base image),
#   - starts `dockerd --iptables=false --bridge=none` in the background, log in a file
#     (agents run with --network none, so the engine needs no bridge or NAT rules),
#   - waits until `docker info` answers, up to a deadline.
# Env: WARMWIRE_DOCKER_WAIT_S (default 60), WARMWIRE_DOCKERD_LOG (default
#      /var/log/warmwire-dockerd.log), WARMWIRE_SKIP_DEBOOTSTRAP=1 to not install debootstrap.
set -euo pipefail

WAIT_S="${WARMWIRE_DOCKER_WAIT_S:-60}"
LOG="${WARMWIRE_DOCKERD_LOG:-/var/log/warmwire-dockerd.log}"
PROBE_TIMEOUT_S=5      # one `docker info` must not hang the whole wait
RETRY_PAUSE_S=0.1

say() { echo "ensure-docker: $*"; }

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout "$PROBE_TIMEOUT_S" docker info >/dev/null 2>&1
}

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        say "need root to install $* (apt-get); run as root or install it yourself"; exit 1
    fi
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    apt-get install -y -qq "$@" >/dev/null
}

need_debootstrap() {
    if [ "${WARMWIRE_SKIP_DEBOOTSTRAP:-}" != 1 ] && ! command -v debootstrap >/dev/null 2>&1; then
        apt_install debootstrap
    fi
}

if engine_answers; then
    version="$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
    say "engine already answers (Docker $version)"
    need_debootstrap
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io
fi
need_debootstrap

if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but not answering yet; waiting for it"
else
    if [ "$(id -u)" != 0 ]; then say "need root to start dockerd"; exit 1; fi
    mkdir -p "$(dirname "$LOG")"
    say "starting dockerd --iptables=false --bridge=none (log: $LOG)"
    # setsid + nohup: the engine outlives this script and the CI step that ran it.
    setsid nohup dockerd --iptables=false --bridge=none >>"$LOG" 2>&1 < /dev/null &
    DOCKERD_PID=$!
fi

start=$(date +%s.%N)
deadline=$(( $(date +%s) + WAIT_S ))
until engine_answers; do
    if [ -n "${DOCKERD_PID:-}" ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
        say "dockerd exited at start; last lines of $LOG:"
        tail -n 20 "$LOG" 2>/dev/null || true
        exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "no answer from the engine after ${WAIT_S}s; last lines of $LOG:"
        tail -n 20 "$LOG" 2>/dev/null || true
        exit 1
    fi
    sleep "$RETRY_PAUSE_S"
done
say "engine answers after $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")s"
