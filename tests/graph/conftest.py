"""A real Neo4j server for the graph tests.

`neo4j_settings` uses DOCGRAPH_TEST_NEO4J_URI (and NEO4J_PASSWORD) if set (scripts/test.sh
starts the server and sets it; not NEO4J_URI, which would make every CLI test write the
graph), else starts the server with scripts/neo4j.sh and stops it at the end only if it
started it, like `pg_url`. It is never skipped: no server, no green run. `graph` gives
each test an empty database and a writer; the schema is dropped once per session (a
benchmark may have left another vector dimension) and then kept between tests, as in
production. Sessions and benchmarks sharing a server queue on a lock
(resources/neo4j/exclusive.py) rather than empty it under each other.
"""

import os
import subprocess
from collections.abc import Iterator

import neo4j
import pytest

from resources.neo4j import GraphWriter, Neo4jSettings, delete_all, drop_schema
from resources.neo4j.exclusive import exclusive_use
from tests.conftest import REPO
from tests.graph.corpus import DIMENSIONS

NEO4J_SCRIPT = REPO / "scripts" / "neo4j.sh"


@pytest.fixture(scope="session")
def neo4j_settings() -> Iterator[Neo4jSettings]:
    uri = os.environ.get("DOCGRAPH_TEST_NEO4J_URI")
    server = uri or os.environ.get("DOCGRAPH_NEO4J_DIR", "/tmp/docgraph-neo4j")
    with exclusive_use(server):  # another session would empty the database under us
        if uri:
            yield Neo4jSettings.from_env(uri=uri)
            return
        was_running = subprocess.run([NEO4J_SCRIPT, "status"],
                                     capture_output=True).returncode == 0
        started = subprocess.run([NEO4J_SCRIPT, "start"], capture_output=True, text=True)
        if started.returncode != 0:
            pytest.fail(f"scripts/neo4j.sh start failed:\n{started.stderr}", pytrace=False)
        try:
            yield Neo4jSettings.from_env(uri=started.stdout.strip())
        finally:
            if not was_running:
                subprocess.run([NEO4J_SCRIPT, "stop"], check=True)


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_settings: Neo4jSettings) -> Iterator[neo4j.Driver]:
    driver = neo4j_settings.driver()
    try:
        driver.verify_connectivity()
        delete_all(driver)
        drop_schema(driver)
        yield driver
    finally:
        driver.close()


@pytest.fixture
def graph(neo4j_driver: neo4j.Driver) -> GraphWriter:
    """A writer on an empty database with the schema in place."""
    delete_all(neo4j_driver)
    writer = GraphWriter(neo4j_driver)
    writer.ensure_schema(DIMENSIONS)
    return writer


@pytest.fixture
def chain_graph(neo4j_settings: Neo4jSettings, neo4j_driver: neo4j.Driver,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[neo4j.Driver]:
    """An empty database the pipeline writes to (NEO4J_URI set, as `make demo` does); the
    schema is dropped after, since the pipeline's vector index has another size than the
    store tests' one."""
    monkeypatch.setenv("NEO4J_URI", neo4j_settings.uri)
    monkeypatch.setenv("NEO4J_PASSWORD", neo4j_settings.password)
    delete_all(neo4j_driver)
    drop_schema(neo4j_driver)
    yield neo4j_driver
    delete_all(neo4j_driver)
    drop_schema(neo4j_driver)
