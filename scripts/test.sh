#!/usr/bin/env bash
# Start what the tests need (PostgreSQL, Neo4j), run pytest, stop what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

# One test run at a time on this machine: two would share the servers, and the first to
# finish would stop them under the other.
exec 9>/tmp/docgraph-test.lock
flock -n 9 || { echo "test.sh: waiting for another test run to finish" >&2; flock 9; }

started=()
cleanup() { for server in "${started[@]}"; do "scripts/$server.sh" stop || true; done; }
trap cleanup EXIT

scripts/postgres.sh status >/dev/null 2>&1 || started+=(postgres)
DOCGRAPH_PG_URL=$(scripts/postgres.sh start 9>&-)  # servers must not hold the lock
# The tests' own Neo4j (the graph tests empty it): not the one `make demo` leaves running.
export DOCGRAPH_NEO4J_DIR=${DOCGRAPH_TEST_NEO4J_DIR:-/tmp/docgraph-neo4j-test}
export DOCGRAPH_NEO4J_PORT=${DOCGRAPH_TEST_NEO4J_PORT:-17688}
export DOCGRAPH_NEO4J_HTTP_PORT=${DOCGRAPH_TEST_NEO4J_HTTP_PORT:-17475}
scripts/neo4j.sh status >/dev/null 2>&1 || started+=(neo4j)
DOCGRAPH_TEST_NEO4J_URI=$(scripts/neo4j.sh start 9>&-)
export DOCGRAPH_PG_URL DOCGRAPH_TEST_NEO4J_URI

.venv/bin/python -m pytest "$@"
