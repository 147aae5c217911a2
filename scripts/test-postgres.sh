#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the cluster tests (src/cluster): Debian's PostgreSQL 15,
# run as the postgres user from a directory of its own, on 127.0.0.1 port 5499 (BERTH_TEST_PG_PORT)
# with trust authentication, for local tests only. Idempotent: with a server answering it does nothing.
# Installs postgresql (as root on Debian) when its binaries are missing, as test-engine.sh does for docker.
set -euo pipefail

PORT="${BERTH_TEST_PG_PORT:-5499}"
HOST=127.0.0.1
# One directory per port, so that a second call finds the cluster the first one made.
DIR="${BERTH_TEST_PG_DIR:-/tmp/berth-test-postgres-$PORT}"

log() { printf 'test-postgres: %s\n' "$*" >&2; }

find_bin() {
  for v in 15 16 17 14 13; do
    if [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ]; then echo "/usr/lib/postgresql/$v/bin"; return 0; fi
  done
  return 1
}

BIN=$(find_bin || true)

answers() {
  [ -n "$BIN" ] && "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -U postgres -t 2 >/dev/null 2>&1
}

if answers; then exit 0; fi

if [ "$(id -u)" != 0 ]; then
  echo "test-postgres: no PostgreSQL answers on $HOST:$PORT; start one (trust auth for user postgres), or run as root on Debian so this script can install and start postgresql." >&2
  exit 1
fi

if [ -z "$BIN" ]; then
  log "installing postgresql"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  BIN=$(find_bin)
fi

# The server refuses to run as root: the postgres user owns its directory.
mkdir -p "$DIR"
chown postgres "$DIR"
chmod 700 "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  rm -rf "$DIR/data"
  log "initdb in $DIR/data"
  su postgres -s /bin/sh -c "'$BIN/initdb' -D '$DIR/data' -A trust -U postgres" >/dev/null
fi
# A server killed with its session leaves postmaster.pid behind; pg_ctl starts anyway when that pid is
# not a running postmaster, so nothing to remove here.
log "starting PostgreSQL on $HOST:$PORT (log: $DIR/log)"
su postgres -s /bin/sh -c "'$BIN/pg_ctl' -D '$DIR/data' -o \"-k '$DIR' -p $PORT -c listen_addresses=$HOST -c max_connections=300 -c fsync=off -c synchronous_commit=off\" -l '$DIR/log' -w -t 60 start" >/dev/null

deadline=$((SECONDS + 60))
until answers; do
  if [ $SECONDS -ge $deadline ]; then
    echo "test-postgres: PostgreSQL did not answer on $HOST:$PORT within 60 s; see $DIR/log." >&2
    exit 1
  fi
  sleep 0.5
done
