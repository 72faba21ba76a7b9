#!/usr/bin/env bash
# A throwaway Neo4j 5.26 community server on 127.0.0.1 for tests, benchmarks and local runs.
#
#   scripts/neo4j.sh start    fetch from Maven Central if missing, start; prints the Bolt URI
#   scripts/neo4j.sh stop     SIGTERM and wait (the data dir is kept for the next start)
#   scripts/neo4j.sh status   exit 0 and print the URI if running
#   scripts/neo4j.sh uri      print the URI
#
# Settings: DOCGRAPH_NEO4J_DIR (default /tmp/docgraph-neo4j: jars, Maven repository, config,
# data, logs), DOCGRAPH_NEO4J_PORT (Bolt, default 17687) and DOCGRAPH_NEO4J_HTTP_PORT (default
# 17474; for either, the next free port is used if it is taken by something else),
# NEO4J_PASSWORD (default docgraph-local; applied before the first start only),
# DOCGRAPH_NEO4J_HEAP (default 1g), DOCGRAPH_NEO4J_START_TIMEOUT (seconds, default 120).
# Needs Java 17+ and Maven. Safe to run twice: a running server is reused, a stale pid file
# is cleaned up. Measured on 2 cores (idle / busy with another server and test run): cold
# start (download + first start) 14 / 23 s, warm start 5.5 / 10 s, reuse of a running
# server 1 s, stop 0.4 s. The jars take 123 MB; an empty database 2 MB.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${DOCGRAPH_NEO4J_DIR:-/tmp/docgraph-neo4j}
LIB=$DIR/lib
CONF_DIR=$DIR/conf
PID_FILE=$DIR/neo4j.pid
PORT_FILE=$DIR/port
CONSOLE_LOG=$DIR/console.log
USER_LOG=$DIR/logs/neo4j.log
LOG_OFFSET_FILE=$DIR/log-offset
PASSWORD=${NEO4J_PASSWORD:-docgraph-local}
HEAP=${DOCGRAPH_NEO4J_HEAP:-1g}
START_TIMEOUT=${DOCGRAPH_NEO4J_START_TIMEOUT:-120}
PYTHON=${DOCGRAPH_PYTHON:-$REPO/.venv/bin/python}

log() { echo "neo4j.sh: $*" >&2; }
die() { log "$*"; exit 1; }

require_java() {
  command -v java >/dev/null \
    || die "Java is not installed: Neo4j 5.26 needs Java 17 or 21 (Debian: openjdk-17-jre-headless)"
  local version
  version=$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1)
  [ "${version:-0}" -ge 17 ] || die "java is version ${version:-unknown}; Neo4j 5.26 needs 17 or 21"
}

# The jars are tagged with the pom's hash, so editing the pom (a new version) re-fetches.
pom_hash() { sha256sum "$REPO/scripts/neo4j/pom.xml" | cut -c1-64; }

provision() {
  [ -f "$LIB/.pom.sha256" ] && [ "$(cat "$LIB/.pom.sha256")" = "$(pom_hash)" ] && return 0
  command -v mvn >/dev/null \
    || die "Maven is not installed: it fetches Neo4j from Maven Central (Debian: maven)"
  log "fetching Neo4j from Maven Central into $LIB (once, ~125 MB)"
  local mvn_log=$DIR/maven.log staging=$DIR/lib.partial
  rm -rf "$staging"
  # Built from a copy so Maven never writes into the checkout; its repository lives in the
  # cache dir so nothing depends on (or pollutes) ~/.m2.
  cp "$REPO/scripts/neo4j/pom.xml" "$DIR/pom.xml"
  if ! mvn -B -q -f "$DIR/pom.xml" -Dmaven.repo.local="$DIR/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging" \
      >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2
    die "Maven failed to fetch Neo4j (full log: $mvn_log)"
  fi
  ls "$staging"/neo4j-5*.jar >/dev/null 2>&1 || die "Maven ran but no neo4j jar in $staging"
  pom_hash > "$staging/.pom.sha256"
  rm -rf "$LIB"
  mv "$staging" "$LIB"
  rm -rf "$DIR/m2"  # a second copy of the jars (154 MB); a new pom fetches again in seconds
  log "fetched $(ls "$LIB" | grep -c '\.jar$') jars"
}

