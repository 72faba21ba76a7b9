"""`chunk_metadata`: an LLM's title, summary, keywords, category, language and personal-data
flag for every chunk, one row per chunk, failures kept with their error class."""

import dagster as dg
import pandas as pd

from assets.batch import PartitionError, data_version
from assets.enrichment import (
    EnrichConfig,
    llm_spec,
    partition_metrics,
    read_upstream,
    record_judged,
    run_llm,
    success_rate_spec,
)
from assets.ingestion import CHUNKS
from assets.models import ChunkMetadata
from assets.prompts import CHUNK_METADATA
from resources.llm import ChatItem, ItemResult
from resources.llm.resource import LLMResource, metrics_metadata
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

CHUNK_METADATA_KEY = dg.AssetKey("chunk_metadata")
METADATA_COLUMNS = ["chunk_id", "document_key", "chunk_index", *ChunkMetadata.model_fields,
                    "error_class", "error"]


def metadata_frame(chunks: pd.DataFrame, results: list[ItemResult]) -> pd.DataFrame:
    by_id = {r.key: r for r in results}
    rows = []
    for chunk in chunks.itertuples():
        result = by_id[chunk.chunk_id]
        fields = result.value.model_dump() if result.ok else dict.fromkeys(
            ChunkMetadata.model_fields)
        rows.append({"chunk_id": chunk.chunk_id, "document_key": chunk.document_key,
                     "chunk_index": chunk.chunk_index, **fields,
                     "error_class": result.error_class, "error": result.error})
    return pd.DataFrame(rows, columns=METADATA_COLUMNS)


def _preview(frame: pd.DataFrame, rows: int = 5) -> str:
    lines = ["| # | category | title | keywords |", "|---|---|---|---|"]
    for row in frame.head(rows).itertuples():
        if row.error_class:
            lines.append(f"| {row.chunk_index} | **failed** | {row.error_class} | |")
        else:
            title = str(row.title).replace("|", "\\|")[:80]
            lines.append(f"| {row.chunk_index} | {row.category} | {title} | "
                         f"{', '.join(row.keywords)} |")
    return "\n".join(lines)


CHUNK_METADATA_SPEC = llm_spec(
    CHUNK_METADATA_KEY,
    deps=[CHUNKS],
    code_version=CHUNK_METADATA.version,
    description="Per chunk: title, summary, keywords, category (fixed list), language and a "
    "personal-data flag from the LLM, validated; failed chunks keep their error class. "
    "Re-materializing asks the LLM again only for chunks that failed (the response cache "
    "answers the rest).",
)
CHUNK_METADATA_CHECKS = [success_rate_spec(CHUNK_METADATA_KEY)]


def metadata_stage(context: dg.AssetExecutionContext, config: EnrichConfig,
                   llm: LLMResource, store: AssetStore, registry: DocumentRegistry,
                   keys: list[str]) -> list[PartitionError]:
    inputs, failures = read_upstream(context, store, registry, [CHUNKS], keys)
    chunks = {key: data.frames[CHUNKS] for key, data in inputs.items()}
    work = {
        key: [ChatItem(c.chunk_id, CHUNK_METADATA.messages(c.text), ChunkMetadata,
                       CHUNK_METADATA.version) for c in frame.itertuples()]
        for key, frame in chunks.items()
    }
    results, run = run_llm(context, llm, work, config.concurrency)
    context.log.info(f"{run.attempted} chunks of {len(work)} documents: {run.succeeded} ok, "
                     f"{run.failed} failed {run.failed_by_class}, {run.cache_hits} cached, "
                     f"{run.http_calls} HTTP calls")
    for key, frame in chunks.items():
        partition_results = results.get(key, [])
        rows = metadata_frame(frame, partition_results)
        metrics = partition_metrics(partition_results, run)
        record_judged(
            context, store, CHUNK_METADATA_KEY, key, rows,
            {**metrics_metadata(metrics), "preview": dg.MetadataValue.md(_preview(rows))},
            data_version(CHUNK_METADATA.version, rows.to_json()),
            CHUNK_METADATA.version, inputs[key].provenance, config.success_threshold,
        )
    return failures
