"""The whole graph in a canonical, sorted form, and the checks tests and assets make on it.

Two exports are equal exactly when the graphs hold the same nodes (labels, properties)
and the same relationships between the same keys, whatever internal ids Neo4j assigned.
Embeddings are replaced by a short hash so exports stay small and printable.
"""

import hashlib
import json
from dataclasses import dataclass

import neo4j

from resources.neo4j import cypher


@dataclass(frozen=True)
class GraphExport:
    nodes: list[tuple[tuple[str, ...], str]]  # (sorted labels, properties as sorted JSON)
    relationships: list[tuple[str, str, str, str]]  # (source key, type, target key, props)


@dataclass(frozen=True)
class SchemaSnapshot:
    labels: tuple[str, ...]
    relationship_types: tuple[str, ...]
    property_keys: tuple[str, ...]
    constraints: tuple[str, ...]
    indexes: tuple[str, ...]


def _canonical(properties: dict) -> str:
    props = dict(properties)
    if props.get("embedding") is not None:
        digest = hashlib.sha256(json.dumps(props["embedding"]).encode()).hexdigest()[:16]
        props["embedding"] = f"sha256:{digest}"
    return json.dumps(props, sort_keys=True, ensure_ascii=False)


def graph_export(driver: neo4j.Driver, database: str | None = None) -> GraphExport:
    nodes, _, _ = driver.execute_query(cypher.EXPORT_NODES, database_=database)
    rels, _, _ = driver.execute_query(cypher.EXPORT_RELATIONSHIPS, database_=database)
    return GraphExport(
        nodes=sorted((tuple(sorted(r["labels"])), _canonical(r["properties"])) for r in nodes),
        relationships=sorted((r["source"], r["type"], r["target"], _canonical(r["properties"]))
                             for r in rels),
    )


def duplicate_keys(driver: neo4j.Driver, database: str | None = None) -> int:
    """Copies beyond the first of any node key (Document, Chunk, Entity) or relationship
    identity (endpoints, type, document_key, chunk_id); 0 in a healthy graph."""
    records, _, _ = driver.execute_query(cypher.DUPLICATE_KEYS, database_=database)
    return records[0]["duplicates"]


def schema_snapshot(driver: neo4j.Driver, database: str | None = None) -> SchemaSnapshot:
    """Labels, relationship types and property keys in use, and the schema's names."""
    def column(query: str, name: str) -> tuple[str, ...]:
        records, _, _ = driver.execute_query(query, database_=database)
        return tuple(r[name] for r in records)

    return SchemaSnapshot(
        labels=column(cypher.LABELS_IN_USE, "label"),
        relationship_types=column(cypher.RELATIONSHIP_TYPES_IN_USE, "type"),
        property_keys=column(cypher.PROPERTY_KEYS_IN_USE, "key"),
        constraints=column(cypher.CONSTRAINTS, "name"),
        indexes=column(cypher.INDEXES, "name"),
    )


def plan_operators(driver: neo4j.Driver, query: str, database: str | None = None,
                   **params: object) -> set[str]:
    """The operators of the plan Neo4j picks for one of cypher.py's statements (EXPLAIN:
    nothing runs); tests use it to pin plans that must not regress."""
    with driver.session(database=database) as session:
        summary = session.run(cypher.EXPLAIN_PREFIX + query, params).consume()
    operators, stack = set(), [summary.plan]
    while stack:
        node = stack.pop()
        operators.add(node["operatorType"].split("@")[0])
        stack.extend(node.get("children", []))
    return operators
