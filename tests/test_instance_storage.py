"""resources/instance_storage.py: the embedded default's Dagster storage keeps Dagster's
files, shares them with other processes, and still lets the UI follow a running run."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from resources.instance_storage import (
    PooledEventLogStorage,
    PooledRunStorage,
    PooledSqliteStorage,
)

REPO = Path(__file__).resolve().parents[1]
ASSET = dg.AssetKey("probe")


@dg.asset(name="probe", partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
def probe(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"probe {context.partition_key}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def latest_partitions(instance: dg.DagsterInstance) -> set[str]:
    return {r.partition_key for r in instance.fetch_materializations(ASSET, limit=100).records}


def test_the_projects_dagster_yaml_selects_it(home: Path):
    with dg.DagsterInstance.get() as instance:
        assert instance.get_ref().storage_data.class_name == PooledSqliteStorage.__name__
        assert isinstance(instance.event_log_storage, PooledEventLogStorage)
        assert isinstance(instance.run_storage, PooledRunStorage)


def test_it_reads_and_writes_the_files_of_dagsters_own_sqlite_storage(home: Path):
    with dg.DagsterInstance.get() as instance:
        dg.materialize([probe], instance=instance, partition_key="a")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's default
    with dg.DagsterInstance.get() as stock:
        assert type(stock.event_log_storage) is SqliteEventLogStorage
        assert latest_partitions(stock) == {"a"}
        dg.materialize([probe], instance=stock, partition_key="b")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        assert latest_partitions(instance) == {"a", "b"}
        assert len(instance.get_runs()) == 2


WRITER = textwrap.dedent("""
    import sys
    import dagster as dg
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("probe", partition="b"))
        print(len(instance.fetch_materializations(dg.AssetKey("probe"), limit=10).records))
""")


def test_another_process_sees_its_writes_and_it_sees_theirs(home: Path):
    """The open connection to index.db holds no snapshot between statements."""
    with dg.DagsterInstance.get() as instance:
        dg.materialize([probe], instance=instance, partition_key="a")
        assert latest_partitions(instance) == {"a"}  # the pooled connection is open now
        other = subprocess.run([sys.executable, "-c", WRITER], capture_output=True, text=True,
                               check=True, cwd=REPO)
        assert other.stdout.split()[-1] == "2"  # it saw our materialization, and its own
        assert latest_partitions(instance) == {"a", "b"}


def test_a_watcher_in_another_instance_follows_a_running_run(home: Path):
    """What the webserver does for a run's live log: it watches the run's own database
    file, which must change on disk as each event is written."""
    seen: list[str] = []
    started, go_on = threading.Event(), threading.Event()

    @dg.asset(name="probe_slow")
    def slow(context: dg.AssetExecutionContext) -> None:
        started.set()
        assert go_on.wait(30)
        context.log.info("half way")
        assert go_on.wait(30)

    with dg.DagsterInstance.get() as writer, dg.DagsterInstance.get() as webserver:
        runner = threading.Thread(target=lambda: dg.materialize([slow], instance=writer))
        runner.start()
        assert started.wait(30)
        [run] = writer.get_runs(limit=1)
        webserver.watch_event_logs(run.run_id, None,
                                   lambda event, _cursor: seen.append(event.message or ""))
        go_on.set()
        runner.join(60)
        for _ in range(100):
            if any("half way" in m for m in seen):
                break
            threading.Event().wait(0.1)
        assert any("half way" in m for m in seen), seen[-5:]


def test_the_private_hooks_it_overrides_are_still_dagsters():
    """An upgrade that renames them must fail here (see TESTED_WITH in
    assets/dagster_compat.py), not silently fall back to the slow path."""
    for name in ("_connect", "_initdb", "conn_string_for_shard", "has_table",
                 "_has_asset_key_col_on_connection"):
        assert callable(getattr(SqliteEventLogStorage, name)), name
    assert callable(SqliteRunStorage.connect)
    assert PooledEventLogStorage._connect is not SqliteEventLogStorage._connect  # noqa: SLF001


def test_a_table_found_is_not_looked_up_again_and_one_missing_is(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    storage = PooledEventLogStorage(str(tmp_path))
    lookups: list[str] = []
    stock = SqliteEventLogStorage.has_table
    monkeypatch.setattr(SqliteEventLogStorage, "has_table",
                        lambda self, name: lookups.append(name) or stock(self, name))
    assert [storage.has_table("event_logs") for _ in range(3)] == [True] * 3
    assert [storage.has_table("no_such_table") for _ in range(2)] == [False] * 2
    assert lookups == ["event_logs", "no_such_table", "no_such_table"]
    with storage.index_connection() as conn:
        assert storage._has_asset_key_col_on_connection(conn, "cached_status_data")  # noqa: SLF001
        assert not storage._has_asset_key_col_on_connection(conn, "no_such_column")  # noqa: SLF001


RANGE = dg.StaticPartitionsDefinition([f"p{i}" for i in range(5)])


@dg.asset(partitions_def=RANGE)
def ranged_a() -> None:
    pass


@dg.asset(partitions_def=RANGE, deps=[ranged_a])
def ranged_b() -> None:
    pass


RANGED_JOB = dg.Definitions(assets=[ranged_a, ranged_b], jobs=[dg.define_asset_job(
    "ranged", selection=[ranged_a, ranged_b])]).resolve_job_def("ranged")
RANGE_TAGS = {"dagster/asset_partition_range_start": "p0",
              "dagster/asset_partition_range_end": "p4"}


def index_commits(storage: PooledEventLogStorage) -> list[int]:
    """A counter of the commits to index.db from now on."""
    commits = [0]
    engine = storage._engine("index")  # noqa: SLF001 - the storage under test
    sa.event.listen(engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
    return commits


def planned(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    return sorted((e.dagster_event.asset_key.to_user_string(), e.dagster_event.partition)
                  for e in instance.all_logs(
                      run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED))


def test_a_new_runs_planned_events_are_stored_as_one_batch(home: Path):
    with dg.DagsterInstance.get() as instance:
        assert int(os.environ["DAGSTER_EVENT_BATCH_SIZE"]) >= 400  # set by the storage
        commits = index_commits(instance.event_log_storage)
        run = instance.create_run_for_job(RANGED_JOB, tags=RANGE_TAGS)
        expected = sorted((a, f"p{i}") for a in ("ranged_a", "ranged_b") for i in range(5))
        assert planned(instance, run.run_id) == expected
        assert commits[0] == 1  # 10 events, ~20 commits one by one
        # the index has them too: the UI's partition status reads it
        assert instance.event_log_storage.get_latest_storage_id_by_partition(
            dg.AssetKey("ranged_b"), dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        ).keys() == {f"p{i}" for i in range(5)}


def test_a_batch_that_fails_part_way_stores_none_of_it(home: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """All or nothing, so that Dagster's fallback (each event again, on its own) writes
    every event once."""
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        store_event, calls = storage.store_event, []

        def fails_third(event):
            calls.append(event)
            if len(calls) == 3:
                raise RuntimeError("disk full")
            store_event(event)

        monkeypatch.setattr(storage, "store_event", fails_third)
        run = instance.create_run_for_job(RANGED_JOB, tags=RANGE_TAGS)
        assert len(calls) == 3 + 10  # the batch up to the failure, then each on its own
        assert len(planned(instance, run.run_id)) == 10  # each once: none lost, none twice
