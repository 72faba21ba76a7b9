"""The knowledge graph in Neo4j: schema, replace and delete of documents' contributions
(one or many at a time), export and retrieval. Plain driver code; Dagster appears only in
`resource.py`, and every Cypher statement lives in `cypher.py`."""

from resources.neo4j.contribution import InvalidContribution
from resources.neo4j.export import (
    GraphExport,
    SchemaSnapshot,
    duplicate_keys,
    graph_export,
    schema_snapshot,
)
from resources.neo4j.model import (
    ENTITY_TYPES,
    RELATION_TYPES,
    ChunkRow,
    DocumentRow,
    EntityRow,
    Mention,
    RelationRow,
    StepStats,
    WriteStats,
)
from resources.neo4j.retrieve import Neighbour, RetrievedChunk, RetrievedEntity, nearest_chunks
from resources.neo4j.schema import SchemaMismatch, drop_schema, vector_dimensions
from resources.neo4j.settings import Neo4jSettings
from resources.neo4j.store import DEFAULT_BATCH_SIZE, GraphWriter, delete_all

__all__ = [
    "DEFAULT_BATCH_SIZE", "ENTITY_TYPES", "RELATION_TYPES", "ChunkRow", "DocumentRow",
    "EntityRow", "GraphExport", "GraphWriter", "InvalidContribution", "Mention",
    "Neighbour", "Neo4jSettings", "RelationRow", "RetrievedChunk", "RetrievedEntity",
    "SchemaMismatch", "SchemaSnapshot", "StepStats", "WriteStats", "delete_all", "drop_schema",
    "duplicate_keys", "graph_export", "nearest_chunks", "schema_snapshot", "vector_dimensions",
]
