import dagster as dg
import pandas as pd

from assets.batch import RANGE_END_TAG, RANGE_START_TAG
from assets.models import Document
from assets.pipeline import document_pipeline
from pipeline_defs import cli
from pipeline_defs.definitions import defs, store
from resources.llm.resource import LLMResource


def pipeline_config(**stages: dict) -> dict:
    """Run config for the document_pipeline step: {stage name: its config}."""
    return {"ops": {"document_pipeline": {"config": stages}}}


def ingest_config(**config) -> dict:
    return pipeline_config(ingestion=config)


def run_pipeline(instance: dg.DagsterInstance, keys: list[str], assets: list[str],
                 llm: LLMResource | None = None, **stages: dict) -> dg.ExecuteInProcessResult:
    """One batched run of `assets` of the document pipeline over keys[0]..keys[-1]."""
    return dg.materialize(
        [document_pipeline], selection=assets, instance=instance,
        resources={**defs.resources, **({"llm": llm} if llm else {})},
        run_config=pipeline_config(**stages),
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}, raise_on_error=False,
    )


def run_ingest(
    instance: dg.DagsterInstance, first: str, last: str | None = None, **kwargs
) -> dg.ExecuteInProcessResult:
    """One ingest_job run over the partition `first`, or the range first..last."""
    job = defs.resolve_job_def("ingest_job")
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
