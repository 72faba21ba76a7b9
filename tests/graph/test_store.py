"""Per-document replace and delete against a real server: idempotent writes, exact
replacement of one document's contribution, shared entities, and honest stats."""

import json

import neo4j
import pytest

from resources.neo4j import (
    EntityRow,
    GraphWriter,
    InvalidContribution,
    Mention,
    cypher,
    duplicate_keys,
    graph_export,
)
from resources.neo4j.changes import plan_changes
from resources.neo4j.contribution import TYPE_RANK
from resources.neo4j.export import plan_operators
from resources.neo4j.store import delete_all
from tests.graph.corpus import Doc, disagreeing, doc

ALPHA = doc("alpha",
            ("Person:Priya Raman", "WORKS_FOR", "Organization:Acme"),
            ("Organization:Acme", "USES", "Product:Okta"),
            ("Person:Marcus Feld", "REPORTED", "Event:Export Timeout"))
BETA = doc("beta",
           ("Person:Marcus Feld", "WORKS_FOR", "Organization:Acme"),
           ("Person:Marcus Feld", "FIXED", "Event:Login Loop"))
# ALPHA again with its first fact only
ALPHA_SHORT = doc("alpha", ("Person:Priya Raman", "WORKS_FOR", "Organization:Acme"))


def relationship_row(r) -> dict:
    return {"source_key": r.source_key, "target_key": r.target_key, "type": r.type,
            "document_key": r.document_key, "chunk_id": r.chunk_id}


def entity_keys(driver: neo4j.Driver) -> set[str]:
    return {json.loads(props)["key"] for labels, props in graph_export(driver).nodes
            if "Entity" in labels}


def fresh_export(driver: neo4j.Driver, writer: GraphWriter, *docs: Doc):
    """The graph these documents give when written into an empty database."""
    delete_all(driver)
    for d in docs:
        d.write(writer)
    return graph_export(driver)


def test_a_first_write_creates_what_the_rows_say(graph: GraphWriter):
    stats = ALPHA.write(graph)
    # 1 document, 3 chunks, 5 entities; 3 HAS_CHUNK, 6 MENTIONS, 3 typed relationships
    assert (stats.nodes_created, stats.relationships_created) == (9, 12)
    assert (stats.nodes_deleted, stats.relationships_deleted, stats.retries) == (0, 0, 0)
    assert stats.steps["relationships"].rows == 3
    assert stats.batches == sum(s.batches for s in stats.steps.values()) == 4
    assert stats.seconds > 0
    export = graph_export(graph.driver)
    assert len(export.nodes) == 9 and len(export.relationships) == 12
    assert ("person:priya raman", "WORKS_FOR", "organization:acme") not in export.relationships
    assert ("Person:priya raman", "WORKS_FOR", "Organization:acme",
            '{"chunk_id": "alpha#0", "document_key": "alpha"}') in export.relationships
    assert (("Entity", "Person"), json.dumps(
        {"aliases": [], "key": "Person:priya raman", "name": "Priya Raman",
         "type": "Person"})) in export.nodes


def test_writing_the_same_documents_twice_changes_nothing(graph: GraphWriter):
    ALPHA.write(graph)
    BETA.write(graph)
    first = graph_export(graph.driver)
    for d in (ALPHA, BETA):
        again = d.write(graph)
        assert (again.nodes_created, again.nodes_deleted, again.relationships_created,
                again.relationships_deleted) == (0, 0, 0, 0)
        # What the document held is not sent again: no relationship row, no new mention.
        assert "relationships" not in again.steps
    assert graph_export(graph.driver) == first
    assert duplicate_keys(graph.driver) == 0


