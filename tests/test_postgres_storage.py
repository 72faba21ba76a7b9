"""resources/postgres_storage.py: the production instance's storage keeps its PostgreSQL
connections open, shares dagster-postgres's tables, and survives a dropped connection."""

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster_postgres import DagsterPostgresStorage

from assets.batch import check_outputs
from resources.postgres_storage import (
    POOL_SIZE,
    PooledPostgresEventLogStorage,
    PooledPostgresStorage,
)
from tests.conftest import fresh_database, pooled_postgres_storage

ASSET = dg.AssetKey("probe")
PARTITIONS = [f"p{i:02d}" for i in range(30)]
CHECK = dg.AssetCheckKey(ASSET, "probe_ok")


@dg.asset(name="probe", partitions_def=dg.StaticPartitionsDefinition(PARTITIONS),
          check_specs=[dg.AssetCheckSpec("probe_ok", asset="probe")], output_required=False)
def probe(context: dg.AssetExecutionContext):
    """Records each partition on its own, as the pipeline's steps do (assets/batch.py): a
    materialization and a check evaluation per partition."""
    for key in context.partition_keys:
        context.log_event(dg.AssetMaterialization(asset_key=ASSET, partition=key))
        context.log_event(dg.AssetCheckEvaluation(asset_key=ASSET, check_name="probe_ok",
                                                  passed=True, partition=key))
    yield from check_outputs(context)


def instance_on(db_url: str, storage: dict, tmp_path, name: str) -> dg.DagsterInstance:
    home = tmp_path / name
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage,
                                                      "telemetry": {"enabled": False}}))
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def db_url(pg_url, request):
    with fresh_database(pg_url, request) as url:
        yield url


def connections_opened(instance: dg.DagsterInstance, work) -> int:
    """How many PostgreSQL connections the instance's storages open during `work()`."""
    opened = []
    engines = {storage._engine for storage in (instance.run_storage, instance.event_log_storage,
                                               instance.schedule_storage)}
    for engine in engines:
        sa.event.listen(engine, "connect", lambda *_: opened.append(1))
    work()
    return len(opened)


def materialize_all(instance: dg.DagsterInstance) -> None:
    result = dg.materialize([probe], instance=instance, tags={
        "dagster/asset_partition_range_start": PARTITIONS[0],
        "dagster/asset_partition_range_end": PARTITIONS[-1]})
    assert result.success


def test_recording_partitions_one_by_one_reuses_its_connections(db_url, tmp_path):
    with instance_on(db_url, pooled_postgres_storage(db_url), tmp_path, "pooled") as pooled:
        assert isinstance(pooled.get_ref().storage_data.rehydrate(PooledPostgresStorage),
                          PooledPostgresStorage)
        assert isinstance(pooled.event_log_storage, PooledPostgresEventLogStorage)
        pooled_opened = connections_opened(pooled, lambda: materialize_all(pooled))
    stock_storage = {"postgres": {"postgres_url": db_url}}
    with instance_on(db_url, stock_storage, tmp_path, "stock") as stock:
        assert type(stock.get_ref().storage_data.rehydrate(DagsterPostgresStorage)) is (
            DagsterPostgresStorage)
        stock_opened = connections_opened(stock, lambda: materialize_all(stock))
    # one run of 30 partitions logs 60+ events: the stock storage connects for each statement
    assert stock_opened > 2 * len(PARTITIONS), stock_opened
    assert pooled_opened <= 3 * POOL_SIZE, pooled_opened  # at most each storage's pool


def test_it_shares_dagster_postgres_tables_both_ways(db_url, tmp_path):
    stock_storage = {"postgres": {"postgres_url": db_url}}
    with instance_on(db_url, pooled_postgres_storage(db_url), tmp_path, "pooled") as pooled:
        materialize_all(pooled)
    with instance_on(db_url, stock_storage, tmp_path, "stock") as stock:
        assert stock.get_materialized_partitions(ASSET) == set(PARTITIONS)
        [run] = stock.get_runs()
        assert run.is_success
        stock.report_runless_asset_event(dg.AssetMaterialization(ASSET, partition="p00"))
    with instance_on(db_url, pooled_postgres_storage(db_url), tmp_path, "again") as again:
        records = again.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ASSET, asset_partitions=["p00"]), limit=5).records
        assert len(records) == 2
        states = again.event_log_storage.get_asset_check_summary_records([CHECK])
        assert states[CHECK].last_check_execution_record is not None


def test_a_connection_the_server_dropped_is_replaced(db_url, pg_url, tmp_path):
    with instance_on(db_url, pooled_postgres_storage(db_url), tmp_path, "pooled") as instance:
        engine = instance.event_log_storage._engine
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with sa.create_engine(db_url, isolation_level="AUTOCOMMIT").connect() as admin:
            assert admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                 {"pid": backend}).scalar()
        # the pooled connection is dead; the write takes a new one rather than failing
        instance.report_runless_asset_event(dg.AssetMaterialization(ASSET, partition="p01"))
        assert instance.get_materialized_partitions(ASSET) == {"p01"}
