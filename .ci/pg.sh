#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the catalog tests (Debian's postgresql, any major version).
#
#   eval "$(.ci/pg.sh start)"    # initdb + start; prints `export ZSLR_TEST_PG_URL=... ZSLR_PG_DIR=...`
#   .ci/pg.sh stop               # stop it and delete its folder (reads $ZSLR_PG_DIR)
#
# PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to an unprivileged
# system user `zslrpg` (created when missing). It listens on a unix socket in its own temp folder
# only (no TCP port to collide with), trusts local connections, and holds nothing worth keeping.
set -euo pipefail

PG_USER=zslrpg
DB_USER=zslr
DB_NAME=zslr_test

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$d" ] && [ -x "$d/initdb" ] || { echo "pg.sh: no PostgreSQL server found under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2; exit 1; }
    echo "$d"
}

as_owner() {  # run a command as the cluster's owner, from a folder that owner can enter
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

start() {
    local bin dir
    bin=$(bindir)
    if [ "$(id -u)" = 0 ] && ! id -u "$PG_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
    dir=$(mktemp -d /tmp/zslr-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown "$PG_USER" "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U "$DB_USER" -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -c listen_addresses='' -c fsync=off -c max_connections=50" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h "$dir" -U "$DB_USER" "$DB_NAME"
    echo "export ZSLR_PG_DIR=$dir"
    echo "export ZSLR_TEST_PG_URL='postgresql+psycopg://$DB_USER@/$DB_NAME?host=$dir'"
}

stop() {
    local dir=${ZSLR_PG_DIR:-}
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "pg.sh: ZSLR_PG_DIR does not name a cluster; nothing to stop" >&2; return 0; }
    as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
