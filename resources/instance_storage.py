"""The embedded default's Dagster storage: Dagster's own SQLite storage, with its
databases kept open.

Dagster's SQLite storage creates a SQLAlchemy engine and opens and closes a SQLite
connection for every statement. That costs three ways: the engine is new, so SQLAlchemy's
compiled-statement cache never hits (every INSERT is compiled again); a connection is
opened; and closing the last connection to a database in WAL mode checkpoints its log into
the file. A materialization writes to two databases and queries one, so in a step that
records documents one by one this was most of its time (bench/chunking.py: ingestion of
100 documents 5-7 s stock, ~2 s with this storage).

Here each database file has one engine for the life of the process, which keeps one
connection open (pooled). A run's own event database (history/runs/<run id>.db) is also
checkpointed after each transaction: the webserver follows a running run by watching that
file change, and in WAL mode a file changes only when its log is checkpointed (which, in
Dagster's storage, closing the last connection did). Connections sync the log to disk at
checkpoints rather than at every commit (`PRAGMA synchronous=NORMAL`, SQLite's advice for
WAL): a killed process loses nothing committed. Files, schema and locking are
Dagster's: an instance written by the stock storage reads with this one and the other way
round, and several processes (webserver, daemon, runs) share the files as before.

A new run logs one "planned" event per document and asset before it starts (~400 for an
enrichment run of 100 documents); with DAGSTER_EVENT_BATCH_SIZE set (this storage sets it
unless the environment does) Dagster hands them over as one batch, which is stored in one
transaction per database: a run starts ~0.6 s sooner.

Tables and columns found once are not looked up again (Dagster asks before most writes).

Overridden: the private hooks `SqliteEventLogStorage._connect`,
`_has_asset_key_col_on_connection` and `SqliteRunStorage.connect`, and `has_table` and
`store_event_batch`; tests/test_instance_storage.py pins
them and the batching to the installed Dagster (TESTED_WITH in assets/dagster_compat.py).
"""

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

import sqlalchemy as sa
from dagster import _check as check
from dagster._config import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import (
    SqliteScheduleStorage,
)
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)

from resources.engines import kept

ENGINES_KEPT = 16  # engines (one open connection each) of the databases used last
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = 1000  # events per store_event_batch at most (a run of 100 documents: ~400)
BUSY = dict(timeout=SQLITE_BUSY_TIMEOUT_SECONDS)  # sqlite3.connect's wait for a lock, as Dagster's

def pooled_engine(conn_string: str, **connect_args) -> sa.Engine:
    """An engine that keeps one SQLite connection open and opens more when threads need
    them at once (never waits for one)."""
    engine = sa.create_engine(conn_string, pool_size=1, max_overflow=-1,
                              connect_args={"check_same_thread": False, **connect_args})
    sa.event.listen(engine, "connect", _sync_at_checkpoints)
    return kept(engine)


def _sync_at_checkpoints(connection, _record) -> None:
    # The databases are in WAL mode. FULL (SQLite's default) syncs the log to disk at every
    # commit, ~150 us here, and an event is several commits; NORMAL syncs at checkpoints. A
    # crashed or killed process still loses no committed event (the log is in the OS's
    # hands); only the OS crashing or losing power could lose the last ones.
    connection.execute("PRAGMA synchronous=NORMAL")


class SchemaFoundOnce:
    """Dagster asks whether a table or column exists before most writes: a materialization
    asks twice, a check evaluation once, each time with a new engine or a schema inspection
    (~5% of an enrichment step's CPU on SQLite; on PostgreSQL a round trip each). Tables and
    columns are added by `dagster instance migrate` and never dropped while the instance is
    in use, so what was found once is remembered; what was not is asked again. Mixed into
    an event log storage, before it."""

    _schema_seen: set[tuple[str, ...]]

    def has_table(self, table_name: str) -> bool:
        key = ("table", table_name)
        if key not in self._seen() and super().has_table(table_name):
            self._seen().add(key)
        return key in self._seen()

    def _has_asset_key_col_on_connection(self, conn: sa.Connection, column_name: str) -> bool:
        key = ("asset_keys column", column_name)
        if key not in self._seen() and super()._has_asset_key_col_on_connection(
                conn, column_name):
            self._seen().add(key)
        return key in self._seen()

    def _seen(self) -> set[tuple[str, ...]]:
        if not hasattr(self, "_schema_seen"):  # asked from the parent's constructor too
            self._schema_seen = set()
        return self._schema_seen


