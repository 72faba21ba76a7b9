"""One job per step. Runs cover one document or a range of them (range tags), as
backfills, sensors and the sweep batch them; the chain goes on across runs by automation
(assets/automation.py), and the CLI runs the jobs in this order."""

import dagster as dg

from assets.keys import (
    CHUNK_EMBEDDINGS,
    CHUNK_METADATA,
    CHUNKS,
    DOCUMENT_THEMES,
    DOCUMENTS,
    GRAPH_EXTRACTION,
    NEO4J_GRAPH,
    THEME_CATALOG,
)

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets(DOCUMENTS, CHUNKS),
    description="Read, normalise and chunk documents; no LLM calls, no pool.",
)

enrichment_job = dg.define_asset_job(
    "enrichment_job",
    selection=dg.AssetSelection.assets(CHUNK_METADATA, CHUNK_EMBEDDINGS, GRAPH_EXTRACTION,
                                       DOCUMENT_THEMES),
    description="Chunk metadata, embeddings, graph extraction and themes with K votes, as "
    "one stream of LLM calls per run (pool llm).",
)

# The Neo4j sink: its own job and pool.
graph_job = dg.define_asset_job(
    "graph_job",
    selection=dg.AssetSelection.assets(NEO4J_GRAPH),
    description="Write documents' chunks, entities and relationships to Neo4j (pool neo4j).",
)

# The corpus-wide catalog is not per batch: rebuilding it after every batch of a
# 10,000-document backfill would read every document's themes 100 times. Automation, the
# catalog schedule or the CLI run it once after.
catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets(THEME_CATALOG),
    description="Rebuild the corpus-wide theme_catalog from the stored document themes.",
)

# The order a document goes through them, and what each materializes.
CHAIN_JOBS = {
    "ingestion_job": [DOCUMENTS, CHUNKS],
    "enrichment_job": [CHUNK_METADATA, CHUNK_EMBEDDINGS, GRAPH_EXTRACTION, DOCUMENT_THEMES],
    "graph_job": [NEO4J_GRAPH],
}
