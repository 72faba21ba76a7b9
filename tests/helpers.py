import dagster as dg
import pandas as pd

from assets.batch import RANGE_END_TAG, RANGE_START_TAG
from assets.models import Document
from pipeline_defs.definitions import defs, store


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
