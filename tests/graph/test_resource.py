"""Neo4jResource: settings from the environment, a driver per run, a working writer."""

import dagster as dg
import pytest

from resources.neo4j import Neo4jSettings, graph_export
from resources.neo4j.resource import Neo4jResource
from tests.graph.corpus import doc


def test_settings_come_from_the_environment_and_hide_the_password(monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    monkeypatch.setenv("NEO4J_PASSWORD", "s3cret-value")
    monkeypatch.delenv("NEO4J_USER", raising=False)
    settings = Neo4jSettings.from_env()
    assert (settings.uri, settings.user, settings.password) == (
        "bolt://127.0.0.1:1", "neo4j", "s3cret-value")
    assert "s3cret" not in repr(settings)
    assert Neo4jSettings.from_env(uri="bolt://elsewhere:7687").uri == "bolt://elsewhere:7687"


def test_the_resource_writes_through_a_driver_it_opens_and_closes(graph, neo4j_settings):
    resource = Neo4jResource(uri=neo4j_settings.uri, password=neo4j_settings.password,
                             batch_size=2)
    with dg.build_resources({"neo4j": resource}) as resources:
        in_run = resources.neo4j
        writer = in_run.writer()
        assert writer.batch_size == 2
        writer.ensure_schema(8)
        stats = doc("alpha", ("Person:Priya", "USES", "Product:Okta")).write(writer)
        assert stats.nodes_created == 1 + 1 + 2
    assert len(graph_export(graph.driver).nodes) == 4
    for closed in (in_run, resource):  # torn down after the run; never set up outside one
        with pytest.raises(dg.DagsterInvariantViolationError, match="outside a run"):
            closed.writer()
