#!/usr/bin/env bash
# `npm test`: every test file against the Docker engine and, in parallel, the Podman suite
# (scripts/test-podman-suite.sh: the integration files of test/podman-suite.txt against Podman).
# The Podman suite's output is kept apart and printed after the Docker run, so neither interleaves.
# Fails when either fails. Set BERTH_PODMAN_SUITE=0 to run the Docker files only.
set -uo pipefail
cd "$(dirname "$0")/.."

podman_pid=
podman_answers() { [ "$(curl -s --max-time 5 --unix-socket /run/podman/podman.sock http://podman/_ping 2>/dev/null)" = OK ]; }
# Outside CI, a machine where Podman cannot be set up (not root) and does not answer runs Docker's files only, and says so.
if [ "${BERTH_PODMAN_SUITE:-1}" != 0 ] && [ "${CI:-}" != true ] && [ "$(id -u)" != 0 ] && ! podman_answers; then
  echo "test-all: no Podman at /run/podman/podman.sock and not root to start one: the Podman suite is left out (CI runs it)" >&2
  BERTH_PODMAN_SUITE=0
fi
if [ "${BERTH_PODMAN_SUITE:-1}" != 0 ]; then
  podman_log=$(mktemp /tmp/berth-podman-suite.XXXXXX.log)
  bash scripts/test-podman-suite.sh >"$podman_log" 2>&1 &
  podman_pid=$!
fi

node --import tsx --test --test-reporter=spec --test-concurrency=4 --test-timeout=600000 $(find test -name '*.test.ts' | sort)
docker_rc=$?

podman_rc=0
if [ -n "$podman_pid" ]; then
  wait "$podman_pid"
  podman_rc=$?
  echo
  echo "=== the Podman suite (scripts/test-podman-suite.sh; exit $podman_rc) ==="
  cat "$podman_log"
  rm -f "$podman_log"
fi
echo "docker files: exit $docker_rc; Podman suite: exit $podman_rc"
[ "$docker_rc" = 0 ] && [ "$podman_rc" = 0 ]
