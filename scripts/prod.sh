#!/usr/bin/env bash
# The production topology on this machine: PostgreSQL for the Dagster instance (runs, event
# logs, schedules), the document registry, the LLM response cache and the shared LLM budget;
# the daemon with the run queue (parallel runs, run monitoring, automatic run retries); the
# webserver; a Redis broker and N Celery workers (dagster-celery) that run the steps.
#
#   scripts/prod.sh up       start what is not running (PostgreSQL and Redis from Debian
#                            packages if missing); prints the UI's URL and the CLI's env file
#   scripts/prod.sh status   exit 0 if everything runs; one line per part
#   scripts/prod.sh down     stop what up started (workers, daemon and webserver with their
#                            runs; PostgreSQL and Redis only if up started them); nothing is
#                            left listening
#
# Settings: DOCGRAPH_PROD_DIR (default <project>/.prod: instance home, docgraph home, logs,
# pids, one working directory per worker), DOCGRAPH_PROD_DB (database, default docgraph),
# PORT (webserver, default 3000), DOCGRAPH_MAX_RUNS (runs at once, default 4),
# DOCGRAPH_RUN_RETRIES (automatic retries of a failed run, default 2),
# DOCGRAPH_CELERY_WORKERS (default 2), DOCGRAPH_CELERY_CONCURRENCY (steps at once per
# worker, default 2), DOCGRAPH_CELERY_VISIBILITY_SECONDS (after how long a
# step whose worker died is handed to another, default 1800; keep it above the longest
# step), DOCGRAPH_CELERY_SWEEP_SECONDS (how often workers look for such steps, default 10),
# DOCGRAPH_GRAPH=off (a deployment without Neo4j: no graph runs requested),
# scripts/postgres.sh's DOCGRAPH_PG_DIR / DOCGRAPH_PG_PORT and scripts/redis.sh's
# DOCGRAPH_REDIS_DIR / DOCGRAPH_REDIS_PORT.
# Everything listens on 127.0.0.1. Safe to run twice.
# To use the CLI against it: `set -a; . .prod/env; set +a; .venv/bin/docgraph materialize`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${DOCGRAPH_PROD_DIR:-$ROOT/.prod}
BIN=${DOCGRAPH_BIN:-$ROOT/.venv/bin}
PORT=${PORT:-3000}
DB=${DOCGRAPH_PROD_DB:-docgraph}
WORKERS=${DOCGRAPH_CELERY_WORKERS:-2}

log() { echo "prod.sh: $*" >&2; }

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

write_config() {
  local pg_url=$1 broker=$2
  mkdir -p "$DIR/dagster" "$DIR/docgraph" "$DIR/logs" "$DIR/celery"
  cat > "$DIR/env" <<EOF
DAGSTER_HOME=$DIR/dagster
DOCGRAPH_HOME=$DIR/docgraph
DOCGRAPH_PG_URL=$pg_url
DOCGRAPH_REGISTRY_URL=$pg_url
LLM_CACHE_PATH=$pg_url
LLM_BUDGET_URL=$pg_url
DOCGRAPH_CELERY_BROKER=$broker
LLM_MAX_CONCURRENCY=${LLM_MAX_CONCURRENCY:-32}
EOF
  # LLM_MAX_CONCURRENCY: calls in flight per step. The shared budget paces them; a step alone
  # (the other between batches) needs rate x latency in flight to spend it: 100 calls/s at
  # 200 ms is 20, more than the embedded default's 16.
  # A deployment without the graph says so to the CLI too (DOCGRAPH_GRAPH=off).
  if [ -n "${DOCGRAPH_GRAPH:-}" ]; then echo "DOCGRAPH_GRAPH=$DOCGRAPH_GRAPH" >> "$DIR/env"; fi
  # What every Celery worker reads (dagster_celery.app imports it): the broker and where
  # results go; the only configuration the workers share besides the env file. A step is
  # acknowledged when it ends, not when it starts: if its worker dies (kill -9), the
  # worker's parent requeues it at once, or, if the whole worker died, the broker hands it
  # to another worker once the visibility timeout has passed (longer than any step: a
  # step still running then would be handed out twice). Workers look for such steps every
  # sweep period (kombu's default is every ~100 s: 10 s x a throttle of 10).
  cat > "$DIR/celery/dagster_celery_config.py" <<EOF
# Written by scripts/prod.sh.
broker_url = "$broker/0"
result_backend = "$broker/1"
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
broker_transport_options = {"visibility_timeout": ${DOCGRAPH_CELERY_VISIBILITY_SECONDS:-1800},
                            "unacked_restore_interval": ${DOCGRAPH_CELERY_SWEEP_SECONDS:-10},
                            "unacked_restore_throttle": 1}
EOF
  cat > "$DIR/dagster/dagster.yaml" <<EOF
# Written by scripts/prod.sh: the production instance (edit the script, not this file).
storage:  # dagster-postgres with its connections kept open: resources/postgres_storage.py
  custom:
    module: resources.postgres_storage
    class: PooledPostgresStorage
    config:
      postgres_url:
        env: DOCGRAPH_PG_URL
concurrency:
  runs:
    max_concurrent_runs: ${DOCGRAPH_MAX_RUNS:-4}
  pools:
    default_limit: 2
    granularity: op
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 60
run_retries:
  enabled: true
  max_retries: ${DOCGRAPH_RUN_RETRIES:-2}
  # Only runs that crashed (a dead run process): a failed step has already recorded each
  # document's outcome and why; run again on the same input it fails the same way.
  retry_on_asset_or_op_failure: false
telemetry:
  enabled: false
nux:
  enabled: false
EOF
}

