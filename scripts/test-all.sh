#!/usr/bin/env bash
# `npm test`: every test file against the Docker engine, then the Podman suite
# (scripts/test-podman-suite.sh: the integration files of test/podman-suite.txt against Podman).
# One after the other: on a 2-core machine the two suites at once starve both engines, and timing-
# bound tests (a stats sample, a stalled pull's activity timeout, a TTY resize) then fail for load
# alone (seen in full runs). Fails when either fails. Set BERTH_PODMAN_SUITE=0 to run the Docker
# files only.
set -uo pipefail
cd "$(dirname "$0")/.."

podman_answers() { [ "$(curl -s --max-time 5 --unix-socket /run/podman/podman.sock http://podman/_ping 2>/dev/null)" = OK ]; }
# Outside CI, a machine where Podman cannot be set up (not root) and does not answer runs Docker's files only, and says so.
if [ "${BERTH_PODMAN_SUITE:-1}" != 0 ] && [ "${CI:-}" != true ] && [ "$(id -u)" != 0 ] && ! podman_answers; then
  echo "test-all: no Podman at /run/podman/podman.sock and not root to start one: the Podman suite is left out (CI runs it)" >&2
  BERTH_PODMAN_SUITE=0
fi
docker_log=$(mktemp /tmp/berth-test-docker.XXXXXX.log)
node --import tsx --test --test-reporter=spec --test-concurrency=4 --test-timeout=600000 $(find test -name '*.test.ts' | sort) 2>&1 | tee "$docker_log"
docker_rc=${PIPESTATUS[0]}

podman_rc=0
if [ "${BERTH_PODMAN_SUITE:-1}" != 0 ]; then
  echo
  echo "=== the Podman suite (scripts/test-podman-suite.sh) ==="
  bash scripts/test-podman-suite.sh
  podman_rc=$?
fi
# The Docker files' failures again at the very end, where a reader of the last lines (CI) sees them.
if [ "$docker_rc" != 0 ]; then
  echo
  echo "=== the Docker files' failures again (the full output is above) ==="
  sed -n '/failing tests:/,$p' "$docker_log" | head -300
fi
rm -f "$docker_log"
echo "docker files: exit $docker_rc; Podman suite: exit $podman_rc"
[ "$docker_rc" = 0 ] && [ "$podman_rc" = 0 ]
