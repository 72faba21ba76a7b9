"""GraphWriter: replace and delete documents' contributions in sorted UNWIND batches.

A document's contribution is its Document node, its chunks (with their MENTIONS) and the
typed relationships it asserts. Re-writing a document replaces exactly that: new rows are
merged first, then whatever the document no longer asserts is removed, then entities left
with no mention at all. Entities are shared: one node per key (MERGE under a uniqueness
constraint), whatever documents mention it. `replace_documents` does this for many
documents at once (their rows merged and sorted across documents: changes.py), which is
what a backfill's graph step uses; `replace_document` and `delete_document` are the same
write for one.

Each batch is its own `session.execute_write`, so the driver retries transient errors
(deadlocks included); every invocation of a transaction function is counted, so retries
show up in the stats. One writer per document at a time (a Dagster partition); writers of
different documents may run concurrently.
"""

import time
from collections.abc import Callable, Iterable, Sequence

import neo4j
import neo4j.exceptions

from resources.neo4j import cypher
from resources.neo4j.changes import Held, mention_count, plan_changes
from resources.neo4j.contribution import TYPE_RANK, Contribution, build_contribution
from resources.neo4j.model import (
    ChunkRow,
    DocumentRow,
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
    def contribution(
        self,
        document: DocumentRow,
        chunks: Iterable[ChunkRow],
        entities: Iterable[EntityRow],
        mentions: Iterable[Mention],
        relationships: Iterable[RelationRow],
    ) -> Contribution:
        """The document's rows, checked against each other and the schema's vector size:
        raises InvalidContribution (nothing is written) if they contradict each other,
        e.g. a mention of an entity that is not in `entities`."""
        if self.dimensions is None:
            # MERGE without the uniqueness constraints would race into duplicate nodes.
            raise RuntimeError("call ensure_schema(dimensions) before writing documents")
        return build_contribution(document, chunks, entities, mentions, relationships,
                                  self.dimensions)

    def replace_document(self, *rows, batch_size: int | None = None) -> WriteStats:
        """Make the graph hold exactly this contribution of a document: `rows` are
        `contribution`'s (document, chunks, entities, mentions, relationships), refused
        the same way before anything is written."""
        started = time.perf_counter()
        new = self.contribution(*rows)
        return self._apply({new.document.key: new}, batch_size, started)

    def replace_documents(self, contributions: Sequence[Contribution],
                          batch_size: int | None = None) -> WriteStats:
        """Make the graph hold exactly these contributions (from `contribution`), written
        together: each statement's rows span all the documents, so a backfill costs a few
        transactions per `batch_size` rows rather than several per document. The graph is
        the one replacing them one by one would give. Not atomic: a failure leaves the
        batches before it written, and writing the documents again repairs that."""
        started = time.perf_counter()
        new = {c.document.key: c for c in contributions}
        if len(new) != len(contributions):
            raise ValueError("a document is given twice")
        return self._apply(new, batch_size, started)

    def delete_document(self, key: str, batch_size: int | None = None) -> WriteStats:
        """Remove a document's contribution and its node; entities others mention stay."""
        return self._apply({key: None}, batch_size, time.perf_counter())

    def _apply(self, new: dict[str, Contribution | None], batch_size: int | None,
               started: float) -> WriteStats:
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        stats = WriteStats()
        with self.driver.session(database=self.database) as session:
            began = time.perf_counter()
            held = self._held(session, list(new))
            stats.steps["read_current"] = StepStats(
                rows=sum(h.rows for h in held.values()), seconds=time.perf_counter() - began)
            plan = plan_changes(new, held)
            stats.remapped_labels = plan.remapped_labels
            stats.remapped_relationship_types = plan.remapped_relationship_types

            def write(step: str, query: str, rows: list, **kwargs) -> None:
                self._batches(session, stats, step, query, rows, batch_size, **kwargs)

            write("document", cypher.UPSERT_DOCUMENTS, plan.documents)
            write("chunks", cypher.UPSERT_CHUNKS, plan.chunks, expect=len)
            write("entities", cypher.UPSERT_ENTITIES_WITH_MENTIONS, plan.entities,
                  expect=mention_count, type_rank=TYPE_RANK)
            write("relationships", cypher.CREATE_RELATIONSHIPS, plan.relationships, expect=len)
            write("stale_relationships", cypher.DELETE_RELATIONSHIPS, plan.stale_relationships)
            write("stale_mentions", cypher.DELETE_MENTIONS, plan.stale_mentions)
            write("stale_chunks", cypher.DELETE_CHUNKS, plan.stale_chunks)
            write("orphaned_entities", cypher.DELETE_ORPHAN_ENTITIES, plan.orphan_candidates)
            write("refreshed_entities", cypher.REFRESH_ENTITIES, plan.refresh,
                  type_rank=TYPE_RANK)
            write("document", cypher.DELETE_DOCUMENTS, plan.deleted_documents)
        stats.seconds = round(time.perf_counter() - started, 4)
        return stats

    # -- plumbing ----------------------------------------------------------------------
    def held(self, key: str) -> Held:
        """What the database holds for document `key` right now (chunk ids, mentions,
        relationship identities): to check a write against what was meant."""
        return self.held_many([key])[key]

    def held_many(self, keys: Sequence[str]) -> dict[str, Held]:
        """`held` for many documents in one read transaction (three queries)."""
        with self.driver.session(database=self.database) as session:
            return self._held(session, keys)

    def _held(self, session: neo4j.Session, keys: Sequence[str]) -> dict[str, Held]:
        def read(tx: neo4j.ManagedTransaction) -> dict[str, Held]:
            held = {key: Held(key, set(), set(), set()) for key in keys}
            for record in tx.run(cypher.DOCUMENTS_CHUNK_IDS, keys=list(keys)):
                held[record["key"]].chunk_ids.update(record["ids"])
            for record in tx.run(cypher.DOCUMENTS_MENTIONS, keys=list(keys)):
                held[record["key"]].mentions.update((c, e) for c, e in record["pairs"])
            for record in tx.run(cypher.DOCUMENTS_RELATIONSHIPS, keys=list(keys)):
                held[record["key"]].relationships.update(
                    (source, target, record["type"], chunk)
                    for source, target, chunk in record["rows"])
            return held

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


def delete_all(driver: neo4j.Driver, database: str | None = None,
               batch_size: int = 10_000) -> None:
    """Empty the database (schema kept), a batch of nodes per transaction; for tests and
    benchmarks."""
    with driver.session(database=database) as session:
        for statement in cypher.DELETE_ALL:
            session.run(statement, batch_size=batch_size).consume()

