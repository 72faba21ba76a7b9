import dagster as dg

from assets.catalog import THEME_CATALOG_KEY
from assets.graph import NEO4J_GRAPH_KEY
from assets.pipeline import document_pipeline

# Runs cover one document or a range of them (tags dagster/asset_partition_range_start/
# end), as backfills batch them.
docgraph_job = dg.define_asset_job(
    "docgraph_job",
    selection=dg.AssetSelection.assets(document_pipeline),
    description="The main job: ingest, chunk, enrich (metadata, embeddings) and extract "
    "themes, per document, one run per range of partitions.",
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("documents", "chunks"),
    description="Read, normalise and chunk documents; no LLM calls.",
)

# The corpus-wide catalog is not in the main job: rebuilding it after every batch of a
# 10,000-document backfill would read every document's themes 100 times. catalog_job, the
# CLI, or the catalog's automation condition (with the daemon) runs it once after.
catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets(THEME_CATALOG_KEY),
    description="Rebuild the corpus-wide theme_catalog from the stored document themes.",
)

# The Neo4j sink: its own job (and pool), run after docgraph_job on the same documents by
# the CLI, or per partition by its automation condition when the daemon runs.
graph_job = dg.define_asset_job(
    "graph_job",
    selection=dg.AssetSelection.assets(NEO4J_GRAPH_KEY),
    description="Write documents' chunks, entities and relationships to Neo4j.",
)
