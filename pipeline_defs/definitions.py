import dagster as dg

from assets.catalog import theme_catalog
from assets.graph import neo4j_graph
from assets.pipeline import document_pipeline
from pipeline_defs.jobs import catalog_job, docgraph_job, graph_job, ingest_job
from pipeline_defs.sensors import inbox_sensor
from resources.llm.resource import LLMResource
from resources.neo4j.resource import Neo4jResource
from resources.registry import DocumentRegistry
from resources.storage import AssetStore, DocgraphIOManager

store = AssetStore()

defs = dg.Definitions(
    assets=[document_pipeline, theme_catalog, neo4j_graph],
    jobs=[docgraph_job, ingest_job, catalog_job, graph_job],
    sensors=[inbox_sensor],
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
