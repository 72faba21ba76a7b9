"""The production instance's Dagster storage: dagster-postgres with its connections kept open.

Outside the webserver, dagster-postgres's storages use SQLAlchemy's NullPool: every
statement opens a PostgreSQL connection (the server forks and authenticates a backend for
it) and closes it again. A step records each document on its own (a materialization and
its checks: about a dozen events per document in enrichment, each with a table lookup
first), so in the 1,000-document backfill (bench/backfill.py) 27% of an enrichment step's
samples were in `psycopg2.connect` (py-spy), and those backends were most of PostgreSQL's
CPU and the kernel's. Dagster offers no setting for it (its pool size is
fixed even for the webserver: dagster-io/dagster#33935, open).

Here every process keeps one engine per storage and database for its life (shared by the
instances it creates: dagster-celery builds one per step), holding `POOL_SIZE` connections
open and opening up to `MAX_OVERFLOW` more while threads need them (the daemon's many: a
full pool makes a thread wait, and after 30 s fail, so the bound is generous); each is
checked with a ping when taken from the pool (a restarted server costs one reconnect, not a
failed write) and replaced after an hour. A forked child opens its own (resources/engines).
Tables and columns found once are not looked up again (`SchemaFoundOnce`).
Schema, tables and locking are dagster-postgres's; an instance written by the stock storage
reads with this one and the other way round, and the webserver replaces the engines with its
own pooled ones as it does for the stock storage.

dagster.yaml: `storage: {custom: {module: resources.postgres_storage, class:
PooledPostgresStorage, config: {postgres_url: {env: DOCGRAPH_PG_URL}}}}` (the `postgres`
storage's config: a URL, or `postgres_db` parts).
"""

import threading

import sqlalchemy as sa
from dagster._core.storage.config import pg_config
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

from resources.engines import kept
from resources.instance_storage import SchemaFoundOnce

POOL_SIZE = 2
MAX_OVERFLOW = 30
RECYCLE_SECONDS = 3600

_engines: dict[tuple[str, str], sa.Engine] = {}
_lock = threading.Lock()


def shared_engine(kind: str, postgres_url: str, token_provider=None) -> sa.Engine:
    """This process's pooled engine for one storage (`kind`) of the database at the URL."""
    with _lock:
        engine = _engines.get((kind, postgres_url))
        if engine is None:
            engine = kept(create_pg_engine(
                postgres_url, token_provider, isolation_level="AUTOCOMMIT",
                pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_pre_ping=True,
                pool_recycle=RECYCLE_SECONDS))
            _engines[(kind, postgres_url)] = engine
        return engine


class PooledPostgresEventLogStorage(SchemaFoundOnce, PostgresEventLogStorage):
    def __init__(self, postgres_url, should_autocreate_tables=True, inst_data=None,
                 token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine = shared_engine("event_log", self.postgres_url, token_provider)


class PooledPostgresRunStorage(PostgresRunStorage):
    def __init__(self, postgres_url, should_autocreate_tables=True, inst_data=None,
                 token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine = shared_engine("runs", self.postgres_url, token_provider)


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    def __init__(self, postgres_url, should_autocreate_tables=True, inst_data=None,
                 token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine = shared_engine("schedules", self.postgres_url, token_provider)


class PooledPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres's storage with pooled engines (the module docstring says why)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,  # noqa: D107
                 inst_data=None, token_provider=None):
        # the parent's constructor with these storages in place of its NullPool ones
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        storages = (PooledPostgresRunStorage, PooledPostgresEventLogStorage,
                    PooledPostgresScheduleStorage)
        self._run_storage, self._event_log_storage, self._schedule_storage = (
            storage(postgres_url, should_autocreate_tables, token_provider=token_provider)
            for storage in storages)
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def config_type(cls):
        return pg_config()

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "PooledPostgresStorage":
        return cls(postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   inst_data=inst_data,
                   token_provider=get_token_provider_from_config(config_value))
