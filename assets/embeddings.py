"""`chunk_embeddings`: a vector per chunk, requested in batches of chunks, stored with the
model's name and the dimension. Its calls, its rows and its dimension check; the
enrichment step (assets/enrichment.py) runs them."""

import dagster as dg
import pandas as pd

from assets.keys import CHUNK_EMBEDDINGS, CHUNKS
from assets.llm_assets import GateConfig, llm_spec, success_rate_spec
from assets.partitions import documents_partitions
from resources.llm import EmbedItem, ItemResult

EMBEDDINGS_VERSION = "chunk-embeddings-v1"
EMBEDDING_COLUMNS = ["chunk_id", "document_key", "chunk_index", "embedding", "model",
                     "dimensions", "error_class", "error"]


class EmbedConfig(GateConfig):
    inputs_per_request: int = 32  # chunks embedded by one API call
    dimensions: int | None = None  # ask the model for this size (if it supports it)


def embedding_items(key: str, chunks: pd.DataFrame, per_request: int,
                    dimensions: int | None) -> list[EmbedItem]:
    rows = list(chunks.itertuples())
    return [
        EmbedItem(f"chunk_embeddings:{key}#{start}",
                  [r.text for r in rows[start : start + per_request]], dimensions)
        for start in range(0, len(rows), per_request)
    ]


def embeddings_frame(chunks: pd.DataFrame, results: list[ItemResult], per_request: int,
                     model: str) -> pd.DataFrame:
    """One row per chunk: the vector from its request, or that request's error."""
    by_start = {int(r.key.rsplit("#", 1)[1]): r for r in results}
    rows = []
    for position, chunk in enumerate(chunks.itertuples()):
        start = position - position % per_request
        result = by_start[start]
        vector = result.value[position - start] if result.ok else None
        rows.append({"chunk_id": chunk.chunk_id, "document_key": chunk.document_key,
                     "chunk_index": chunk.chunk_index, "embedding": vector, "model": model,
                     "dimensions": len(vector) if vector else None,
                     "error_class": result.error_class, "error": result.error})
    return pd.DataFrame(rows, columns=EMBEDDING_COLUMNS)


def dimension_check(key: str, frame: pd.DataFrame,
                    expected: int | None) -> dg.AssetCheckEvaluation:
    dims = sorted(int(d) for d in frame["dimensions"].dropna().unique())
    wrong = [] if expected is None else [d for d in dims if d != expected]
    return dg.AssetCheckEvaluation(
        asset_key=CHUNK_EMBEDDINGS, check_name="chunk_embeddings_dimension",
        passed=len(dims) <= 1 and not wrong, severity=dg.AssetCheckSeverity.WARN,
        partition=key,
        metadata={"dimensions": dg.MetadataValue.json(dims),
                  "expected": dg.MetadataValue.json(expected)},
    )


CHUNK_EMBEDDINGS_SPEC = llm_spec(
    CHUNK_EMBEDDINGS,
    deps=[CHUNKS],
    code_version=EMBEDDINGS_VERSION,
    description="A vector per chunk with the model name and dimension; chunks are embedded "
    "`inputs_per_request` at a time and cached like chat calls.",
)
CHUNK_EMBEDDINGS_CHECKS = [
    success_rate_spec(CHUNK_EMBEDDINGS),
    dg.AssetCheckSpec(
        "chunk_embeddings_dimension", asset=CHUNK_EMBEDDINGS,
        partitions_def=documents_partitions,
        description="every vector of the document has the same size (the configured "
        "`dimensions`, if set)",
    ),
]


def embeddings_description(rows: pd.DataFrame, model: str) -> dict[str, dg.MetadataValue]:
    embedded = int(rows["error_class"].isna().sum())
    return {
        "chunks_embedded": dg.MetadataValue.int(embedded),
        "chunks_failed": dg.MetadataValue.int(len(rows) - embedded),
        "embedding_model": dg.MetadataValue.text(model),
        "dimensions": dg.MetadataValue.int(int(rows["dimensions"].dropna().max()) if embedded
                                           else 0),
    }