def test_rewriting_with_fewer_facts_removes_exactly_those(graph: GraphWriter):
    ALPHA.write(graph)
    BETA.write(graph)
    assert "Product:okta" in entity_keys(graph.driver)

    stats = ALPHA_SHORT.write(graph)

    # Okta and Export Timeout were alpha's alone; Acme and Marcus Feld are beta's too
    # (Marcus was mentioned by alpha's third chunk, which is gone).
    assert entity_keys(graph.driver) == {
        "Person:priya raman", "Organization:acme", "Person:marcus feld", "Event:login loop"}
    # 2 chunks and 2 orphaned entities; their 2 HAS_CHUNK, 4 MENTIONS, 2 typed relationships
    assert (stats.nodes_deleted, stats.relationships_deleted) == (4, 8)
    assert (stats.nodes_created, stats.relationships_created) == (0, 0)
    # the same graph as if alpha had always been short
    assert graph_export(graph.driver) == fresh_export(graph.driver, graph, ALPHA_SHORT, BETA)


def test_a_fact_asserted_by_two_documents_keeps_both_provenances(graph: GraphWriter):
    fact = ("Person:Priya Raman", "WORKS_FOR", "Organization:Acme")
    doc("one", fact).write(graph)
    doc("two", fact).write(graph)
    rels = [r for r in graph_export(graph.driver).relationships if r[1] == "WORKS_FOR"]
    assert [json.loads(r[3])["document_key"] for r in rels] == ["one", "two"]
    graph.delete_document("one")
    rels = [r for r in graph_export(graph.driver).relationships if r[1] == "WORKS_FOR"]
    assert [json.loads(r[3])["document_key"] for r in rels] == ["two"]
    assert entity_keys(graph.driver) == {"Person:priya raman", "Organization:acme"}


def test_deleting_a_document_leaves_the_others_as_if_it_never_was(graph: GraphWriter):
    ALPHA.write(graph)
    BETA.write(graph)
    stats = graph.delete_document("alpha")
    # the document, its 3 chunks, and Priya, Okta, Export Timeout (alpha's alone)
    assert stats.nodes_deleted == 1 + 3 + 3
    assert graph_export(graph.driver) == fresh_export(graph.driver, graph, BETA)
    graph.delete_document("beta")
    assert graph_export(graph.driver).nodes == []


def test_deleting_an_unknown_document_does_nothing(graph: GraphWriter):
    BETA.write(graph)
    before = graph_export(graph.driver)
    stats = graph.delete_document("never-written")
    assert (stats.nodes_deleted, stats.relationships_deleted) == (0, 0)
    assert graph_export(graph.driver) == before


def test_rows_that_contradict_each_other_write_nothing(graph: GraphWriter):
    BETA.write(graph)
    before = graph_export(graph.driver)
    broken = doc("gamma", ("Person:Ana", "USES", "Product:Okta"))
    with pytest.raises(InvalidContribution, match="unknown entity 'Person:nobody'"):
        graph.replace_document(broken.document, broken.chunks, broken.entities,
                               [*broken.mentions, Mention("gamma#0", "Person:nobody")],
                               broken.relationships)
    with pytest.raises(InvalidContribution, match="has no mention"):
        graph.replace_document(broken.document, broken.chunks,
                               [*broken.entities, EntityRow("Person:bob", "Bob", "Person")],
                               broken.mentions, broken.relationships)
    wrong_dimension = broken.chunks[0].__class__(**{
        **{f: getattr(broken.chunks[0], f) for f in ("id", "document_key", "index", "text")},
        "embedding": [0.5] * 3})
    with pytest.raises(InvalidContribution, match="3-dimensional embedding"):
        graph.replace_document(broken.document, [wrong_dimension], broken.entities,
                               broken.mentions, broken.relationships)
    assert graph_export(graph.driver) == before


def test_shared_entities_do_not_depend_on_the_write_order(graph: GraphWriter):
    one, two = disagreeing()
    forward = fresh_export(graph.driver, graph, one, two)
    backward = fresh_export(graph.driver, graph, two, one)
    assert forward == backward
    [acme] = [n for n in forward.nodes if '"Entity:acme"' in n[1]]
    assert acme == (("Entity", "Organization"), json.dumps(
        {"aliases": ["Acme", "Acme Corp", "Acme Inc."], "key": "Entity:acme", "name": "ACME",
         "type": "Organization"}))


