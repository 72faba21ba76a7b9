"""`neo4j_graph`: the documents' chunks, entities and relationships written to Neo4j.

A sink in its own step and pool (`neo4j`): the writes are bounded by the server, not the
LLM. Per document, the rows are computed from its inputs (assets/graph_rows.py: entities
resolved, relationships tied to the resolved keys) and checked; a document whose rows are
bad fails alone. The good ones are then written together,
`documents_per_write` at a time (GraphWriter.replace_documents, resources/neo4j/store.py:
their rows merged and sorted across documents, a few transactions per `batch_size` rows),
each document's contribution replaced exactly: re-running is idempotent, an edited
document loses the facts only it asserted. A group is written in a thread while the next
group's inputs are read and resolved, and groups are recorded in order once written. If
Neo4j refuses a shared write, its documents are written again one by one, so only the one
at fault fails. One read-back per group checks every document
(`neo4j_graph_matches_source`) before it is recorded.
"""

import contextlib
import dataclasses
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import neo4j.exceptions
import pandas as pd

from assets.automation import chained
from assets.batch import Takeovers, batch_step, check_outputs, data_version, log_check, record
from assets.failures import PartitionError, document_path, raise_failures
from assets.graph_rows import document_graph
from assets.keys import (
    CHUNK_EMBEDDINGS,
    CHUNKS,
    DOCUMENTS,
    GRAPH_EXTRACTION,
    NEO4J_GRAPH,
    NEO4J_POOL,
)
from assets.models import Document
from assets.partitions import documents_partitions
from assets.upstream import Upstream, UpstreamData, read_upstream
from resources.errors import ErrorClass
from resources.neo4j.contribution import Contribution, InvalidContribution
from resources.neo4j.model import DocumentRow
from resources.neo4j.resource import Neo4jResource
from resources.neo4j.schema import SchemaMismatch
from resources.neo4j.settings import CONNECTION_ERRORS, graph_written
from resources.neo4j.store import DEFAULT_BATCH_SIZE, GraphWriter
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

GRAPH_WRITE_VERSION = "neo4j-graph-v1"


GRAPH_INPUTS = [CHUNKS, CHUNK_EMBEDDINGS, GRAPH_EXTRACTION]


class GraphConfig(dg.Config):
    batch_size: int = DEFAULT_BATCH_SIZE  # rows per UNWIND transaction
    # Documents whose rows are merged into one write (a run holds DOCUMENTS_PER_RUN); the
    # next group is prepared while one is written (bench/graph_step.py: README).
    documents_per_write: int = 50


@dataclass(frozen=True)
class _Prepared:
    """A document's rows, checked, and what they were computed from."""

    path: str
    rows: dict
    counts: dict[str, int]
    contribution: Contribution
    provenance: tuple[Upstream, ...]


def _prepare(writer: GraphWriter, store: AssetStore, key: str, path: str,
             data: UpstreamData) -> _Prepared:
    stored = store.read(DOCUMENTS, key, Document)
    rows, counts = document_graph(
        DocumentRow(key, path, stored.title), data.frames[CHUNKS],
        data.frames[CHUNK_EMBEDDINGS], data.frames[GRAPH_EXTRACTION])
    dimensions = next((len(c.embedding) for c in rows["chunks"] if c.embedding), None)
    if dimensions and writer.dimensions != dimensions:
        writer.ensure_schema(dimensions)  # SchemaMismatch if the index has another size
    return _Prepared(path, rows, counts, writer.contribution(**rows), data.provenance)


def _write(writer: GraphWriter, group: dict[str, _Prepared], config: GraphConfig
           ) -> dict[str, tuple[dict, dg.AssetCheckEvaluation]]:
    """Write the documents together, then read back in one transaction what the database
    holds for each and compare it with what was meant."""
    stats = writer.replace_documents([p.contribution for p in group.values()],
                                     batch_size=config.batch_size)
    held = writer.held_many(list(group))
    outcomes = {}
    for key, prepared in group.items():
        meant = prepared.contribution
        differences = {
            name: len(want ^ have) for name, want, have in (
                ("chunks", meant.chunk_ids, held[key].chunk_ids),
                ("mentions", meant.mentions, held[key].mentions),
                ("relationships", meant.relationship_ids, held[key].relationships))
        }
        check = dg.AssetCheckEvaluation(
            asset_key=NEO4J_GRAPH, check_name="neo4j_graph_matches_source",
            partition=key, passed=not any(differences.values()),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={f"{name}_differing": dg.MetadataValue.int(n)
                      for name, n in differences.items()},
        )
        # The server's counters are the shared write's; what resolution remapped is the
        # document's own.
        outcomes[key] = ({**stats.summary(), "write_documents": len(group),
                          "remapped_labels": meant.remapped_labels,
                          "remapped_relationship_types": meant.remapped_relationship_types},
                         check)
    return outcomes


