# docgraph: `make demo` runs the pipeline on the sample corpus; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster
SIM ?= {}
BENCH_NEO4J := env -u NEO4J_URI DOCGRAPH_NEO4J_DIR=/tmp/docgraph-neo4j-bench \
  DOCGRAPH_NEO4J_PORT=17689 DOCGRAPH_NEO4J_HTTP_PORT=17476

.PHONY: install demo dev prod prod-down test bench simulator lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# The instance lives in .dagster/ (SQLite); its settings come from ./dagster.yaml.
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# With Java and Maven and no NEO4J_URI, the demo starts a loopback Neo4j (left running for
# `docgraph ask`; `scripts/neo4j.sh stop` stops it) and writes the graph too.
demo: install $(DAGSTER_HOME)/dagster.yaml
	@if [ -z "$$NEO4J_URI" ] && command -v java >/dev/null && command -v mvn >/dev/null; then \
	  uri=$$(scripts/neo4j.sh start) || exit 1; export NEO4J_URI=$$uri; \
	  echo "Neo4j on $$NEO4J_URI (left running; scripts/neo4j.sh stop stops it)"; \
	elif [ -z "$$NEO4J_URI" ]; then \
	  echo "No Java 17 + Maven here: the Neo4j graph is skipped (install them, or set NEO4J_URI)"; \
	fi; \
	$(BIN)/docgraph demo data/sample

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -w workspace.yaml

prod: install
	scripts/prod.sh up

prod-down:
	scripts/prod.sh down

test: install
	scripts/test.sh

bench: install
	$(BIN)/python bench/chunking.py --json bench/out/chunking.json
	$(BIN)/python bench/llm_throughput.py --json bench/out/llm_throughput.json
	$(BIN)/python bench/pipeline.py --json bench/out/pipeline.json
	# their own Neo4j (they empty the database): never the one `make demo` leaves running
	$(BENCH_NEO4J) $(BIN)/python bench/neo4j_write.py --json bench/out/neo4j_write.json
	$(BENCH_NEO4J) $(BIN)/python bench/graph_step.py --json bench/out/graph_step.json
	$(BIN)/python bench/shared_budget.py --json bench/out/shared_budget.json
	# brings `make prod`'s topology up in a throwaway directory (~15 min for 1,000 documents)
	$(BENCH_NEO4J) $(BIN)/python bench/backfill.py --json bench/out/backfill.json

simulator: install
	$(BIN)/python -m simulator.server --port $${PORT:-8765} --config '$(SIM)'


lint: install
	$(BIN)/ruff check .

clean:
	rm -rf .dagster .pytest_cache .hypothesis bench/out
