import dagster as dg
import pandas as pd

from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
from assets.enrichment import enrichment
from assets.ingestion import ingestion
from assets.models import Document
from pipeline_defs import cli
from pipeline_defs.definitions import defs, store
from resources.llm.resource import LLMResource
from simulator.simulator import SimConfig


def ingest_config(**config) -> dict:
    """Run config for the ingestion step."""
    return {"ops": {"ingestion": {"config": config}}}


def enrichment_config(**stages: dict) -> dict:
    """The enrichment step's config from {asset name: its config}; a `concurrency` given
    to any asset is the step's (it has one stream)."""
    config: dict = {}
    for name, stage in stages.items():
        stage = dict(stage)
        if "concurrency" in stage:
            config["concurrency"] = stage.pop("concurrency")
        if stage:
            config[name] = stage
    return config


def run_pipeline(instance: dg.DagsterInstance, keys: list[str], assets: list[str],
                 llm: LLMResource | None = None, **stages: dict) -> dg.ExecuteInProcessResult:
    """Batched runs over keys[0]..keys[-1] as the chain makes them: the ingestion step's
    share of `assets`, then the enrichment step's. The first run that failed is returned,
    else the last."""
    ingest = [a for a in assets if a in ("documents", "chunks")]
    enrich = [a for a in assets if a not in ingest]
    configs = {"ingestion": stages.pop("ingestion", {}),
               "enrichment": enrichment_config(**stages)}
    results = []
    for step, selection in (("ingestion", ingest), ("enrichment", enrich)):
        if selection:
            results.append(dg.materialize(
                [ingestion, enrichment], selection=selection, instance=instance,
                resources={**defs.resources, **({"llm": llm} if llm else {})},
                run_config={"ops": {step: {"config": configs[step]}}},
                tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
                raise_on_error=False))
    return next((r for r in results if not r.success), results[-1])


def run_ingest(
    instance: dg.DagsterInstance, first: str, last: str | None = None, **kwargs
) -> dg.ExecuteInProcessResult:
    """One ingestion_job run over the partition `first`, or the range first..last."""
    job = defs.resolve_job_def("ingestion_job")
    if last is None:
        return job.execute_in_process(
            partition_key=first, instance=instance, raise_on_error=False, **kwargs
        )
    return job.execute_in_process(
        instance=instance, raise_on_error=False,
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last}, **kwargs,
    )


def materializations(instance: dg.DagsterInstance, asset: str, key: str):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=100
    ).records


def stored_chunks(key: str) -> pd.DataFrame:
    return store.read(dg.AssetKey("chunks"), key, pd.DataFrame)


def stored_document(key: str) -> Document:
    return store.read(dg.AssetKey("documents"), key, Document)


MARKER = "Zephyrine"  # only in document A, so the simulator can target its requests


def failing_a() -> SimConfig:
    """The simulator answering 400 to every call about document A (two_documents)."""
    return SimConfig(target=MARKER, target_status=400, target_rate=1.0)


def two_documents(folder, instance: dg.DagsterInstance) -> dict[str, str]:
    """Register a.md (every paragraph carries MARKER) and b.md; {file name: key}."""
    folder.mkdir()
    (folder / "a.md").write_text("\n\n".join(
        f"{MARKER} ticket {i}: Priya Raman refunded a double charge for Bluebird Dental after "
        f"the payment retry charged the card twice." for i in range(20)))
    (folder / "b.md").write_text("\n\n".join(
        f"Ticket {i}: Marcus Feld rotated the signing certificate because the Okta single "
        f"sign-on failed for Acme Logistics." for i in range(20)))
    return {d.path.name: d.key for d in cli.add(instance, [folder])}


def checks_of_run(instance: dg.DagsterInstance, run_id: str
                  ) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """{(check name, partition): evaluation} logged by the run."""
    return {(e.check_name, e.partition): e for e in (
        log.dagster_event.event_specific_data
        for log in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION))}