def _write_group(context: dg.AssetExecutionContext, writer: GraphWriter,
                 group: dict[str, _Prepared], config: GraphConfig, uri: str,
                 takeovers: Takeovers,
                 ) -> tuple[dict[str, tuple[dict, dg.AssetCheckEvaluation]],
                            list[PartitionError]]:
    """`_write` for the group, and the documents that failed; if Neo4j refuses the shared
    write, each document again on its own, so that only the one at fault fails. Documents
    a newer run has taken over since they were read are not written (Takeovers)."""
    group = {k: v for k, v in group.items() if not takeovers.leave(NEO4J_GRAPH, k)}
    failures: list[PartitionError] = []
    if not group:
        return {}, failures
    if len(group) > 1:
        try:
            return _write(writer, group, config), failures
        except neo4j.exceptions.ServiceUnavailable as exc:
            raise _lost(uri, exc, f"{len(group)} documents") from exc
        except neo4j.exceptions.TransientError as exc:
            # Still failing after the driver's retries: the server, not a document.
            for key, prepared in group.items():
                failures.append(PartitionError(key, prepared.path,
                                               ErrorClass.GRAPH_WRITE_FAILED,
                                               f"{type(exc).__name__}: {exc}"))
            return {}, failures
        except Exception as exc:  # noqa: BLE001 - which document is at fault is found below
            context.log.warning(f"writing {len(group)} documents together failed "
                                f"({type(exc).__name__}: {exc}); writing them one by one")
    outcomes = {}
    for key, prepared in group.items():
        with _document_failures(context, key, prepared.path, uri, failures):
            outcomes.update(_write(writer, {key: prepared}, config))
    return outcomes, failures


def _lost(uri: str, exc: Exception, what: str) -> dg.Failure:
    return dg.Failure(f"lost Neo4j at {uri} while writing {what}: {exc}")


