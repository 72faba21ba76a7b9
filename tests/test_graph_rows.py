"""What the graph and theme stages make of stored frames where some chunks failed: the
Parquet round trip turns a missing error into NaN, which must still read as "no error"."""

import json

import dagster as dg
import pandas as pd

from assets.graph_rows import document_graph
from assets.themes import document_passages
from resources.neo4j.model import DocumentRow
from resources.storage import AssetStore

CHUNKS = pd.DataFrame({
    "chunk_id": ["c0", "c1", "c2"], "document_key": ["doc"] * 3, "chunk_index": [0, 1, 2],
    "text": ["Priya Raman works for Acme.", "Acme uses LedgerSync.", "(unreadable)"],
    "n_tokens": [6, 5, 2],
})


def _stored(tmp_path, name: str, frame: pd.DataFrame) -> pd.DataFrame:
    store = AssetStore(base_path=str(tmp_path))
    store.write(dg.AssetKey(name), "doc", frame)
    return store.read(dg.AssetKey(name), "doc", pd.DataFrame)


def test_a_failed_chunk_does_not_empty_the_document_graph(tmp_path):
    def entity(name, kind):
        return {"name": name, "type": kind, "aliases": []}

    extraction = _stored(tmp_path, "graph_extraction", pd.DataFrame({
        "chunk_id": ["c0", "c1", "c2"],
        "entities": [json.dumps([entity("Priya Raman", "Person"), entity("Acme", "Organization")]),
                     json.dumps([entity("Acme", "Organization"), entity("LedgerSync", "Product")]),
                     None],
        "relationships": [
            json.dumps([{"source": "Priya Raman", "target": "Acme", "type": "WORKS_FOR",
                         "description": ""}]),
            json.dumps([{"source": "Acme", "target": "LedgerSync", "type": "USES",
                         "description": ""}]),
            None],
        "error_class": [None, None, "invalid_output"],
    }))
    assert pd.isna(extraction["error_class"][0])  # what the round trip gives back
    embeddings = pd.DataFrame({"chunk_id": ["c0", "c1", "c2"],
                               "embedding": [[1.0, 0.0], [0.0, 1.0], None]})
    rows, counts = document_graph(DocumentRow("doc", "doc.md"), CHUNKS, embeddings, extraction)
    assert sorted(e.key for e in rows["entities"]) == [
        "Organization:acme", "Person:priya raman", "Product:ledgersync"]
    assert {(r.type, r.chunk_id) for r in rows["relationships"]} == {
        ("WORKS_FOR", "c0"), ("USES", "c1")}
    assert len(rows["chunks"]) == 3 and rows["chunks"][2].embedding is None
    assert counts["relations_unresolved"] == 0


def test_long_documents_are_shown_to_the_theme_prompt_as_digests(tmp_path):
    metadata = _stored(tmp_path, "chunk_metadata", pd.DataFrame({
        "chunk_id": ["c0", "c1", "c2"], "title": ["Priya", "Acme", None],
        "summary": ["Priya works for Acme.", "Acme uses LedgerSync.", None],
        "keywords": [["priya"], ["acme"], None], "error_class": [None, None, "timeout"],
    }))
    passages = document_passages(CHUNKS, metadata, budget=5)
    assert "[1]\nPriya\nPriya works for Acme.\nkeywords: priya" in passages
    assert "[3]\n(unreadable)" in passages  # no digest: the text itself
