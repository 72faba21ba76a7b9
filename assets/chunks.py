"""Chunking one document into a DataFrame of token-bounded spans with stable ids."""

import statistics

import dagster as dg
import pandas as pd

from assets.chunking import chunk_id, chunk_text
from assets.models import Document
from resources.tokenizer import get_tokenizer

CHUNKER_VERSION = "chunker-v1"
CHUNK_COLUMNS = [
    "chunk_id", "document_key", "chunk_index", "text", "start_char", "end_char", "n_tokens",
]


def chunk_document(
    document: Document, max_tokens: int, overlap_tokens: int, encoding: str
) -> tuple[pd.DataFrame, str]:
    """The chunks of one document as a DataFrame, and the tokenizer's name."""
    tok = get_tokenizer(encoding)
    pieces = chunk_text(document.text, max_tokens, overlap_tokens, tok)
    frame = pd.DataFrame(
        [
            (chunk_id(document.key, c.index, c.text), document.key, c.index, c.text, c.start,
             c.end, c.n_tokens)
            for c in pieces
        ],
        columns=CHUNK_COLUMNS,
    )
    return frame, tok.name


def chunks_metadata(
    frame: pd.DataFrame, document: Document, encoding: str, max_tokens: int, overlap_tokens: int
) -> dict:
    tokens = frame["n_tokens"].tolist()
    return {
        "max_tokens": dg.MetadataValue.int(max_tokens),
        "overlap_tokens": dg.MetadataValue.int(overlap_tokens),
        "chunks": dg.MetadataValue.int(len(frame)),
        "tokens_min": dg.MetadataValue.int(min(tokens)),
        "tokens_mean": dg.MetadataValue.float(round(statistics.fmean(tokens), 1)),
        "tokens_max": dg.MetadataValue.int(max(tokens)),
        "tokens_total": dg.MetadataValue.int(sum(tokens)),
        "encoding": encoding,
        "source_sha256": document.source_sha256,
        "preview": dg.MetadataValue.md(_table(frame)),
    }


def _table(frame: pd.DataFrame, rows: int = 3, width: int = 160) -> str:
    lines = ["| # | tokens | text |", "|---|---|---|"]
    for row in frame.head(rows).itertuples():
        text = row.text.replace("\n", " ").replace("|", "\\|")
        text = text[:width] + ("…" if len(text) > width else "")
        lines.append(f"| {row.chunk_index} | {row.n_tokens} | {text} |")
    return "\n".join(lines)