write_conf() {  # bolt_port http_port
  mkdir -p "$CONF_DIR" "$DIR/home" "$DIR/data" "$DIR/logs" "$DIR/run" "$DIR/plugins" "$DIR/import"
  # Neo4j validates this file strictly: an unknown key stops the server at startup.
  cat > "$CONF_DIR/neo4j.conf" <<EOF
# Written by scripts/neo4j.sh at every start: edit the script, not this file.
server.directories.data=$DIR/data
server.directories.logs=$DIR/logs
server.directories.run=$DIR/run
server.directories.plugins=$DIR/plugins
server.directories.import=$DIR/import
server.directories.transaction.logs.root=$DIR/data/transactions

server.default_listen_address=127.0.0.1
server.default_advertised_address=127.0.0.1
server.bolt.listen_address=127.0.0.1:$1
server.bolt.advertised_address=127.0.0.1:$1
server.http.listen_address=127.0.0.1:$2
server.http.advertised_address=127.0.0.1:$2
server.https.enabled=false
dbms.security.auth_enabled=true
dbms.usage_report.enabled=false

# Heap is given to java directly (-Xms/-Xmx); these are the off-heap budgets.
server.memory.pagecache.size=256m
dbms.memory.transaction.total.max=256m

# A test server: no 256 MB log preallocation, small logs, only the last two kept.
db.tx_log.preallocate=false
db.tx_log.rotation.size=16m
db.tx_log.rotation.retention_policy=2 files

# Bolt's shutdown quiet period (seconds) defaults to 5: SIGTERM would take 5-10 s.
internal.dbms.bolt.netty_server_shutdown_quiet_period=0
EOF
}

set_initial_password() {
  # Only before the first start: afterwards the password lives in the system database.
  [ -d "$DIR/data/databases" ] && return 0
  [ "${#PASSWORD}" -ge 8 ] || die "NEO4J_PASSWORD must have at least 8 characters"
  NEO4J_HOME=$DIR/home NEO4J_CONF=$CONF_DIR java -cp "$LIB/*" org.neo4j.cli.AdminTool \
    dbms set-initial-password "$PASSWORD" >"$DIR/admin.log" 2>&1 \
    || { cat "$DIR/admin.log" >&2; die "setting the initial password failed"; }
}

# Our server's pid, if it is running. The command line must name our config dir, so a pid
# reused by another process after a crash is not mistaken for the server (a zombie has an
# empty command line).
server_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" \
    | grep -qF -- "--config-dir=$CONF_DIR" && echo "$pid"
}

alive() { [ -n "$(tr -d '\0' 2>/dev/null <"/proc/$1/cmdline")" ]; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {  # first free port from $1 on, within 20
  local port=$1
  for _ in $(seq 1 20); do
    port_in_use "$port" || { echo "$port"; return 0; }
    port=$((port + 1))
  done
  return 1
}

uri() {
  [ -f "$PORT_FILE" ] || die "no server has been started in $DIR yet"
  echo "bolt://127.0.0.1:$(cat "$PORT_FILE")"
}

# The first line of the log written by the current start (1 if the log was rotated since).
log_offset() {
  local offset lines
  offset=$(cat "$LOG_OFFSET_FILE" 2>/dev/null || echo 1)
  lines=$(cat "$USER_LOG" 2>/dev/null | wc -l)
  if [ "$lines" -lt $((offset - 1)) ]; then echo 1; else echo "$offset"; fi
}

# Wait until a query answers over Bolt (with the venv's driver; without it, until the Bolt
# port is open) and, after a start (`fresh` = 1), the log says "Started.": Bolt answers
# before the HTTP connector is bound. A reused server was fully started by the start that
# holds no lock any more, and its log may have rotated since.
# Exit status: 0 ready, 1 timeout, 2 process died, 3 password.
wait_ready() {  # pid fresh
  local pid=$1 fresh=$2
  if [ -x "$PYTHON" ] && "$PYTHON" -c 'import neo4j' 2>/dev/null; then
    NEO4J_PASSWORD=$PASSWORD "$PYTHON" - "$(uri)" "$pid" "$START_TIMEOUT" "$USER_LOG" \
      "$(log_offset)" "$fresh" <<'PY'
import os, sys, time
import neo4j
from neo4j.exceptions import AuthError

uri, pid, log = sys.argv[1], sys.argv[2], sys.argv[4]
timeout, offset, fresh = float(sys.argv[3]), int(sys.argv[5]), sys.argv[6] == "1"


def alive():  # a zombie has an empty command line
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return bool(f.read())
    except OSError:
        return False


def started():
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()[offset - 1:]
    except OSError:
        return False
    return any(line.endswith(" Started.") for line in lines)


deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    if not alive():
        sys.exit(2)
    if fresh and not started():
        time.sleep(0.25)
        continue
    try:
        auth = ("neo4j", os.environ["NEO4J_PASSWORD"])
        with neo4j.GraphDatabase.driver(uri, auth=auth, connection_timeout=2) as driver:
            # session.run, not execute_query: the latter retries for 30 s on its own
            with driver.session() as session:
                session.run("RETURN 1").consume()
        sys.exit(0)
    except AuthError:
        sys.exit(3)
    except Exception:
        time.sleep(0.25)
sys.exit(1)
PY
    return $?
  fi
  local offset deadline=$((SECONDS + START_TIMEOUT))
  offset=$(log_offset)
  while [ "$SECONDS" -lt "$deadline" ]; do
    alive "$pid" || return 2
    if port_in_use "$(cat "$PORT_FILE")" && { [ "$fresh" = 0 ] \
        || tail -n +"$offset" "$USER_LOG" 2>/dev/null | grep -q ' Started\.$'; }; then
      return 0
    fi
    sleep 0.25
  done
  return 1
}

explain_failure() {  # status from wait_ready
  case $1 in
    1) log "Neo4j did not answer within ${START_TIMEOUT}s" ;;
    2) log "Neo4j exited during startup" ;;
    3) log "Neo4j rejects NEO4J_PASSWORD: $DIR/data was initialised with another password" \
         "(use that one, or stop and delete $DIR/data)" ;;
  esac
  tail -n +"$(log_offset)" "$USER_LOG" 2>/dev/null | grep -E 'ERROR|WARN|Exception' | tail -n 15 >&2 \
    || true
  tail -n 15 "$CONSOLE_LOG" >&2 2>/dev/null || true
  log "logs: $USER_LOG, $CONSOLE_LOG"
}

