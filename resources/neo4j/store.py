"""GraphWriter: per-document replace and delete in sorted UNWIND batches.

A document's contribution is its Document node, its chunks (with their MENTIONS) and the
typed relationships it asserts. Re-writing a document replaces exactly that: new rows are
merged first, then whatever the document no longer asserts is removed, then entities left
with no mention at all. Entities are shared: one node per key (MERGE under a uniqueness
constraint), whatever documents mention it.

Each batch is its own `session.execute_write`, so the driver retries transient errors
(deadlocks included); every invocation of a transaction function is counted, so retries
show up in the stats. One writer per document at a time (a Dagster partition); writers of
different documents may run concurrently.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import neo4j
import neo4j.exceptions

from resources.neo4j import cypher
from resources.neo4j.contribution import (
    TYPE_RANK,
    Contribution,
    RelationshipId,
    build_contribution,
)
from resources.neo4j.model import (
    ChunkRow,
    Document,
    EntityRow,
    Mention,
    RelationRow,
    StepStats,
    WriteStats,
)
from resources.neo4j.schema import ensure_schema

# bench/neo4j_write.py, 100,000 relationships: 1k / 5k / 10k rows per batch gave 16-23k /
# 23k / 24k relationships/s. 5k is within a few percent of 10k with half the transaction
# memory, and a smaller unit to redo after a deadlock.
DEFAULT_BATCH_SIZE = 5_000
# Another document's writer removed an orphaned entity while this batch was about to
# mention it; the batch is idempotent, and re-running it re-creates the entity.
_ENTITY_NOT_FOUND = "Neo.ClientError.Statement.EntityNotFound"
_MAX_ENTITY_RACE_RETRIES = 5

@dataclass(frozen=True)
class _Current:
    """What a document contributes in the database right now."""

    document_key: str
    chunk_ids: set[str]
    mentions: set[tuple[str, str]]
    relationships: set[RelationshipId]


class GraphWriter:
    def __init__(self, driver: neo4j.Driver, database: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.driver = driver
        self.database = database
        self.batch_size = batch_size
        self.dimensions: int | None = None  # known after ensure_schema

    def ensure_schema(self, dimensions: int, wait_seconds: int = 300) -> None:
        """The schema (resources/neo4j/schema.py), checked against `dimensions`; writes are
        refused until it has run."""
        ensure_schema(self.driver, dimensions, self.database, wait_seconds)
        self.dimensions = dimensions

    # -- writes ------------------------------------------------------------------------
    def replace_document(
        self,
        document: Document,
        chunks: Iterable[ChunkRow],
        entities: Iterable[EntityRow],
        mentions: Iterable[Mention],
        relationships: Iterable[RelationRow],
        batch_size: int | None = None,
    ) -> WriteStats:
        """Make the graph hold exactly this contribution of `document`.

        Raises InvalidContribution (before writing anything) if the rows contradict each
        other, e.g. a mention of an entity that is not in `entities`.
        """
        if self.dimensions is None:
            # MERGE without the uniqueness constraints would race into duplicate nodes.
            raise RuntimeError("call ensure_schema(dimensions) before writing documents")
        started = time.perf_counter()
        contribution = build_contribution(document, chunks, entities, mentions, relationships,
                                          self.dimensions)
        return self._apply(document.key, contribution, batch_size or self.batch_size, started)

    def delete_document(self, key: str, batch_size: int | None = None) -> WriteStats:
        """Remove a document's contribution and its node; entities others mention stay."""
        return self._apply(key, None, batch_size or self.batch_size, time.perf_counter())

    def _apply(self, key: str, new: Contribution | None, batch_size: int,
               started: float) -> WriteStats:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        stats = WriteStats()
        with self.driver.session(database=self.database) as session:
            began = time.perf_counter()
            current = self._current(session, key)
            stats.steps["read_current"] = StepStats(
                rows=len(current.chunk_ids) + len(current.mentions) + len(current.relationships),
                seconds=time.perf_counter() - began)
            if new is not None:
                stats.remapped_labels = new.remapped_labels
                stats.remapped_relationship_types = new.remapped_relationship_types
                doc = new.document
                self._batches(session, stats, "document", cypher.UPSERT_DOCUMENT, [None], 1,
                              key=doc.key, path=doc.path, title=doc.title)
                self._batches(session, stats, "chunks", cypher.UPSERT_CHUNKS, new.chunks,
                              batch_size, expect=len)
                self._batches(session, stats, "entities", cypher.UPSERT_ENTITIES_WITH_MENTIONS,
                              new.entities, batch_size, expect=_mention_count,
                              type_rank=TYPE_RANK)
                self._batches(session, stats, "relationships", cypher.MERGE_RELATIONSHIPS,
                              new.relationships, batch_size, expect=len)
            self._remove_stale(session, stats, current, new, batch_size)
            if new is None:
                self._batches(session, stats, "document", cypher.DELETE_DOCUMENT, [None], 1,
                              key=key)
        stats.seconds = round(time.perf_counter() - started, 4)
        return stats

    def _remove_stale(self, session: neo4j.Session, stats: WriteStats, current: _Current,
                      new: Contribution | None, batch_size: int) -> None:
        keep_chunks = new.chunk_ids if new else set()
        keep_mentions = new.mentions if new else set()
        keep_relationships = new.relationship_ids if new else set()
        keep_entities = new.entity_keys if new else set()
        stale_relationships = [
            {"source_key": s, "target_key": t, "type": kind, "chunk_id": chunk,
             "document_key": current.document_key}
            for s, t, kind, chunk in sorted(current.relationships - keep_relationships)
        ]
        stale_chunks = sorted(current.chunk_ids - keep_chunks)
        # Mentions of deleted chunks go with them (DETACH DELETE).
        stale_mentions = [{"chunk_id": c, "entity_key": e}
                          for c, e in sorted(current.mentions - keep_mentions)
                          if c in keep_chunks]
        orphan_candidates = sorted({e for _, e in current.mentions} - keep_entities)
        self._batches(session, stats, "stale_relationships", cypher.DELETE_RELATIONSHIPS,
                      stale_relationships, batch_size)
        self._batches(session, stats, "stale_mentions", cypher.DELETE_MENTIONS,
                      stale_mentions, batch_size)
        self._batches(session, stats, "stale_chunks", cypher.DELETE_CHUNKS, stale_chunks,
                      batch_size)
        self._batches(session, stats, "orphaned_entities", cypher.DELETE_ORPHAN_ENTITIES,
                      orphan_candidates, batch_size)
        # Entities this document mentioned before may have had spellings only it gave.
        if stale_mentions or stale_chunks or orphan_candidates:
            self._batches(session, stats, "refreshed_entities", cypher.REFRESH_ENTITIES,
                          sorted({e for _, e in current.mentions}), batch_size,
                          type_rank=TYPE_RANK)

    # -- plumbing ----------------------------------------------------------------------
    def held(self, key: str) -> _Current:
        """What the database holds for document `key` right now (chunk ids, mentions,
        relationship identities): to check a write against what was meant."""
        with self.driver.session(database=self.database) as session:
            return self._current(session, key)

    def _current(self, session: neo4j.Session, key: str) -> _Current:
        def read(tx: neo4j.ManagedTransaction) -> _Current:
            chunk_ids = set(tx.run(cypher.DOCUMENT_CHUNK_IDS, key=key).single()["ids"])
            pairs = tx.run(cypher.DOCUMENT_MENTIONS, key=key).single()["pairs"]
            relationships = {(source, target, record["type"], chunk)
                             for record in tx.run(cypher.DOCUMENT_RELATIONSHIPS, key=key)
                             for source, target, chunk in record["rows"]}
            return _Current(key, chunk_ids, {(c, e) for c, e in pairs}, relationships)

        return session.execute_read(read)

    def _batches(self, session: neo4j.Session, stats: WriteStats, step: str, query: str,
                 rows: list, batch_size: int, expect: Callable[[list], int] | None = None,
                 **params: object) -> None:
        """`expect`: how many rows the query must report written for a batch; fewer means
        a node it MATCHes is missing, and the batch is rolled back rather than half done."""
        if not rows:
            return
        step_stats = stats.steps.setdefault(step, StepStats())
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            began = time.perf_counter()
            counters = self._write(session, stats, step, query, {"rows": batch, **params},
                                   expect(batch) if expect else None)
            elapsed = time.perf_counter() - began
            stats.nodes_created += counters.nodes_created
            stats.nodes_deleted += counters.nodes_deleted
            stats.relationships_created += counters.relationships_created
            stats.relationships_deleted += counters.relationships_deleted
            stats.properties_set += counters.properties_set
            stats.labels_added += counters.labels_added
            stats.labels_removed += counters.labels_removed
            stats.batches += 1
            step_stats.rows += len(batch)
            step_stats.batches += 1
            step_stats.seconds += elapsed
            step_stats.batch_seconds.append(round(elapsed, 4))

    def _write(self, session: neo4j.Session, stats: WriteStats, step: str, query: str,
               params: dict, expected: int | None) -> neo4j.SummaryCounters:
        calls = 0

        def work(tx: neo4j.ManagedTransaction) -> neo4j.SummaryCounters:
            nonlocal calls
            calls += 1
            result = tx.run(query, params)
            record = result.single()
            if expected is not None and record["written"] != expected:
                raise RuntimeError(f"{step}: a batch wrote {record['written']} of {expected} "
                                   "rows: a node it refers to is missing; rolled back")
            return result.consume().counters

        try:
            for attempt in range(_MAX_ENTITY_RACE_RETRIES + 1):
                try:
                    return session.execute_write(work)
                except neo4j.exceptions.ClientError as error:
                    if error.code != _ENTITY_NOT_FOUND or attempt == _MAX_ENTITY_RACE_RETRIES:
                        raise
            raise AssertionError("unreachable")
        finally:
            stats.retries += max(calls - 1, 0)


def _mention_count(entity_rows: list[dict]) -> int:
    return sum(len(row["chunk_ids"]) for row in entity_rows)


def delete_all(driver: neo4j.Driver, database: str | None = None,
               batch_size: int = 10_000) -> None:
    """Empty the database (schema kept), a batch of nodes per transaction; for tests and
    benchmarks."""
    with driver.session(database=database) as session:
        for statement in cypher.DELETE_ALL:
            session.run(statement, batch_size=batch_size).consume()

