"""The schema: created before any write, idempotent, and loud about a wrong dimension."""

import pytest

from resources.neo4j import RELATION_TYPES, GraphWriter, SchemaMismatch, schema_snapshot
from tests.graph.corpus import DIMENSIONS, doc

EXPECTED_CONSTRAINTS = {"document_key", "chunk_id", "entity_key"}
EXPECTED_INDEXES = {"entity_type", "chunk_document_key", "chunk_embedding"} | {
    f"{t.lower()}_document_key" for t in RELATION_TYPES}


def test_schema_is_created_and_a_second_run_changes_nothing(graph: GraphWriter):
    before = schema_snapshot(graph.driver)
    assert set(before.constraints) == EXPECTED_CONSTRAINTS
    # a uniqueness constraint brings its own index; Neo4j also keeps two token lookups
    assert set(before.indexes) >= EXPECTED_INDEXES | EXPECTED_CONSTRAINTS
    graph.ensure_schema(DIMENSIONS)
    graph.ensure_schema(DIMENSIONS)
    assert schema_snapshot(graph.driver) == before


def test_the_uniqueness_constraints_are_enforced(graph: GraphWriter):
    doc("a", ("Person:Priya", "WORKS_FOR", "Organization:Acme")).write(graph)
    for statement in ("CREATE (:Document {key: 'a'})", "CREATE (:Chunk {id: 'a#0'})",
                      "CREATE (:Entity {key: 'Person:priya'})"):
        with pytest.raises(Exception, match="already exists"):
            graph.driver.execute_query(statement)


def test_a_vector_index_of_another_dimension_is_reported(graph: GraphWriter):
    with pytest.raises(SchemaMismatch, match=f"has {DIMENSIONS} dimensions, but the "
                                             f"embeddings have {DIMENSIONS * 2}"):
        GraphWriter(graph.driver).ensure_schema(DIMENSIONS * 2)
    graph.ensure_schema(DIMENSIONS)  # still the old index, untouched


@pytest.mark.parametrize("dimensions", [0, -3, 2.5, "8", True])
def test_dimensions_must_be_a_positive_int(graph: GraphWriter, dimensions):
    with pytest.raises(ValueError, match="dimensions must be a positive int"):
        graph.ensure_schema(dimensions)


def test_documents_are_written_only_after_the_schema(graph: GraphWriter):
    with pytest.raises(RuntimeError, match="ensure_schema"):
        doc("a", ("Person:Priya", "USES", "Product:Okta")).write(GraphWriter(graph.driver))