stop_pid() {  # pid
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 600); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "Neo4j (pid $pid) did not stop within 60 s of SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

lock() {
  mkdir -p "$DIR"
  # Two concurrent starts (or a start and a stop) must not race for ports and pid files.
  exec 9>"$DIR/.lock"
  flock 9
}

launch() {  # prints the pid of a server started in the background
  # setsid: the server outlives this script and a Ctrl-C in the caller's terminal; 9>&-: it
  # must not inherit the lock. --add-opens are the flags Neo4j's own launcher passes.
  setsid java "-Xms$HEAP" "-Xmx$HEAP" -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow \
    -XX:+DisableExplicitGC -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true \
    -Djdk.nio.maxCachedBufferSize=1024 -Dio.netty.tryReflectionSetAccessible=true \
    --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --enable-native-access=ALL-UNNAMED \
    -cp "$LIB/*" org.neo4j.server.CommunityEntryPoint \
    --home-dir="$DIR/home" --config-dir="$CONF_DIR" \
    </dev/null >"$CONSOLE_LOG" 2>&1 9>&- &
  echo $!
}

start() {
  require_java
  lock
  local pid status=0
  if pid=$(server_pid); then
    wait_ready "$pid" 0 || { status=$?; explain_failure "$status"; exit 1; }
    uri
    return 0
  fi
  rm -f "$PID_FILE"  # stale: the server it names is gone
  provision
  local bolt=$((${DOCGRAPH_NEO4J_PORT:-17687} - 1))
  local http=$((${DOCGRAPH_NEO4J_HTTP_PORT:-17474} - 1))
  local t0=$SECONDS attempt
  for attempt in 1 2 3; do
    bolt=$(free_port $((bolt + 1))) || die "no free port near $((bolt + 1)) for Bolt"
    http=$(free_port $((http + 1))) || die "no free port near $((http + 1)) for HTTP"
    write_conf "$bolt" "$http"
    set_initial_password
    echo "$bolt" > "$PORT_FILE"
    echo $(($(cat "$USER_LOG" 2>/dev/null | wc -l) + 1)) > "$LOG_OFFSET_FILE"
    pid=$(launch)
    echo "$pid" > "$PID_FILE"
    wait_ready "$pid" 1 && break
    status=$?
    stop_pid "$pid"
    rm -f "$PID_FILE"
    # Free when we looked, taken before Neo4j bound it (e.g. by another program's start):
    # try the next ports rather than fail.
    if [ "$status" = 2 ] && [ "$attempt" -lt 3 ] \
        && tail -n +"$(log_offset)" "$USER_LOG" 2>/dev/null | grep -q PortBindException; then
      log "port $bolt or $http was taken while Neo4j started; trying the next ones"
      continue
    fi
    explain_failure "$status"
    exit 1
  done
  log "running on 127.0.0.1:$bolt (pid $pid, ready in $((SECONDS - t0)) s, data in $DIR/data)"
  uri
}

stop() {
  lock
  local pid
  if pid=$(server_pid); then
    stop_pid "$pid"
    log "stopped (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) server_pid >/dev/null && uri ;;
  uri) uri ;;
  *) echo "usage: $0 start|stop|status|uri" >&2; exit 2 ;;
esac
