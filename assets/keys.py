"""Every asset key, pool and the per-run batch size, in one place.

The chain, per document: documents -> chunks (ingestion step) -> chunk_metadata,
chunk_embeddings, graph_extraction, document_themes (enrichment step) -> neo4j_graph
(graph step); theme_catalog reads every document's themes.
"""

import dagster as dg

DOCUMENTS = dg.AssetKey("documents")
CHUNKS = dg.AssetKey("chunks")
CHUNK_METADATA = dg.AssetKey("chunk_metadata")
CHUNK_EMBEDDINGS = dg.AssetKey("chunk_embeddings")
GRAPH_EXTRACTION = dg.AssetKey("graph_extraction")
DOCUMENT_THEMES = dg.AssetKey("document_themes")
NEO4J_GRAPH = dg.AssetKey("neo4j_graph")
THEME_CATALOG = dg.AssetKey("theme_catalog")

# The assets whose blocking `<asset>_success_rate` check gates what reads them.
GATED = (CHUNK_METADATA, CHUNK_EMBEDDINGS, GRAPH_EXTRACTION, DOCUMENT_THEMES)


def success_rate_key(asset_key: dg.AssetKey) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(asset_key, f"{asset_key.to_user_string()}_success_rate")


# Pools named by the steps that need them; dagster.yaml gives each its default slots.
LLM_POOL = "llm"
NEO4J_POOL = "neo4j"

# Documents per run, for every batched step: a run costs ~0.3 s in-process and seconds
# when launched, a document ~2 ms to chunk, and 100 documents bring ~1,000 chunks: enough
# to keep the LLM engine at its ceiling.
DOCUMENTS_PER_RUN = 100
