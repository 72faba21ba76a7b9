#!/usr/bin/env bash
# Start what the tests need, run pytest, stop what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

was_running=0
scripts/postgres.sh status >/dev/null 2>&1 && was_running=1
DOCGRAPH_PG_URL=$(scripts/postgres.sh start)
export DOCGRAPH_PG_URL
[ "$was_running" = 1 ] || trap 'scripts/postgres.sh stop' EXIT

.venv/bin/python -m pytest "$@"
