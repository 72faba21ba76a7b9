import dagster as dg

from assets.catalog import theme_catalog
from assets.enrichment import enrichment
from assets.graph import neo4j_graph
from assets.ingestion import ingestion
from pipeline_defs.jobs import catalog_job, enrichment_job, graph_job, ingestion_job
from pipeline_defs.schedules import catalog_schedule, sweep_schedule
from pipeline_defs.sensors import automation_sensor, inbox_sensor
from resources.llm.resource import LLMResource
from resources.neo4j.resource import Neo4jResource
from resources.registry import DocumentRegistry
from resources.storage import AssetStore, DocgraphIOManager

store = AssetStore()

defs = dg.Definitions(
    assets=[ingestion, enrichment, neo4j_graph, theme_catalog],
    jobs=[ingestion_job, enrichment_job, graph_job, catalog_job],
    sensors=[inbox_sensor, automation_sensor],
    schedules=[sweep_schedule, catalog_schedule],
    resources={
        "store": store,
        "io_manager": DocgraphIOManager(store=store),
        "registry": DocumentRegistry(),
        "llm": LLMResource(),
        "neo4j_db": Neo4jResource(),
    },
    # In-process: the steps of a run share one process, so the embedded SQLite instance
    # never sees concurrent writers from one run (README, "Design").
    executor=dg.in_process_executor,
)
