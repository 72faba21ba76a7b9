"""What a step's documents were computed from: each upstream partition's latest
materialization (`Upstream`, for provenance tags and check targets) and its stored frames,
refused when missing, when Dagster does not show its success-rate gate as passed, or when
its chunks are not the stored ones."""

from dataclasses import dataclass

import dagster as dg
import pandas as pd

from assets.dagster_compat import DATA_VERSION_TAG, check_states, latest_materialization_ids
from assets.failures import PartitionError, document_path, gate_failure, not_materialized
from assets.keys import CHUNKS, GATED, success_rate_key
from resources.errors import ErrorClass
from resources.storage import AssetStore


@dataclass(frozen=True)
class Upstream:
    """The materialization of an upstream partition that a value was computed from."""

    asset_key: dg.AssetKey
    version: str
    storage_id: int
    run_id: str
    timestamp: float
    metadata: dict  # its metadata values
    tags: dict  # its provenance tags: code version, input data versions


def latest_upstream(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> Upstream | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return _upstream(asset_key, records[0]) if records else None


def latest_upstreams(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                     partitions: list[str]) -> dict[str, Upstream]:
    """`latest_upstream` of many partitions in two queries, of one in one (those never
    materialized are left out)."""
    if len(partitions) == 1:  # the enrichment reads each document's inputs as it is ready
        [partition] = partitions
        upstream = latest_upstream(instance, asset_key, partition)
        return {partition: upstream} if upstream else {}
    ids = latest_materialization_ids(instance, asset_key, partitions)
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(ids.values())),
        limit=len(ids)).records
    return {record.partition_key: _upstream(asset_key, record) for record in records}


def _upstream(asset_key: dg.AssetKey, record: dg.EventLogRecord) -> Upstream:
    return upstream_of(record.asset_materialization, record.storage_id, record.run_id,
                       record.timestamp)


def upstream_of(event: dg.AssetMaterialization, storage_id: int, run_id: str,
                timestamp: float) -> Upstream:
    """The Upstream of a materialization event stored with this id, run and time."""
    return Upstream(event.asset_key, event.tags[DATA_VERSION_TAG], storage_id, run_id,
                    timestamp, {k: v.value for k, v in event.metadata.items()},
                    dict(event.tags))


@dataclass(frozen=True)
class UpstreamData:
    """One document's inputs to a step: the stored frames and the materializations they
    came from (for provenance tags)."""

    frames: dict[dg.AssetKey, pd.DataFrame]
    provenance: tuple[Upstream, ...]


def read_upstream(
    context: dg.AssetExecutionContext, store: AssetStore, registry,
    asset_keys: list[dg.AssetKey], keys: list[str],
) -> tuple[dict[str, UpstreamData], list[PartitionError]]:
    """The upstream frames of each partition of `keys`, and an error for each partition
    that has none, or whose upstream's success-rate gate Dagster does not show as passed
    (automation holds such documents back; this refuses them in a run launched by hand)."""
    ready, errors = {}, []
    latest = {asset_key: latest_upstreams(context.instance, asset_key, keys)
              for asset_key in asset_keys}
    gates = {asset_key: check_states(context.instance, success_rate_key(asset_key), keys)
             for asset_key in asset_keys if asset_key in GATED}
    for key in keys:
        frames, provenance = {}, []
        for asset_key in asset_keys:
            name = asset_key.to_user_string()
            upstream = latest[asset_key].get(key)
            if upstream is None or not store.exists(asset_key, key, pd.DataFrame):
                errors.append(not_materialized(registry, key, name))
                break
            if asset_key in gates and not gates[asset_key][key]:
                errors.append(gate_failure(registry, key, name,
                                           evaluated=gates[asset_key][key] is False))
                break
            frames[asset_key] = store.read(asset_key, key, pd.DataFrame)
            provenance.append(upstream)
        else:
            if stale := _out_of_step(frames):
                errors.append(PartitionError(
                    key, document_path(registry, key), ErrorClass.UPSTREAM_STALE,
                    f"{stale} was computed from other chunks than the stored ones (the "
                    f"chunks were made again since): re-materialize {stale} for this document"))
            else:
                ready[key] = UpstreamData(frames, tuple(provenance))
    return ready, errors


def _out_of_step(frames: dict[dg.AssetKey, pd.DataFrame]) -> str | None:
    """The first per-chunk input whose chunk ids are not the stored chunks' ids."""
    if CHUNKS not in frames:
        return None
    chunk_ids = frames[CHUNKS]["chunk_id"].tolist()
    for asset_key, frame in frames.items():
        if "chunk_id" in frame.columns and frame["chunk_id"].tolist() != chunk_ids:
            return asset_key.to_user_string()
    return None
