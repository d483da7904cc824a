#!/usr/bin/env bash
# Start a throwaway PostgreSQL on loopback for the store-parity tests and print its URL.
# Installs Debian's `postgresql` when initdb is missing (needs root and apt). Idempotent:
# a cluster already running in the data dir is reused. Usage: export FLEETWARD_TEST_PG_URL=$(.ci/postgres.sh)
set -euo pipefail
PORT="${FLEETWARD_PG_PORT:-55432}"
DATA="${FLEETWARD_PG_DATA:-/tmp/fleetward-pg-$PORT}"
find_bin() {
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}
if ! BIN=$(find_bin); then
    echo "installing postgresql (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    BIN=$(find_bin)
fi
as_pg() {
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
    as_pg "'$BIN/initdb' -D '$DATA' -U postgres -A trust --no-sync -E UTF8 >/dev/null"
fi
if ! as_pg "'$BIN/pg_ctl' -D '$DATA' status" >/dev/null 2>&1; then
    as_pg "'$BIN/pg_ctl' -D '$DATA' -l '$DATA/server.log' -w -o \"-h 127.0.0.1 -p $PORT -k /tmp -c max_connections=200\" start" >&2
fi
as_pg "'$BIN/psql' -h 127.0.0.1 -p $PORT -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='fleetward_test'\"" | grep -q 1 \
    || as_pg "'$BIN/createdb' -h 127.0.0.1 -p $PORT -U postgres fleetward_test"
echo "postgresql://postgres@127.0.0.1:$PORT/fleetward_test"
