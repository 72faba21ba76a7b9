"""`chunk_metadata`: an LLM's title, summary, keywords, category, language and personal-data
flag for every chunk, one row per chunk, failures kept with their error class. Its calls
and its rows; the enrichment step (assets/enrichment.py) runs them."""

import dagster as dg
import pandas as pd

from assets import prompts
from assets.keys import CHUNK_METADATA, CHUNKS
from assets.llm_assets import llm_spec, success_rate_spec
from assets.models import ChunkMetadata
from resources.llm import ChatItem, ItemResult

METADATA_COLUMNS = ["chunk_id", "document_key", "chunk_index", *ChunkMetadata.model_fields,
                    "error_class", "error"]


def metadata_items(chunks: pd.DataFrame) -> list[ChatItem]:
    return [ChatItem(f"chunk_metadata:{c.chunk_id}", prompts.CHUNK_METADATA.messages(c.text),
                     ChunkMetadata, prompts.CHUNK_METADATA.version) for c in chunks.itertuples()]


def metadata_frame(chunks: pd.DataFrame, results: list[ItemResult]) -> pd.DataFrame:
    by_id = {r.key.removeprefix("chunk_metadata:"): r for r in results}
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
        if not pd.isna(row.error_class):
            lines.append(f"| {row.chunk_index} | **failed** | {row.error_class} | |")
        else:
            title = str(row.title).replace("|", "\\|")[:80]
            lines.append(f"| {row.chunk_index} | {row.category} | {title} | "
                         f"{', '.join(row.keywords)} |")
    return "\n".join(lines)


CHUNK_METADATA_SPEC = llm_spec(
    CHUNK_METADATA,
    deps=[CHUNKS],
    code_version=prompts.CHUNK_METADATA.version,
    description="Per chunk: title, summary, keywords, category (fixed list), language and a "
    "personal-data flag from the LLM, validated; failed chunks keep their error class. "
    "Re-materializing asks the LLM again only for chunks that failed (the response cache "
    "answers the rest).",
)
CHUNK_METADATA_CHECKS = [success_rate_spec(CHUNK_METADATA)]


def metadata_description(rows: pd.DataFrame) -> dict[str, dg.MetadataValue]:
    return {"preview": dg.MetadataValue.md(_preview(rows))}