ensure_database() {  # the cluster's URL -> the docgraph database's URL
  PYTHONPATH=$ROOT "$BIN/python" - "$1" "$DB" <<'EOF'
import sys
import psycopg2
from resources.engines import sqlalchemy_url
url, name = sys.argv[1], sys.argv[2]
conn = psycopg2.connect(url)
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute(f"CREATE DATABASE {name}")
print(sqlalchemy_url(url.rsplit("/", 1)[0] + "/" + name))
EOF
}

start_server() {  # name, directory, command...: in its own session, so that down stops its
  local name=$1 cwd=$2; shift 2  # children too
  if alive "$name"; then log "$name already running (pid $(cat "$DIR/$name.pid"))"; return; fi
  (set -a; . "$DIR/env"; set +a; mkdir -p "$cwd"; cd "$cwd"
   exec setsid "$@" >"$DIR/logs/$name.log" 2>&1 < /dev/null) &
  echo $! > "$DIR/$name.pid"
  log "$name started (pid $!, log $DIR/logs/$name.log)"
}

wait_ready() {
  for _ in $(seq 1 120); do
    if "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "http://127.0.0.1:$PORT/server_info" 2>/dev/null; then
      return 0
    fi
    alive webserver || { tail -n 30 "$DIR/logs/webserver.log" >&2; log "the webserver died"; exit 1; }
    sleep 1
  done
  log "the webserver did not answer on 127.0.0.1:$PORT in 120 s"; exit 1
}

default_pool_limits() {  # for pools no one has set a limit on yet (the rest take default_limit)
  (set -a; . "$DIR/env"; set +a; PYTHONPATH=$ROOT "$BIN/python" - <<'EOF'
import dagster as dg
from assets.keys import NEO4J_POOL
# One graph step at a time: graph runs then wait in the queue, blocked by their pool, and
# leave the run slots to enrichment (they are short); and one writer never meets another
# on the entities two batches share.
with dg.DagsterInstance.get() as instance:
    if NEO4J_POOL not in instance.event_log_storage.get_concurrency_keys():
        instance.event_log_storage.set_concurrency_slots(NEO4J_POOL, 1)
EOF
  )
}

up() {
  mkdir -p "$DIR"
  if ! "$ROOT/scripts/postgres.sh" status >/dev/null 2>&1; then
    "$ROOT/scripts/postgres.sh" start >/dev/null
    touch "$DIR/started-postgres"
  fi
  if ! "$ROOT/scripts/redis.sh" status >/dev/null 2>&1; then
    "$ROOT/scripts/redis.sh" start >/dev/null
    touch "$DIR/started-redis"
  fi
  write_config "$(ensure_database "$("$ROOT/scripts/postgres.sh" url)")" \
    "$("$ROOT/scripts/redis.sh" status)"
  default_pool_limits
  # Each worker in a working directory of its own: it shares only the env file and the
  # broker's configuration with the rest. Worker slots (workers x concurrency) at least the
  # runs at once: a started run's step never queues behind another run's.
  local i
  for i in $(seq 1 "$WORKERS"); do
    start_server "worker-$i" "$DIR/workers/$i" env PYTHONPATH="$DIR/celery" \
      "$BIN/celery" -A dagster_celery.app worker -n "docgraph-$i@%h" -Q dagster \
      --concurrency "${DOCGRAPH_CELERY_CONCURRENCY:-2}" --prefetch-multiplier 1 --loglevel INFO
  done
  start_server daemon "$ROOT" "$BIN/dagster-daemon" run -w workspace.yaml
  start_server webserver "$ROOT" "$BIN/dagster-webserver" -h 127.0.0.1 -p "$PORT" \
    -w workspace.yaml
  wait_ready
  log "UI on http://127.0.0.1:$PORT; for the CLI: set -a; . $DIR/env; set +a"
}

stop_server() {
  local name=$1
  alive "$name" || { rm -f "$DIR/$name.pid"; return 0; }
  local pid; pid=$(cat "$DIR/$name.pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$DIR/$name.pid"
  log "$name stopped"
}

workers() {  # the workers up started, by their pid files
  local pid
  for pid in "$DIR"/worker-*.pid; do [ -f "$pid" ] && basename "$pid" .pid; done
}

down() {
  stop_server webserver
  stop_server daemon
  local name
  for name in $(workers); do stop_server "$name"; done
  if [ -f "$DIR/started-redis" ]; then
    "$ROOT/scripts/redis.sh" stop
    rm -f "$DIR/started-redis"
  fi
  if [ -f "$DIR/started-postgres" ]; then
    "$ROOT/scripts/postgres.sh" stop
    rm -f "$DIR/started-postgres"
  fi
}

status() {
  local ok=0
  if "$ROOT/scripts/postgres.sh" status >/dev/null 2>&1; then echo "postgres: running"; else echo "postgres: stopped"; ok=1; fi
  if "$ROOT/scripts/redis.sh" status >/dev/null 2>&1; then echo "redis: running"; else echo "redis: stopped"; ok=1; fi
  local name
  for name in daemon webserver $(workers); do
    if alive "$name"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; else echo "$name: stopped"; ok=1; fi
  done
  return $ok
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
