import os

import dagster as dg

from assets.catalog import theme_catalog
from assets.enrichment import enrichment
from assets.graph import neo4j_graph
from assets.ingestion import ingestion
from pipeline_defs.batch_sensor import batch_sensor
from pipeline_defs.jobs import catalog_job, enrichment_job, graph_job, ingestion_job
from pipeline_defs.schedules import catalog_schedule, sweep_schedule
from pipeline_defs.sensors import automation_sensor, inbox_sensor
from resources.llm.resource import LLMResource
from resources.neo4j.resource import Neo4jResource
from resources.registry import DocumentRegistry
from resources.storage import AssetStore, DocgraphIOManager

store = AssetStore()
CELERY_POLL_SECONDS = 0.1


def executor() -> dg.ExecutorDefinition:
    """In-process: the steps of a run share one process, so the embedded SQLite instance
    never sees concurrent writers from one run (README, "Design"). With
    DOCGRAPH_CELERY_BROKER (`make prod`: a PostgreSQL instance), each step runs on a Celery
    worker; Dagster's pools still gate the steps (the executor claims their slots)."""
    broker = os.environ.get("DOCGRAPH_CELERY_BROKER")
    if not broker:
        return dg.in_process_executor
    from dagster_celery import celery_executor, core_execution_loop

    # The run process polls its steps' results, and its pools' slots, once a tick (read at
    # each tick): with dagster-celery's 1 s, every run waited half a second on average after
    # its step ended, and a waiting step as long before it saw a slot free. A poll is one
    # Redis GET per step out.
    core_execution_loop.TICK_SECONDS = CELERY_POLL_SECONDS
    return celery_executor.configured(
        {"broker": f"{broker}/0", "backend": f"{broker}/1"}, name="celery")


defs = dg.Definitions(
    assets=[ingestion, enrichment, neo4j_graph, theme_catalog],
    jobs=[ingestion_job, enrichment_job, graph_job, catalog_job],
    sensors=[inbox_sensor, automation_sensor, batch_sensor],
    schedules=[sweep_schedule, catalog_schedule],
    resources={
        "store": store,
        "io_manager": DocgraphIOManager(store=store),
        "registry": DocumentRegistry(),
        "llm": LLMResource(),
        "neo4j_db": Neo4jResource(),
    },
    executor=executor(),
)
