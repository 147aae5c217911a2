#!/usr/bin/env bash
# `npm test`: every test file against the Docker engine, then the agent files again in cluster mode
# (scripts/test-cluster-suite.sh: every agent a one-node cluster over PostgreSQL), then the Podman
# suite (scripts/test-podman-suite.sh: the integration files of test/podman-suite.txt against Podman).
# One after the other: on a 2-core machine two suites at once starve the engines, and timing-bound
# tests (a stats sample, a stalled pull's activity timeout, a TTY resize) then fail for load alone
# (seen in full runs). Fails when any fails. Set BERTH_PODMAN_SUITE=0 to leave the Podman suite out,
# BERTH_CLUSTER_SUITE=0 the cluster one. Each suite's failures are repeated at the very end, where a
# reader of the last lines (CI) sees them.
set -uo pipefail
cd "$(dirname "$0")/.."

podman_answers() { [ "$(curl -s --max-time 5 --unix-socket /run/podman/podman.sock http://podman/_ping 2>/dev/null)" = OK ]; }
# Outside CI, a machine where Podman cannot be set up (not root) and does not answer runs Docker's files only, and says so.
if [ "${BERTH_PODMAN_SUITE:-1}" != 0 ] && [ "${CI:-}" != true ] && [ "$(id -u)" != 0 ] && ! podman_answers; then
  echo "test-all: no Podman at /run/podman/podman.sock and not root to start one: the Podman suite is left out (CI runs it)" >&2
  BERTH_PODMAN_SUITE=0
fi

logs=$(mktemp -d /tmp/berth-test-all.XXXXXX)
trap 'rm -rf "$logs"' EXIT
declare -A rc
# run_suite NAME COMMAND...: runs it, its output shown and kept for the summary.
run_suite() {
  local name=$1
  shift
  echo
  echo "=== $name ==="
  "$@" 2>&1 | tee "$logs/$name.log"
  rc[$name]=${PIPESTATUS[0]}
}

run_suite docker-files node --import tsx --test --test-reporter=spec --test-concurrency=4 --test-timeout=600000 $(find test -name '*.test.ts' | sort)
[ "${BERTH_CLUSTER_SUITE:-1}" != 0 ] && run_suite cluster-suite bash scripts/test-cluster-suite.sh
[ "${BERTH_PODMAN_SUITE:-1}" != 0 ] && run_suite podman-suite bash scripts/test-podman-suite.sh

status=0
summary=""
for name in docker-files cluster-suite podman-suite; do
  [ -n "${rc[$name]+set}" ] || continue
  summary+="$name: exit ${rc[$name]}, "
  if [ "${rc[$name]}" != 0 ]; then
    status=1
    echo
    echo "=== $name: its failures again (the full output is above) ==="
    sed -n '/failing tests:/,$p' "$logs/$name.log" | head -300
  fi
done
echo "${summary%, }"
exit $status
