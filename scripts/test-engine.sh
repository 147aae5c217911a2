#!/usr/bin/env bash
# Makes sure a Docker engine answers and the test image exists. Used by `npm test` and `npm run bench`.
# Uses an engine that already answers; otherwise (as root on Debian) installs and starts one.
set -euo pipefail

IMAGE="berth-test/busybox:latest"
DOCKER_BIN=$(command -v /usr/bin/docker || command -v docker || true)

engine_answers() {
  [ -n "$DOCKER_BIN" ] && timeout 10 "$DOCKER_BIN" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

log() { printf 'test-engine: %s\n' "$*" >&2; }

if ! engine_answers; then
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "test-engine: DOCKER_HOST=$DOCKER_HOST is set but no Docker engine answers there." >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "test-engine: no Docker engine answers at /var/run/docker.sock; start one (or set DOCKER_HOST), or run as root on Debian so this script can install and start docker.io." >&2
    exit 1
  fi
  need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx dd || need+=(busybox-static)
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  command -v iptables >/dev/null || need+=(iptables)
  # Tests that kill or pause dockerd start an engine of their own on a bridge made with ip(8).
  command -v ip >/dev/null || need+=(iproute2)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  DOCKER_BIN=/usr/bin/docker
  if ! pgrep -x dockerd >/dev/null; then
    # A session that stopped leaves a stale pid file behind; dockerd refuses to start while it exists.
    rm -f /var/run/docker.pid
    logfile=$(mktemp /tmp/dockerd.XXXXXX.log)
    log "starting dockerd (log: $logfile)"
    nohup dockerd --host unix:///var/run/docker.sock >"$logfile" 2>&1 &
  fi
  deadline=$((SECONDS + 60))
  until engine_answers; do
    if [ $SECONDS -ge $deadline ]; then
      echo "test-engine: dockerd did not answer within 60 s; see ${logfile:-its log}." >&2
      exit 1
    fi
    sleep 0.5
  done
fi

# A tool the tests run, installed from Debian when it is missing: ensure_tool <command> <package> <why>.
ensure_tool() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "test-engine: $3 need $1 (Debian package $2)." >&2
    exit 1
  fi
  log "installing $2"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
# The terminal tests drive berth in a pseudo-terminal through python3's pty module (test/support/pty-driver.py).
ensure_tool python3 python3 "the terminal tests"
# The TLS tests make their CA and certificates with openssl(1).
ensure_tool openssl openssl "the TLS tests"
# The SSH engine test (test/integration/engine-remote.test.ts) runs a loopback sshd of its own.
ensure_tool sshd openssh-server "the SSH engine tests"

# Debian's busybox-static gives a static /bin/busybox; it is needed to build the test image.
if ! "$DOCKER_BIN" image inspect "$IMAGE" >/dev/null 2>&1; then
  if ! { [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx dd; }; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
    else
      echo "test-engine: the test image needs a static busybox at /bin/busybox (Debian package busybox-static)." >&2
      exit 1
    fi
  fi
  d=$(mktemp -d)
  mkdir -p "$d/bin" "$d/tmp" "$d/proc" "$d/sys" "$d/dev" "$d/etc"
  cp /bin/busybox "$d/bin/busybox"
  for a in sh ls echo cat sleep true false head tail dd env yes wc tr id kill ps grep mount; do ln -s busybox "$d/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$d/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>"$d/etc/passwd"
  echo 'root:x:0:' >"$d/etc/group"; echo 'nogroup:x:65534:' >>"$d/etc/group"
  tar -C "$d" -c . | "$DOCKER_BIN" import --change 'ENV PATH=/bin' - "$IMAGE" >/dev/null
  rm -rf "$d"
  log "created $IMAGE"
fi

# Podman's Docker-compatible API beside Docker (issue 17): `npm test` runs the Podman suite
# (scripts/test-podman-suite.sh) in parallel with the Docker files, and `npm run bench` measures both.
if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
  bash "$(dirname "$0")/test-podman.sh"
else
  log "not root: Podman is not set up here (scripts/test-podman.sh needs root to install and start it)"
fi
