#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for tests and local Postgres-backed Dagster.
#
#   scripts/postgres.sh start    install (Debian package) if missing, init, start; prints the URL
#   scripts/postgres.sh stop     stop the cluster (data dir is kept for the next start)
#   scripts/postgres.sh status   exit 0 and print the URL if running
#   scripts/postgres.sh url      print the URL
#
# Settings: DOCGRAPH_PG_DIR (default /tmp/docgraph-pg), DOCGRAPH_PG_PORT (default 54329; the
# next free port is used if it is taken by something else), DOCGRAPH_PG_PASSWORD.
# Safe to run twice: a running cluster is reused, a stale pid file is cleaned up.
set -euo pipefail

DIR=${DOCGRAPH_PG_DIR:-/tmp/docgraph-pg}
DATA=$DIR/data
PORT_FILE=$DIR/port
PASSWORD=${DOCGRAPH_PG_PASSWORD:-docgraph}
LOG=$DIR/postgres.log

log() { echo "postgres.sh: $*" >&2; }

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$bin" ] && [ -x "$bin/pg_ctl" ] && echo "$bin"
}

install_postgres() {
  [ -n "$(pg_bin)" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "PostgreSQL is not installed and I cannot apt-get it: install the 'postgresql' package"
    exit 1
  fi
  log "installing PostgreSQL from Debian packages"
  # No default cluster on 5432: we run our own on loopback.
  mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  export DEBIAN_FRONTEND=noninteractive
  local apt_log=/tmp/docgraph-postgres-apt.log
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } \
      >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    log "apt-get failed (full log: $apt_log)"
    exit 1
  fi
  log "installed $(ls /usr/lib/postgresql) (log: $apt_log)"
}

# Root may not run postgres: run as the 'postgres' user the package creates, from /
# (the caller's directory may be private to root, e.g. a mktemp -d checkout).
as_owner() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

url() { echo "postgresql://postgres:${PASSWORD}@127.0.0.1:$(cat "$PORT_FILE")/postgres"; }

running() {
  local bin; bin=$(pg_bin) || return 1
  [ -f "$DATA/PG_VERSION" ] && [ -f "$PORT_FILE" ] && as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

start() {
  install_postgres
  local bin; bin=$(pg_bin)
  if running; then url; return 0; fi
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    local pwfile="$DIR/.pw"
    printf '%s\n' "$PASSWORD" > "$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
    as_owner "$bin/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" \
      --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
  fi
  rm -f "$DATA/postmaster.pid"  # stale after a crash; pg_ctl status said it is not running
  local port=${DOCGRAPH_PG_PORT:-54329}
  for _ in $(seq 1 20); do port_in_use "$port" || break; port=$((port + 1)); done
  port_in_use "$port" && { log "no free port near ${DOCGRAPH_PG_PORT:-54329}"; exit 1; }
  echo "$port" > "$PORT_FILE"
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -k $DIR -c max_connections=200 -c fsync=off" >&2 \
    || { tail -n 30 "$LOG" >&2; exit 1; }
  log "running on 127.0.0.1:$port (data in $DATA)"
  url
}

stop() {
  local bin; bin=$(pg_bin) || return 0
  if running; then as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running && url ;;
  url) url ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
