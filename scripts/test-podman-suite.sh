#!/usr/bin/env bash
# Runs the integration files of the areas issue 17 names (tasks, images with the local registry,
# reconcile, prune, agent, exec, stats, health) against Podman's Docker-compatible API, after
# scripts/test-podman.sh made sure it answers. `npm test` runs this after the Docker files.
# The files are test/podman-suite.txt's `run` lines; its `skip` lines name files of those areas that
# cannot run on Podman, each with the reason (a feature Podman lacks is then covered by a test that
# berth says so clearly: BERTH_ENGINE_UNSUPPORTED).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-podman.sh
mapfile -t files < <(awk '$1 == "run" { print "test/integration/" $2 }' test/podman-suite.txt)
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "test-podman-suite: $f (in test/podman-suite.txt) does not exist" >&2; exit 1; }
done
export DOCKER_HOST=unix:///run/podman/podman.sock BERTH_TEST_ENGINE=podman
exec node --import tsx --test --test-reporter=spec --test-concurrency="${BERTH_PODMAN_CONCURRENCY:-2}" --test-timeout=600000 "${files[@]}"
