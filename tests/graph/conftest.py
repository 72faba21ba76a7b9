"""A real Neo4j server for the graph tests.

`neo4j_settings` (defined in tests/conftest.py: the crash tests share it) uses
DOCGRAPH_TEST_NEO4J_URI (and NEO4J_PASSWORD) if set (scripts/test.sh starts the server and
sets it; not NEO4J_URI, which would make every CLI test write the graph), else starts the
server with scripts/neo4j.sh and stops it at the end only if it started it, like `pg_url`.
It is never skipped: no server, no green run. `graph` gives each test an empty database
and a writer; the schema is dropped once per session (a benchmark may have left another
vector dimension) and then kept between tests, as in production. Sessions and benchmarks
sharing a server queue on a lock (resources/neo4j/exclusive.py) rather than empty it under
each other.
"""

import neo4j
import pytest

from resources.neo4j import GraphWriter, delete_all
from tests.graph.corpus import DIMENSIONS


@pytest.fixture
def graph(neo4j_driver: neo4j.Driver) -> GraphWriter:
    """A writer on an empty database with the schema in place."""
    delete_all(neo4j_driver)
    writer = GraphWriter(neo4j_driver)
    writer.ensure_schema(DIMENSIONS)
    return writer
