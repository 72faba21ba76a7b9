"""Many documents written together (GraphWriter.replace_documents) against a real server:
the graph one-by-one writes give, edits that remove only the edited document's facts, one
read-back for many documents, and a document Neo4j refuses failing alone in the asset."""

import json

import neo4j
import pandas as pd
import pytest

from assets.graph import GraphConfig
from assets.keys import GRAPH_EXTRACTION
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from resources.neo4j import (
    GraphWriter,
    cypher,
    duplicate_keys,
    graph_export,
)
from resources.neo4j.export import plan_operators
from resources.neo4j.store import delete_all
from tests.graph.corpus import Doc, disagreeing
from tests.graph.test_graph_assets import graph_run_failures
from tests.graph.test_store import ALPHA, ALPHA_SHORT, BETA, fresh_export
from tests.helpers import checks_of_run, run_pipeline, two_documents


def write_together(writer: GraphWriter, docs: list[Doc], **kwargs):
    return writer.replace_documents(
        [writer.contribution(d.document, d.chunks, d.entities, d.mentions, d.relationships)
         for d in docs], **kwargs)


def test_documents_written_together_give_the_graph_of_one_by_one_writes(graph: GraphWriter):
    docs = [ALPHA, BETA, *disagreeing()]
    one_by_one = fresh_export(graph.driver, graph, *docs)
    for batch_size in (5_000, 2):  # one batch per statement; batches spanning documents
        delete_all(graph.driver)
        stats = write_together(graph, docs, batch_size=batch_size)
        assert graph_export(graph.driver) == one_by_one
        assert duplicate_keys(graph.driver) == 0
    # 4 documents, 7 chunks, 8 entities (one row each, however many documents mention
    # them) with 14 mentions, 7 relationships: in batches of 2
    assert [stats.steps[s].rows for s in ("document", "chunks", "entities", "relationships")
            ] == [4, 7, 8, 7]
    assert stats.batches == 2 + 4 + 4 + 4
    assert stats.nodes_created == 4 + 7 + 8

    again = write_together(graph, docs)
    assert (again.nodes_created, again.nodes_deleted, again.relationships_created,
            again.relationships_deleted) == (0, 0, 0, 0)
    assert graph_export(graph.driver) == one_by_one


def test_an_edited_document_in_a_batch_loses_only_its_own_facts(graph: GraphWriter):
    write_together(graph, [ALPHA, BETA])
    stats = write_together(graph, [ALPHA_SHORT, BETA])
    # as for ALPHA_SHORT alone (test_store): 2 chunks and 2 orphaned entities go, with
    # their 2 HAS_CHUNK, 4 MENTIONS and 2 typed relationships; BETA's facts all stay
    assert (stats.nodes_deleted, stats.relationships_deleted) == (4, 8)
    assert (stats.nodes_created, stats.relationships_created) == (0, 0)
    assert graph_export(graph.driver) == fresh_export(graph.driver, graph, ALPHA_SHORT, BETA)


def test_one_read_back_holds_what_each_document_contributes(graph: GraphWriter):
    write_together(graph, [ALPHA, BETA])
    held = graph.held_many(["alpha", "beta", "never-written"])
    assert held["alpha"] == graph.held("alpha") and held["beta"] == graph.held("beta")
    assert held["alpha"].chunk_ids == {c.id for c in ALPHA.chunks}
    assert held["beta"].relationships == {
        (r.source_key, r.target_key, r.type, r.chunk_id) for r in BETA.relationships}
    assert held["beta"].mentions == {(m.chunk_id, m.entity_key) for m in BETA.mentions}
    assert held["never-written"].rows == 0


# 1: a group per document, the second prepared while the first is written
@pytest.mark.parametrize("documents_per_write", [GraphConfig().documents_per_write, 1])
def test_a_document_neo4j_refuses_fails_alone(instance, chain_graph: neo4j.Driver, tmp_path,
                                              documents_per_write):
    docs = two_documents(tmp_path / "docs", instance)
    a, b = docs["a.md"], docs["b.md"]
    llm = LLMResource(cache_path=str(tmp_path / "cache.sqlite"))  # the offline provider
    assert run_pipeline(instance, [a, b], ["documents", "chunks", "chunk_embeddings",
                                           "graph_extraction"], llm).success
    # An entity name too long for the key index: valid rows, refused by the server only
    # when written (Neo.DatabaseError: "Property value is too large to index").
    store = defs.resources["store"]
    extraction = store.read(GRAPH_EXTRACTION, a, pd.DataFrame)
    entities = json.loads(extraction.at[0, "entities"])
    entities.append({"name": "Y" * 40_000, "type": "Concept", "aliases": []})
    extraction.at[0, "entities"] = json.dumps(entities)
    store.write(GRAPH_EXTRACTION, a, extraction)

    result, [listed] = graph_run_failures(instance, a, b,
                                          documents_per_write=documents_per_write)
    assert (listed["document"], listed["error_class"]) == (a, "graph_write_failed")
    assert "too large to index" in listed["reason"]
    [written] = result.get_asset_materialization_events()
    assert written.partition == b
    assert written.materialization.metadata["write_documents"].value == 1  # the fallback
    checks = checks_of_run(instance, result.run_id)
    assert checks[("neo4j_graph_matches_source", b)].passed
    assert ("neo4j_graph_matches_source", a) not in checks
    records, _, _ = chain_graph.execute_query(
        "MATCH (a:Entity)-[r]->(:Entity) WHERE r.document_key = $key RETURN count(r)", key=b)
    assert records[0][0] > 0


def test_reading_many_documents_seeks_their_keys_in_the_indexes(graph: GraphWriter):
    """What keeps the read before a write and the read-back flat as the graph grows: an
    index seek per document key, never a scan of every chunk or relationship."""
    write_together(graph, [ALPHA, BETA])
    for query in (cypher.DOCUMENTS_CHUNK_IDS, cypher.DOCUMENTS_MENTIONS,
                  cypher.DOCUMENTS_RELATIONSHIPS):
        operators = plan_operators(graph.driver, query, keys=["alpha", "beta"])
        assert not {op for op in operators if "Scan" in op}, (query, operators)
