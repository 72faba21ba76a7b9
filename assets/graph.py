"""`neo4j_graph`: each document's chunks, entities and relationships written to Neo4j.

A sink in its own step and pool (`neo4j`): the writes are bounded by the server, not the
LLM. Per document: the extracted entities are resolved (resources/graph_resolution.py,
a pure function), relationships are tied to the resolved keys, and the writer replaces
exactly that document's contribution (resources/neo4j/store.py): re-running is
idempotent, an edited document loses the facts only it asserted.
"""

import dataclasses
import json

import dagster as dg
import neo4j.exceptions
import pandas as pd

from assets.automation import chained
from assets.batch import (
    PartitionError,
    check_outputs,
    data_version,
    document_path,
    log_check,
    raise_failures,
    read_upstream,
    record,
)
from assets.keys import CHUNK_EMBEDDINGS as CHUNK_EMBEDDINGS_KEY
from assets.keys import CHUNKS, DOCUMENTS, DOCUMENTS_PER_RUN, NEO4J_POOL
from assets.keys import GRAPH_EXTRACTION as GRAPH_EXTRACTION_KEY
from assets.keys import NEO4J_GRAPH as NEO4J_GRAPH_KEY
from assets.models import Document
from assets.partitions import documents_partitions
from resources.graph_resolution import EntityMention, resolve_entities
from resources.neo4j.contribution import InvalidContribution, build_contribution
from resources.neo4j.model import ChunkRow, EntityRow, Mention, RelationRow
from resources.neo4j.model import Document as GraphDocument
from resources.neo4j.resource import Neo4jResource
from resources.neo4j.schema import SchemaMismatch
from resources.neo4j.settings import CONNECTION_ERRORS
from resources.neo4j.store import DEFAULT_BATCH_SIZE, GraphWriter
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

GRAPH_WRITE_VERSION = "neo4j-graph-v1"


class GraphConfig(dg.Config):
    batch_size: int = DEFAULT_BATCH_SIZE  # rows per UNWIND transaction


def document_graph(document: GraphDocument, chunks: pd.DataFrame, embeddings: pd.DataFrame,
                   extraction: pd.DataFrame) -> tuple[dict, dict[str, int]]:
    """The writer's rows for one document, and counts of what resolution dropped or
    remapped. Chunks whose extraction failed still become nodes, without entities."""
    vectors = dict(zip(embeddings["chunk_id"], embeddings["embedding"], strict=True))
    extracted = extraction.set_index("chunk_id")
    per_chunk = {cid: (json.loads(row.entities), json.loads(row.relationships))
                 for cid, row in extracted.iterrows() if pd.isna(row.error_class)}
    resolution = resolve_entities(
        EntityMention(e["name"], e["type"], tuple(e["aliases"]))
        for entities, _ in per_chunk.values() for e in entities)
    mentions, relations, unresolved = set(), set(), 0
    for chunk_id, (entities, relationships) in per_chunk.items():
        for entity in entities:
            if key := resolution.key_for(entity["name"]):
                mentions.add(Mention(chunk_id, key))
        for rel in relationships:
            source, target = resolution.key_for(rel["source"]), resolution.key_for(rel["target"])
            if source is None or target is None or source == target:
                unresolved += 1  # names no entity of the document carries, or a self-loop
                continue
            relations.add(RelationRow(source, target, rel["type"], document.key, chunk_id))
            mentions.update({Mention(chunk_id, source), Mention(chunk_id, target)})
    rows = {
        "document": document,
        "chunks": [ChunkRow(c.chunk_id, document.key, int(c.chunk_index), c.text,
                            _vector(vectors.get(c.chunk_id))) for c in chunks.itertuples()],
        "entities": [EntityRow(e.key, e.name, e.type, e.aliases) for e in resolution.entities],
        "mentions": sorted(mentions, key=lambda m: (m.chunk_id, m.entity_key)),
        "relationships": sorted(relations, key=lambda r: (r.source_key, r.target_key, r.type,
                                                          r.chunk_id)),
    }
    return rows, {"relations_unresolved": unresolved, "names_dropped": resolution.dropped,
                  "entity_types_remapped": resolution.remapped_types}


def _vector(value) -> list[float] | None:
    return None if value is None else [float(x) for x in value]


def _write(writer: GraphWriter, key: str, rows: dict, config: GraphConfig
           ) -> tuple[dict, dg.AssetCheckEvaluation]:
    """Write the document, then read back what the database holds for it and compare."""
    dimensions = next((len(c.embedding) for c in rows["chunks"] if c.embedding), None)
    if dimensions and writer.dimensions != dimensions:
        writer.ensure_schema(dimensions)
    stats = writer.replace_document(**rows, batch_size=config.batch_size)
    meant = build_contribution(rows["document"], rows["chunks"], rows["entities"],
                               rows["mentions"], rows["relationships"], dimensions)
    held = writer.held(key)
    differences = {
        name: len(want ^ have) for name, want, have in (
            ("chunks", meant.chunk_ids, held.chunk_ids),
            ("mentions", meant.mentions, held.mentions),
            ("relationships", meant.relationship_ids, held.relationships))
    }
    check = dg.AssetCheckEvaluation(
        asset_key=NEO4J_GRAPH_KEY, check_name="neo4j_graph_matches_source", partition=key,
        passed=not any(differences.values()), severity=dg.AssetCheckSeverity.ERROR,
        metadata={f"{name}_differing": dg.MetadataValue.int(n)
                  for name, n in differences.items()},
    )
    return stats.summary(), check


