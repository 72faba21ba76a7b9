"""What docgraph uses of Dagster that Dagster does not export, in one place.

Tag names Dagster writes and reads on runs and materializations, the type of a check
evaluation's target materialization, the per-partition check state the UI shows, the
check executions other runs planned after a run, the latest materialization of a
partition and of many partitions at once, and what a run materialized.
tests/test_dagster_compat.py pins them to the installed version: an upgrade that moves or
renames one fails there, not in a run.
"""

from datetime import UTC

import dagster as dg
import sqlalchemy as sa
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus as CheckStatus,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable as ChecksTable
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as EventLogTable

TESTED_WITH = "1.13.27"  # the Dagster release these names were checked against

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
USER_VERSION_TAG = "dagster/data_version_is_user_provided"
INPUT_VERSION_TAG = "dagster/input_data_version/{}"
INPUT_POINTER_TAG = "dagster/input_event_pointer/{}"

__all__ = ["CheckStatus", "TargetMaterialization", "check_passed", "check_states",
           "checks_planned_after", "latest_materialization_ids", "latest_materialization_row",
           "materialized_in_run"]


def check_states(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey,
                 partitions: list[str]) -> dict[str, bool | None]:
    """Dagster's own verdict on each partition's check, as the check's Partitions tab
    shows it: True (passed) or False (failed) when the latest evaluation judged the
    partition's latest materialization, None when there is no current evaluation."""
    infos = instance.event_log_storage.get_asset_check_partition_info(
        [check_key], partition_keys=partitions)
    states: dict[str, bool | None] = dict.fromkeys(partitions)
    for info in infos:
        if info.partition_key in states and info.is_current:
            states[info.partition_key] = {CheckStatus.SUCCEEDED: True,
                                          CheckStatus.FAILED: False}.get(
                info.latest_execution_status)
    return states


def check_passed(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey,
                 partition: str) -> bool | None:
    return check_states(instance, check_key, [partition])[partition]


def checks_planned_after(instance: dg.DagsterInstance, run_id: str,
                         check_keys: list[dg.AssetCheckKey], partitions: list[str]
                         ) -> list[tuple[dg.AssetKey, str, str, CheckStatus]]:
    """(asset, partition, run id, status) of every execution of `check_keys` on
    `partitions` that another run planned after `run_id` planned its own. Dagster keeps
    one row per run, check and partition, created when the run is planned, and takes a
    partition's row with the highest id as its check's state
    (`get_asset_check_partition_info`). The run's first row is found by the (asset,
    check, run) index, the later rows from there by id."""
    if not check_keys or not partitions:
        return []
    table = ChecksTable
    with instance.event_log_storage.index_connection() as conn:
        first = conn.execute(sa.select(sa.func.min(table.c.id)).where(sa.or_(*(
            sa.and_(table.c.asset_key == key.asset_key.to_string(),
                    table.c.check_name == key.name, table.c.run_id == run_id)
            for key in check_keys)))).scalar()
        if first is None:  # the run planned none of them
            return []
        rows = conn.execute(sa.select(
            table.c.asset_key, table.c.check_name, table.c.partition, table.c.run_id,
            table.c.execution_status).where(
                table.c.id > first, table.c.run_id != run_id,
                table.c.asset_key.in_({k.asset_key.to_string() for k in check_keys}),
                table.c.partition.in_(partitions))
        ).fetchall()
    wanted = {(key.asset_key.to_string(), key.name) for key in check_keys}
    return [(dg.AssetKey.from_db_string(asset), partition, other, CheckStatus(status))
            for asset, name, partition, other, status in rows if (asset, name) in wanted]


def latest_materialization_ids(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                               partitions: list[str]) -> dict[str, int]:
    """The storage id of each partition's latest materialization, in one query (partitions
    never materialized are left out)."""
    return dict(instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)))


def latest_materialization_row(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                               partition: str, run_id: str) -> tuple[int, float] | None:
    """(storage id, timestamp) of the run's latest materialization of the partition, from
    the event log's indexed columns (`idx_events_by_asset_partition`), without reading the
    event itself: what a step needs of the materialization it has just logged."""
    table = EventLogTable
    query = sa.select(table.c.id, table.c.timestamp).where(
        table.c.asset_key == asset_key.to_string(),
        table.c.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION.value,
        table.c.partition == partition, table.c.run_id == run_id,
    ).order_by(table.c.id.desc()).limit(1)
    with instance.event_log_storage.index_connection() as conn:
        row = conn.execute(query).fetchone()
    if row is None:
        return None
    return row.id, row.timestamp.replace(tzinfo=UTC).timestamp()


def materialized_in_run(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(asset, partition) of every materialization the run logged, from the event log's
    indexed columns in one query: reading the events themselves deserializes each one's
    metadata (~0.5 s for a run of 100 documents)."""
    table = EventLogTable
    query = sa.select(table.c.asset_key, table.c.partition).where(
        table.c.run_id == run_id,
        table.c.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION.value)
    with instance.event_log_storage.index_connection() as conn:
        rows = conn.execute(query).fetchall()
    return [(dg.AssetKey.from_db_string(key).to_user_string(), partition)
            for key, partition in rows]
