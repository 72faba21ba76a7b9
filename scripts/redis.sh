#!/usr/bin/env bash
# A Redis server on 127.0.0.1 for the Celery broker of `make prod` (and its tests).
#
#   scripts/redis.sh start    install (Debian package) if missing, start; prints the URL
#   scripts/redis.sh stop     stop the server started here (by its pid)
#   scripts/redis.sh status   exit 0 and print the URL if running
#
# Settings: DOCGRAPH_REDIS_DIR (default /tmp/docgraph-redis), DOCGRAPH_REDIS_PORT (default
# 63790; the next free port is used if it is taken by something else). No persistence: the
# broker's queue is rebuilt by Dagster's run retries, never restored from disk.
# Safe to run twice: a running server is reused, a stale pid file is cleaned up.
set -euo pipefail

DIR=${DOCGRAPH_REDIS_DIR:-/tmp/docgraph-redis}
PORT_FILE=$DIR/port
PID_FILE=$DIR/redis.pid
LOG=$DIR/redis.log

log() { echo "redis.sh: $*" >&2; }

install_redis() {
  command -v redis-server >/dev/null && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "Redis is not installed and I cannot apt-get it: install the 'redis-server' package"
    exit 1
  fi
  log "installing Redis from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  local apt_log=/tmp/docgraph-redis-apt.log
  # policy-rc.d: the package must not start its own server on 6379
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; } \
      >"$apt_log" 2>&1; then
    rm -f /usr/sbin/policy-rc.d
    tail -n 20 "$apt_log" >&2
    log "apt-get failed (full log: $apt_log)"
    exit 1
  fi
  rm -f /usr/sbin/policy-rc.d
  log "installed $(redis-server --version | cut -d' ' -f3) (log: $apt_log)"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

url() { echo "redis://127.0.0.1:$(cat "$PORT_FILE")"; }

running() {
  [ -f "$PID_FILE" ] && [ -f "$PORT_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  # the pid must still be our server (a pid is reused after a reboot)
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-server
}

start() {
  install_redis
  if running; then url; return 0; fi
  mkdir -p "$DIR"
  rm -f "$PID_FILE"
  local port=${DOCGRAPH_REDIS_PORT:-63790}
  for _ in $(seq 1 20); do port_in_use "$port" || break; port=$((port + 1)); done
  port_in_use "$port" && { log "no free port near ${DOCGRAPH_REDIS_PORT:-63790}"; exit 1; }
  echo "$port" > "$PORT_FILE"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$DIR" --save "" --appendonly no \
    --daemonize yes --pidfile "$PID_FILE" --logfile "$LOG" >&2
  for _ in $(seq 1 100); do
    if running && port_in_use "$port"; then
      log "running on 127.0.0.1:$port (pid $(cat "$PID_FILE"))"
      url
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$LOG" >&2
  log "redis-server did not start"
  exit 1
}

stop() {
  running || { rm -f "$PID_FILE"; return 0; }
  local pid; pid=$(cat "$PID_FILE")
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running && url ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
