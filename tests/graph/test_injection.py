"""Model output is data, never Cypher: hostile names, keys and types are stored as plain
values or remapped, the schema stays as it was and other documents are untouched."""

import json

from resources.neo4j import (
    ENTITY_TYPES,
    RELATION_TYPES,
    ChunkRow,
    DocumentRow,
    EntityRow,
    GraphWriter,
    Mention,
    RelationRow,
    graph_export,
    schema_snapshot,
)
from tests.graph.corpus import doc, embedding

HOSTILE = [
    "Robert'); MATCH (n) DETACH DELETE n; //",
    'Quote " and \' and \\ backslash',
    "`backtick` label`:Admin",
    "})-[:OWNS]->(x) DETACH DELETE x //",
    "DETACH DELETE",
    "; MATCH (n) DETACH DELETE n",
    "$rows {key: 'x'} ${injected}",
    "CALL db.clearQueryCaches() /* */",
    "Null \x00 byte and \u202e right-to-left",
]
HOSTILE_TYPES = ["Person`) DETACH DELETE n //", "Admin", "Person:Admin", "", "person"]
HOSTILE_RELATIONS = ["WORKS_FOR]->() DETACH DELETE", "OWNS", "", "works for", "`USES`"]


def hostile_document(key: str) -> tuple:
    document = DocumentRow(key=key, path=HOSTILE[0], title=HOSTILE[3])
    chunk = ChunkRow(f"{key}#0", key, 0, HOSTILE[5], embedding(key))
    entities = [EntityRow(name, name, HOSTILE_TYPES[i % len(HOSTILE_TYPES)], (HOSTILE[2],))
                for i, name in enumerate(HOSTILE)]
    mentions = [Mention(chunk.id, e.key) for e in entities]
    relationships = [RelationRow(a.key, b.key, HOSTILE_RELATIONS[i % len(HOSTILE_RELATIONS)],
                                 key, chunk.id)
                     for i, (a, b) in enumerate(zip(entities, entities[1:], strict=False))]
    return document, [chunk], entities, mentions, relationships


def test_hostile_text_is_stored_verbatim_and_changes_no_schema(graph: GraphWriter):
    bystander = doc("bystander", ("Person:Priya Raman", "WORKS_FOR", "Organization:Acme"))
    bystander.write(graph)
    before_schema = schema_snapshot(graph.driver)
    bystander_export = graph_export(graph.driver)

    stats = graph.replace_document(*hostile_document("evil'); MATCH (n) DETACH DELETE n //"))

    # 9 entities cycle through the 5 types: only "person" (Person) is allowed -> 8 remapped;
    # 8 relationships cycle through 5 types: only "works for" (WORKS_FOR) -> 7 remapped
    assert stats.remapped_labels == 8
    assert stats.remapped_relationship_types == 7
    after = schema_snapshot(graph.driver)
    assert after.constraints == before_schema.constraints
    assert after.indexes == before_schema.indexes
    assert after.property_keys == before_schema.property_keys
    assert set(after.labels) <= {"Document", "Chunk", "Entity", *ENTITY_TYPES}
    assert set(after.relationship_types) <= {"HAS_CHUNK", "MENTIONS", *RELATION_TYPES}

    export = graph_export(graph.driver)
    # nothing of the bystander was lost or changed
    assert set(bystander_export.nodes) <= set(export.nodes)
    assert set(bystander_export.relationships) <= set(export.relationships)
    names = {json.loads(p)["name"] for labels, p in export.nodes if "Entity" in labels}
    assert set(HOSTILE) <= names
    [document] = [json.loads(p) for labels, p in export.nodes if labels == ("Document",)
                  and json.loads(p)["key"] != "bystander"]
    assert document == {"key": "evil'); MATCH (n) DETACH DELETE n //", "path": HOSTILE[0],
                        "title": HOSTILE[3]}
    # and it can be replaced and deleted like any other document
    graph.delete_document(document["key"])
    assert graph_export(graph.driver) == bystander_export
