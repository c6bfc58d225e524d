#!/usr/bin/env bash
# A throwaway PostgreSQL server for the shared-study sweep test (-m postgres): Debian's package,
# a fresh cluster in a temporary folder, trust authentication over a Unix socket, no TCP port.
#
#   eval "$(scripts/postgres.sh start)"   # installs postgresql if missing; exports TUNELOOP_TEST_POSTGRES
#   scripts/postgres.sh stop
set -euo pipefail
DIR=${TUNELOOP_PG_DIR:-/tmp/tuneloop-pg}
PORT=${TUNELOOP_PG_PORT:-54329}

case "${1:-}" in
start)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2
    fi
    BIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    "$0" stop >/dev/null 2>&1 || true
    rm -rf "$DIR" && mkdir -p "$DIR" && chown postgres "$DIR"
    # initdb and the server refuse to run as root: the postgres user Debian's package creates runs them.
    runuser -u postgres -- "$BIN/initdb" -D "$DIR/data" --auth=trust -U postgres >/dev/null
    runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
        -o "-p $PORT -k $DIR -c listen_addresses=''" start >/dev/null
    runuser -u postgres -- "$BIN/createdb" -h "$DIR" -p "$PORT" optuna
    echo "export TUNELOOP_TEST_POSTGRES='postgresql://postgres@/optuna?host=$DIR&port=$PORT'"
    ;;
stop)
    BIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m fast stop
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
