"""The graph's schema: constraints, indexes and the chunk vector index, created
idempotently (also when several writers create them at once), and checked against the
size of the embeddings written."""

import neo4j
from neo4j.exceptions import ClientError

from resources.errors import DocgraphError, ErrorClass
from resources.neo4j import cypher

# IF NOT EXISTS does not cover two writers creating the same rule at the same moment:
# Neo4j reports the twin as one of these. Either way the rule exists.
_CREATED_CONCURRENTLY = frozenset({
    "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists",
    "Neo.ClientError.Schema.IndexAlreadyExists",
    "Neo.ClientError.Schema.ConstraintAlreadyExists",
})


class SchemaMismatch(DocgraphError, RuntimeError):
    """The database's schema disagrees with what this code writes."""

    def __init__(self, message: str):
        super().__init__(ErrorClass.SCHEMA_MISMATCH, message)


def ensure_schema(driver: neo4j.Driver, dimensions: int, database: str | None = None,
                  wait_seconds: int = 300) -> None:
    """Constraints, indexes and the chunk vector index; safe to run any number of times.

    Raises SchemaMismatch if a vector index on Chunk.embedding has another dimension:
    changing the embedding model means dropping that index and re-writing the chunks.
    """
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
        raise ValueError(f"dimensions must be a positive int, not {dimensions!r}")
    for statement in cypher.SCHEMA:
        _create(driver, database, statement)
    existing = _query(driver, database, cypher.CHUNK_VECTOR_INDEXES).records
    if not existing:
        _create(driver, database, cypher.CREATE_VECTOR_INDEX, dimensions=dimensions)
        existing = _query(driver, database, cypher.CHUNK_VECTOR_INDEXES).records
    for index in existing:
        if index["dimensions"] != dimensions:
            raise SchemaMismatch(
                f"vector index {index['name']!r} on Chunk.embedding has "
                f"{index['dimensions']} dimensions, but the embeddings have {dimensions}: "
                f"drop it (DROP INDEX {index['name']}) and re-write the documents")
    _query(driver, database, cypher.AWAIT_INDEXES, seconds=wait_seconds)


def vector_dimensions(driver: neo4j.Driver, database: str | None = None) -> int | None:
    """The size of the chunk vector index, or None if there is none yet."""
    records = _query(driver, database, cypher.CHUNK_VECTOR_INDEXES).records
    return records[0]["dimensions"] if records else None


def drop_schema(driver: neo4j.Driver, database: str | None = None) -> None:
    """Drop every constraint and index ensure_schema creates; for tests and benchmarks."""
    for statement in cypher.DROP_SCHEMA:
        _query(driver, database, statement)


def _create(driver: neo4j.Driver, database: str | None, statement: str,
            **params: object) -> None:
    try:
        _query(driver, database, statement, **params)
    except ClientError as exc:
        if exc.code not in _CREATED_CONCURRENTLY:
            raise


def _query(driver: neo4j.Driver, database: str | None, query: str,
           **params: object) -> neo4j.EagerResult:
    return driver.execute_query(query, params, database_=database)
