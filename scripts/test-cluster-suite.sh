#!/usr/bin/env bash
# Runs the agent integration files of test/cluster-suite.txt again with every agent in cluster mode
# (BERTH_TEST_CLUSTER_SUITE=1, test/support/agent.ts: a one-node cluster over a PostgreSQL database
# per data directory), against the Docker engine, after scripts/test-postgres.sh made sure the test
# server answers. `npm test` runs this after the Docker files. The databases it makes
# (berth_suite_*) are dropped at the start and the end. Before it, the store's unit files
# (`store` lines) run on PostgreSQL schemas.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-postgres.sh
mapfile -t files < <(awk '$1 == "run" { print "test/integration/" $2 }' test/cluster-suite.txt)
mapfile -t store_files < <(awk '$1 == "store" { print $2 }' test/cluster-suite.txt)
for f in "${files[@]}" "${store_files[@]}"; do
  [ -f "$f" ] || { echo "test-cluster-suite: $f (in test/cluster-suite.txt) does not exist" >&2; exit 1; }
done
drop_suite_databases() {
  local port="${BERTH_TEST_PG_PORT:-5499}"
  psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'berth\_suite\_%'" 2>/dev/null |
    while read -r db; do psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
}
drop_suite_databases
trap drop_suite_databases EXIT
echo "=== the store's tests on PostgreSQL (BERTH_TEST_STORE=postgres) ==="
store_status=0
BERTH_TEST_STORE=postgres node --import tsx --test --test-reporter=spec --test-timeout=120000 "${store_files[@]}" || store_status=$?
echo "=== the agent suite in cluster mode, its records in PostgreSQL ==="
export BERTH_TEST_CLUSTER_SUITE=1
suite_status=0
node --import tsx --test --test-reporter=spec --test-concurrency="${BERTH_CLUSTER_SUITE_CONCURRENCY:-4}" --test-timeout=600000 "${files[@]}" || suite_status=$?
[ "$store_status" -eq 0 ] && [ "$suite_status" -eq 0 ]
