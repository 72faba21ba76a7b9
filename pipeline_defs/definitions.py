import dagster as dg

from assets.embeddings import chunk_embeddings
from assets.ingestion import ingestion
from assets.metadata import chunk_metadata
from pipeline_defs.jobs import ingest_job
from pipeline_defs.sensors import inbox_sensor
from resources.llm.resource import LLMResource
from resources.registry import DocumentRegistry
from resources.storage import AssetStore, DocgraphIOManager

store = AssetStore()

defs = dg.Definitions(
    assets=[ingestion, chunk_metadata, chunk_embeddings],
    jobs=[ingest_job],
    sensors=[inbox_sensor],
    resources={
        "store": store,
        "io_manager": DocgraphIOManager(store=store),
        "registry": DocumentRegistry(),
        "llm": LLMResource(),
    },
    # In-process: the steps of a run share one process, so the embedded SQLite instance
    # never sees concurrent writers from one run (README, "Design").
    executor=dg.in_process_executor,
)