NEO4J_GRAPH_SPEC = dg.AssetSpec(
    NEO4J_GRAPH_KEY,
    deps=[CHUNKS, CHUNK_EMBEDDINGS_KEY, GRAPH_EXTRACTION_KEY],
    skippable=True,
    partitions_def=documents_partitions,
    group_name="graph",
    kinds={"neo4j"},
    code_version=GRAPH_WRITE_VERSION,
    description="Each document's Document, Chunk (with its embedding) and Entity nodes, "
    "MENTIONS and typed relationships with provenance, in Neo4j. Re-materializing "
    "replaces exactly the document's contribution. Skips documents whose "
    "chunk_embeddings or graph_extraction gate failed.",
    automation_condition=chained(),
)


@dg.multi_asset(
    specs=[NEO4J_GRAPH_SPEC],
    check_specs=[dg.AssetCheckSpec(
        "neo4j_graph_matches_source", asset=NEO4J_GRAPH_KEY, blocking=True,
        partitions_def=documents_partitions,
        description="read back after the write: the document's chunks, mentions and "
        "relationships in Neo4j are exactly the ones computed from its extraction")],
    can_subset=True,
    pool=NEO4J_POOL,
    op_tags={"docgraph/stage": "neo4j"},
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=DOCUMENTS_PER_RUN),
)
def neo4j_graph(context: dg.AssetExecutionContext, config: GraphConfig,
                neo4j_db: Neo4jResource, store: AssetStore, registry: DocumentRegistry):
    keys = list(context.partition_keys)
    inputs, failures = read_upstream(
        context, store, registry, [CHUNKS, CHUNK_EMBEDDINGS_KEY, GRAPH_EXTRACTION_KEY], keys)
    try:
        neo4j_db.driver.verify_connectivity()  # at once, rather than 30 s of driver retries
    except CONNECTION_ERRORS as exc:
        raise dg.Failure(
            f"cannot reach Neo4j at {neo4j_db.settings().uri}: start one with "
            f"`scripts/neo4j.sh start` or set NEO4J_URI ({exc})") from exc
    writer = neo4j_db.writer()
    for key, data in inputs.items():
        path = document_path(registry, key)
        try:
            stored = store.read(DOCUMENTS, key, Document)
            rows, counts = document_graph(
                GraphDocument(key, path, stored.title), data.frames[CHUNKS],
                data.frames[CHUNK_EMBEDDINGS_KEY], data.frames[GRAPH_EXTRACTION_KEY])
            stats, check = _write(writer, key, rows, config)
        except neo4j.exceptions.ServiceUnavailable as exc:  # lost in the middle of the batch
            raise dg.Failure(f"lost Neo4j at {neo4j_db.settings().uri} while writing "
                             f"document {key}: {exc}") from exc
        except SchemaMismatch as exc:  # this document's vectors do not fit the index
            failures.append(PartitionError(key, path, "schema_mismatch", str(exc)))
            continue
        except (InvalidContribution, neo4j.exceptions.Neo4jError) as exc:
            failures.append(PartitionError(key, path, "graph_write_failed",
                                           f"{type(exc).__name__}: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - one document's surprise must not stop the rest
            context.log.exception(f"document {key}: unexpected {type(exc).__name__}")
            failures.append(PartitionError(key, path, "internal_error",
                                           f"{type(exc).__name__}: {exc}"))
            continue
        if not check.passed:  # written, but not what was meant: not materialized
            log_check(context, check, None)
            failures.append(PartitionError(
                key, path, "graph_write_failed", "read back after the write, the graph does not "
                f"hold what the extraction meant: {check.metadata}"))
            continue
        version = data_version(GRAPH_WRITE_VERSION, *(u.version for u in data.provenance))
        logged = record(context, store, NEO4J_GRAPH_KEY, key, _summary_frame(rows),
               {**{k: dg.MetadataValue.int(v) if isinstance(v, int) else
                   dg.MetadataValue.float(round(v, 3)) for k, v in stats.items()},
                **{k: dg.MetadataValue.int(v) for k, v in counts.items()},
                "entities": dg.MetadataValue.int(len(rows["entities"])),
                "relationships": dg.MetadataValue.int(len(rows["relationships"])),
                "mentions": dg.MetadataValue.int(len(rows["mentions"]))},
               version, GRAPH_WRITE_VERSION, data.provenance)
        log_check(context, check, logged)
    yield from check_outputs(context)
    raise_failures([dataclasses.replace(f, assets=(NEO4J_GRAPH_KEY.to_user_string(),))
                    for f in failures], len(keys))


def _summary_frame(rows: dict) -> pd.DataFrame:
    """What was written for the document (stored so the partition has a value to show)."""
    return pd.DataFrame([{"entity_key": e.key, "name": e.name, "type": e.type}
                         for e in rows["entities"]], columns=["entity_key", "name", "type"])