class PooledEventLogStorage(SchemaFoundOnce, SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None):
        # index.db and the runs used last; index.db is used by nearly every call, so it
        # stays (were it pushed out, the next call would only reconnect)
        self._engines: OrderedDict[str, sa.Engine] = OrderedDict()
        self._batch = threading.local()  # .held: {shard: connection} in store_event_batch
        # Dagster hands a new run's planned events to store_event_batch only when this is
        # set (it is read at each event); unset, each is stored on its own (~3 ms apiece)
        os.environ.setdefault(EVENT_BATCH_SIZE_ENV, str(EVENT_BATCH_SIZE))
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "PooledEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> sa.Engine:
        """Called with self._db_lock held."""
        engine = self._engines.pop(shard, None) or pooled_engine(
            self.conn_string_for_shard(shard), **BUSY)
        self._engines[shard] = engine
        while len(self._engines) > ENGINES_KEPT:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    def _open(self, shard: str) -> sa.Engine:
        """The shard's engine, its database created if need be. Called with self._db_lock
        held."""
        check.str_param(shard, "shard")
        engine = self._engine(shard)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        return engine

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        if (held := getattr(self._batch, "held", None)) is not None:  # in store_event_batch
            yield held[shard]
            return
        with self._db_lock:
            with self._open(shard).connect() as conn, conn.begin():
                yield conn
            if shard != INDEX_SHARD_NAME:
                self._checkpoint(shard)

    def _checkpoint(self, shard: str) -> None:
        """What the run wrote reaches the file now. Called with self._db_lock held."""
        with self._engine(shard).connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def store_event_batch(self, events) -> None:
        """The events of a batch (a new run's planned events, one per document and asset,
        when DAGSTER_EVENT_BATCH_SIZE is set) in one transaction per database instead of
        one or two per event: all or none of them are stored (on an error Dagster stores
        them again one by one)."""
        shards = sorted({event.run_id for event in events}) + [INDEX_SHARD_NAME]
        with self._db_lock:
            with contextlib.ExitStack() as stack:
                held = {}
                for shard in shards:
                    held[shard] = stack.enter_context(self._open(shard).connect())
                    stack.enter_context(held[shard].begin())
                self._batch.held = held
                try:
                    for event in events:
                        self.store_event(event)
                finally:
                    self._batch.held = None
            for shard in shards[:-1]:
                self._checkpoint(shard)

    def _close_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_engines()  # the run databases are about to be deleted
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_engines()


class PooledRunStorage(SqliteRunStorage):
    def __init__(self, conn_string: str, inst_data=None):
        self._engine = pooled_engine(conn_string)  # connects on first use
        super().__init__(conn_string, inst_data)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()  # closes the open connection; the engine stays usable


class PooledSqliteStorage(DagsterSqliteStorage):
    """dagster.yaml: `storage: {custom: {module: resources.instance_storage, class:
    PooledSqliteStorage, config: {base_dir: {env: DAGSTER_HOME}}}}` - the same files as
    Dagster's default storage in $DAGSTER_HOME."""

    def __init__(self, base_dir: str, inst_data=None):  # noqa: D107 - the parent's, our parts
        self.base_dir = check.str_param(base_dir, "base_dir")
        self._run_storage = PooledRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def config_type(cls):
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "PooledSqliteStorage":
        return cls.from_local(inst_data=inst_data, **config_value)