@contextlib.contextmanager
def _document_failures(context: dg.AssetExecutionContext, key: str, path: str, uri: str,
                       failures: list[PartitionError]) -> Iterator[None]:
    """One document's errors fail that document only; losing the server fails the step."""
    try:
        yield
    except neo4j.exceptions.ServiceUnavailable as exc:  # lost in the middle of the batch
        raise _lost(uri, exc, f"document {key}") from exc
    except SchemaMismatch as exc:  # this document's vectors do not fit the index
        failures.append(PartitionError(key, path, exc.error_class, str(exc)))
    except (InvalidContribution, neo4j.exceptions.Neo4jError) as exc:
        failures.append(PartitionError(key, path, ErrorClass.GRAPH_WRITE_FAILED,
                                       f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - one document's surprise must not stop the rest
        context.log.exception(f"document {key}: unexpected {type(exc).__name__}")
        failures.append(PartitionError(key, path, ErrorClass.INTERNAL_ERROR,
                                       f"{type(exc).__name__}: {exc}"))


NEO4J_GRAPH_SPEC = dg.AssetSpec(
    NEO4J_GRAPH,
    deps=[CHUNKS, CHUNK_EMBEDDINGS, GRAPH_EXTRACTION],
    skippable=True,
    partitions_def=documents_partitions,
    group_name="graph",
    kinds={"neo4j"},
    code_version=GRAPH_WRITE_VERSION,
    description="Each document's Document, Chunk (with its embedding) and Entity nodes, "
    "MENTIONS and typed relationships with provenance, in Neo4j. Re-materializing "
    "replaces exactly the document's contribution. Skips documents whose "
    "chunk_embeddings or graph_extraction gate failed. With DOCGRAPH_GRAPH=off neither "
    "automation nor the daily sweep requests it.",
    # Read where the definitions load (the daemon's code server): off, no run is asked
    # for a server that is not there.
    automation_condition=chained() if graph_written(by_daemon=True) else None,
)


@batch_step(
    specs=[NEO4J_GRAPH_SPEC],
    check_specs=[dg.AssetCheckSpec(
        "neo4j_graph_matches_source", asset=NEO4J_GRAPH, blocking=True,
        partitions_def=documents_partitions,
        description="read back after the write: the document's chunks, mentions and "
        "relationships in Neo4j are exactly the ones computed from its extraction")],
    pool=NEO4J_POOL,
    op_tags={"docgraph/stage": "neo4j"},
)
def neo4j_graph(context: dg.AssetExecutionContext, config: GraphConfig,
                neo4j_db: Neo4jResource, store: AssetStore, registry: DocumentRegistry):
    keys = list(context.partition_keys)
    failures: list[PartitionError] = []
    uri = neo4j_db.settings().uri
    try:
        neo4j_db.driver.verify_connectivity()  # at once, rather than 30 s of driver retries
    except CONNECTION_ERRORS as exc:
        raise dg.Failure(
            f"cannot reach Neo4j at {uri}: start one with "
            f"`scripts/neo4j.sh start` or set NEO4J_URI ({exc})") from exc
    writer = neo4j_db.writer()
    takeovers = Takeovers(context)
    # Neo4j writes one group while this thread reads and resolves the next: the server and
    # Python each keep a core busy. Groups are recorded in order, here, once written.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neo4j-write") as writes:
        written: list[tuple[dict[str, _Prepared], Future]] = []
        for start in range(0, len(keys), config.documents_per_write):
            group = _prepare_group(context, writer, store, registry, [
                key for key in keys[start:start + config.documents_per_write]
                if not takeovers.leave(NEO4J_GRAPH, key)], uri, failures)
            written.append((group, writes.submit(_write_group, context, writer, group,
                                                 config, uri, takeovers)))
            if len(written) > 1:  # the one before is written or nearly: record it
                _record_group(context, store, *written.pop(0), takeovers, failures)
        for group, outcome in written:
            _record_group(context, store, group, outcome, takeovers, failures)
    yield from check_outputs(context)
    raise_failures([dataclasses.replace(f, assets=(NEO4J_GRAPH.to_user_string(),))
                    for f in failures], len(keys))


def _prepare_group(context: dg.AssetExecutionContext, writer: GraphWriter, store: AssetStore,
                   registry: DocumentRegistry, keys: list[str], uri: str,
                   failures: list[PartitionError]) -> dict[str, _Prepared]:
    """The rows of the documents of `keys` that have their inputs and whose rows check; a
    document without them, or whose rows are bad, fails here, alone."""
    inputs, missing = read_upstream(context, store, registry, GRAPH_INPUTS, keys)
    failures += missing
    prepared = {}
    for key, data in inputs.items():
        path = document_path(registry, key)
        with _document_failures(context, key, path, uri, failures):
            prepared[key] = _prepare(writer, store, key, path, data)
    return prepared


def _record_group(context: dg.AssetExecutionContext, store: AssetStore,
                  group: dict[str, _Prepared], outcome: Future, takeovers: Takeovers,
                  failures: list[PartitionError]) -> None:
    """Record a group's documents once its write is done (or add why they failed):
    group by group, so losing the server later loses no finished record. A document a
    newer run took over during the write is left to it; if that run wrote it before
    this one did, Neo4j holds this run's write of the same inputs until the document's
    next write (the window is one group's write)."""
    outcomes, write_failures = outcome.result()
    failures += write_failures
    for key, (stats, check) in outcomes.items():
        if not takeovers.leave(NEO4J_GRAPH, key):
            _record(context, store, key, group[key], stats, check, failures)


def _record(context: dg.AssetExecutionContext, store: AssetStore, key: str,
            prepared: _Prepared, stats: dict, check: dg.AssetCheckEvaluation,
            failures: list[PartitionError]) -> None:
    if not check.passed:  # written, but not what was meant: not materialized
        log_check(context, check, None)
        failures.append(PartitionError(
            key, prepared.path, ErrorClass.GRAPH_WRITE_FAILED, "read back after the write, "
            f"the graph does not hold what the extraction meant: {check.metadata}"))
        return
    rows = prepared.rows
    version = data_version(GRAPH_WRITE_VERSION, *(u.version for u in prepared.provenance))
    metadata = {
        **{k: dg.MetadataValue.int(v) if isinstance(v, int) else
           dg.MetadataValue.float(round(v, 3)) for k, v in stats.items()},
        **{k: dg.MetadataValue.int(v) for k, v in prepared.counts.items()},
        "entities": dg.MetadataValue.int(len(rows["entities"])),
        "relationships": dg.MetadataValue.int(len(rows["relationships"])),
        "mentions": dg.MetadataValue.int(len(rows["mentions"]))}
    logged = record(context, store, NEO4J_GRAPH, key, _summary_frame(rows), metadata,
                    version, GRAPH_WRITE_VERSION, prepared.provenance)
    log_check(context, check, logged)


def _summary_frame(rows: dict) -> pd.DataFrame:
    """What was written for the document (stored so the partition has a value to show)."""
    return pd.DataFrame([{"entity_key": e.key, "name": e.name, "type": e.type}
                         for e in rows["entities"]], columns=["entity_key", "name", "type"])
