"""`graph_extraction`: entities and relationships per chunk, from the LLM, validated.

One row per chunk: the entities and relationships as JSON (a chunk's lists vary in length
and shape, which Parquet stores awkwardly), their counts, and the error of a failed call.
Nothing here touches Neo4j or trusts a type: resolution and the allowlists are applied
when the graph is written (assets/graph.py). The enrichment step (assets/enrichment.py)
runs its calls.
"""

import json

import dagster as dg
import pandas as pd

from assets import prompts
from assets.keys import CHUNKS, GRAPH_EXTRACTION
from assets.llm_assets import llm_spec, success_rate_spec
from assets.models import ChunkGraph
from resources.llm import ChatItem, ItemResult

GRAPH_COLUMNS = ["chunk_id", "document_key", "chunk_index", "entities", "relationships",
                 "n_entities", "n_relationships", "error_class", "error"]


def graph_items(chunks: pd.DataFrame) -> list[ChatItem]:
    return [ChatItem(f"graph_extraction:{c.chunk_id}", prompts.GRAPH_EXTRACTION.messages(c.text),
                     ChunkGraph, prompts.GRAPH_EXTRACTION.version) for c in chunks.itertuples()]


def graph_frame(chunks: pd.DataFrame, results: list[ItemResult]) -> pd.DataFrame:
    by_id = {r.key.removeprefix("graph_extraction:"): r for r in results}
    rows = []
    for chunk in chunks.itertuples():
        result = by_id[chunk.chunk_id]
        graph: ChunkGraph | None = result.value if result.ok else None
        rows.append({
            "chunk_id": chunk.chunk_id, "document_key": chunk.document_key,
            "chunk_index": chunk.chunk_index,
            "entities": json.dumps([e.model_dump() for e in graph.entities]) if graph else None,
            "relationships": json.dumps([r.model_dump() for r in graph.relationships])
            if graph else None,
            "n_entities": len(graph.entities) if graph else 0,
            "n_relationships": len(graph.relationships) if graph else 0,
            "error_class": result.error_class, "error": result.error,
        })
    return pd.DataFrame(rows, columns=GRAPH_COLUMNS)


GRAPH_EXTRACTION_SPEC = llm_spec(
    GRAPH_EXTRACTION,
    deps=[CHUNKS],
    code_version=prompts.GRAPH_EXTRACTION.version,
    description="Per chunk: the entities (name, type, aliases) and relationships (source, "
    "target, type, description) the LLM finds, validated; failed chunks keep their error "
    "class. Types are checked against the graph's allowlists when the graph is written.",
)
GRAPH_EXTRACTION_CHECKS = [success_rate_spec(GRAPH_EXTRACTION)]


def graph_description(rows: pd.DataFrame) -> dict[str, dg.MetadataValue]:
    return {"entities": dg.MetadataValue.int(int(rows["n_entities"].sum())),
            "relationships": dg.MetadataValue.int(int(rows["n_relationships"].sum()))}
