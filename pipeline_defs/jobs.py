import dagster as dg

from assets.ingestion import ingestion

# The main job: everything that exists per document so far. A run covers one document or
# a range of them (tags dagster/asset_partition_range_start/end), as backfills batch it.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(ingestion),
    description="Read, normalise and chunk documents; one run per range of partitions.",
)