def test_every_batch_is_its_own_transaction(graph: GraphWriter):
    stats = ALPHA.write(graph, batch_size=1)
    assert stats.steps["chunks"].batches == 3
    assert stats.steps["entities"].batches == 5
    assert stats.steps["relationships"].batches == 3
    assert len(stats.steps["relationships"].batch_seconds) == 3
    assert stats.batches == 1 + 3 + 5 + 3
    assert graph_export(graph.driver) == fresh_export(graph.driver, graph, ALPHA)


def test_relationships_are_created_between_two_looked_up_entities(graph: GraphWriter):
    """The plan that keeps writes flat as the graph grows: both ends found by their unique
    key, never a scan of nodes or of a relationship index (which made each batch cost
    proportional to all relationships of its type)."""
    ALPHA.write(graph)
    BETA.write(graph)
    operators = plan_operators(graph.driver, cypher.CREATE_RELATIONSHIPS,
                               rows=[relationship_row(r) for r in ALPHA.relationships])
    assert "Create" in operators
    assert any(op.startswith("NodeUniqueIndexSeek") for op in operators)
    assert not {op for op in operators if "RelationshipIndex" in op or "Scan" in op}


def test_a_write_that_stopped_half_way_is_completed_without_duplicates(graph: GraphWriter):
    """Relationships and mentions are created, not merged, so what a document already
    holds must be read before every write: a write cut off after its entities (as by a
    lost server) and done again leaves each relationship and mention once."""
    BETA.write(graph)
    contribution = graph.contribution(ALPHA.document, ALPHA.chunks, ALPHA.entities,
                                      ALPHA.mentions, ALPHA.relationships)
    plan = plan_changes({"alpha": contribution}, {"alpha": graph.held("alpha")})
    with graph.driver.session() as session:  # alpha's write, cut off after one relationship
        for query, rows in ((cypher.UPSERT_DOCUMENTS, plan.documents),
                            (cypher.UPSERT_CHUNKS, plan.chunks),
                            (cypher.UPSERT_ENTITIES_WITH_MENTIONS, plan.entities),
                            (cypher.CREATE_RELATIONSHIPS, plan.relationships[:1])):
            session.run(query, rows=rows, type_rank=TYPE_RANK).consume()

    again = ALPHA.write(graph)

    assert again.steps["relationships"].rows == 2  # the one written before is not resent
    assert duplicate_keys(graph.driver) == 0
    assert graph_export(graph.driver) == fresh_export(graph.driver, graph, BETA, ALPHA)


def test_the_relationship_create_writes_only_allowlisted_types(graph: GraphWriter):
    """Its type is dynamic: a row that reached it with any other type (contributions remap
    them first) is not written, so the batch's count check rolls the batch back."""
    ALPHA.write(graph)
    row = {**relationship_row(ALPHA.relationships[0]), "type": "OWNS_EVERYTHING"}
    records, _, _ = graph.driver.execute_query(cypher.CREATE_RELATIONSHIPS, rows=[row])
    assert records[0]["written"] == 0
    types, _, _ = graph.driver.execute_query("CALL db.relationshipTypes()")
    assert "OWNS_EVERYTHING" not in {r[0] for r in types}


def test_removing_a_document_takes_back_the_spellings_only_it_gave(graph: GraphWriter):
    a = doc("a", ("Organization:ACME", "USES", "Product:LedgerSync"))
    a.entities = [EntityRow("Organization:acme", "ACME", "Organization", ("Big Blue Widgets",)),
                  EntityRow("Product:ledgersync", "LedgerSync", "Product")]
    b = doc("b", ("Organization:Acme", "USES", "Product:LedgerSync"))
    a.write(graph)
    b.write(graph)

    def acme() -> tuple:
        records, _, _ = graph.driver.execute_query(
            "MATCH (e:Entity {key: 'Organization:acme'}) RETURN e.name, e.aliases")
        return tuple(records[0])

    assert acme() == ("ACME", ["Acme", "Big Blue Widgets"])
    graph.delete_document("a")
    assert acme() == ("Acme", [])
    after = graph_export(graph.driver)
    assert after == fresh_export(graph.driver, graph, b)  # as if A had never been written
