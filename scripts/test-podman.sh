#!/usr/bin/env bash
# Makes sure Podman's Docker-compatible API answers at /run/podman/podman.sock and holds the test
# image. Used by scripts/test-engine.sh (after the Docker engine is up: the image comes from it)
# and by scripts/test-podman-suite.sh. Uses a Podman service that already answers; otherwise (as
# root on Debian) installs podman, configures it and starts `podman system service`.
set -euo pipefail

SOCKET=/run/podman/podman.sock
IMAGE="berth-test/busybox:latest"
DOCKER_BIN=$(command -v /usr/bin/docker || command -v docker || true)

log() { printf 'test-podman: %s\n' "$*" >&2; }

podman_answers() {
  [ -S "$SOCKET" ] && [ "$(curl -s --max-time 5 --unix-socket "$SOCKET" http://podman/_ping 2>/dev/null)" = OK ]
}

# The test registries listen on 127.0.0.1 over plain HTTP, as Docker allows for loopback (a prefix
# matches any port). Read at each pull, so a service that already runs sees it too.
if [ "$(id -u)" = 0 ] && [ ! -f /etc/containers/registries.conf.d/50-berth-test.conf ]; then
  mkdir -p /etc/containers/registries.conf.d
  printf '[[registry]]\nlocation = "127.0.0.1"\ninsecure = true\n[[registry]]\nlocation = "localhost"\ninsecure = true\n' >/etc/containers/registries.conf.d/50-berth-test.conf
fi

if ! podman_answers; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-podman: no Podman service answers at $SOCKET; run this script as root on Debian to install and start one." >&2
    exit 1
  fi
  need=()
  command -v podman >/dev/null || need+=(podman)
  command -v curl >/dev/null || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  mkdir -p /etc/containers /run/podman
  # On these machines Podman needs both: crun refuses the host's hybrid cgroup layout ("cgroups in
  # hybrid mode not supported"), and Podman's default ulimits exceed the host's hard limits
  # ("setrlimit RLIMIT_NOFILE: Operation not permitted"). A containers.conf of the machine's own is kept.
  if [ ! -f /etc/containers/containers.conf ]; then
    nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=1048576
    [ "$nproc" = unlimited ] && nproc=4096
    [ "$nofile" -gt 20000 ] && nofile=20000
    [ "$nproc" -gt 4096 ] && nproc=4096
    printf '[containers]\ndefault_ulimits = ["nofile=%s:%s","nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' "$nofile" "$nofile" "$nproc" "$nproc" >/etc/containers/containers.conf
    log "wrote /etc/containers/containers.conf (runc; nofile $nofile, nproc $nproc)"
  fi
  logfile=$(mktemp /tmp/podman-service.XXXXXX.log)
  log "starting podman system service (log: $logfile)"
  rm -f "$SOCKET"
  nohup podman system service --time=0 "unix://$SOCKET" >"$logfile" 2>&1 &
  deadline=$((SECONDS + 60))
  until podman_answers; do
    if [ $SECONDS -ge $deadline ]; then
      echo "test-podman: podman system service did not answer within 60 s; see $logfile." >&2
      exit 1
    fi
    sleep 0.5
  done
fi

# The test image: Docker's (scripts/test-engine.sh builds it), loaded into Podman.
if [ "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCKET" "http://podman/images/$IMAGE/json")" != 200 ]; then
  if [ -z "$DOCKER_BIN" ]; then
    echo "test-podman: the test image comes from the Docker engine, and no docker CLI was found." >&2
    exit 1
  fi
  env -u DOCKER_HOST "$DOCKER_BIN" save "$IMAGE" | curl -s --fail --unix-socket "$SOCKET" -X POST -H 'content-type: application/x-tar' --data-binary @- http://podman/images/load >/dev/null
  log "loaded $IMAGE"
fi
