"""Database engines kept open for the life of a process, and the PostgreSQL URL forms.

An engine keeps its connections open (that is why it is kept); a forked child must not
use, or close, the connections of its parent, so every kept engine forgets them in the
child (`dispose(close=False)`, SQLAlchemy's advice) and opens its own on first use.

Tables are created with `CREATE … IF NOT EXISTS`, which PostgreSQL does not make safe
against another session creating the same table at that moment (one of them fails: a
unique violation on pg_type, or "type … already exists"): processes starting together
(Celery workers, `docgraph` commands, engines) take `SCHEMA_LOCK` first
(`create_pg_tables`).

PostgreSQL URLs come in two spellings: SQLAlchemy needs `postgresql+psycopg2://` (it maps a
bare `postgresql://` to psycopg 3, and dagster-postgres ships psycopg2), psycopg2 itself
the bare one.
"""

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

_kept: "weakref.WeakSet[sa.Engine]" = weakref.WeakSet()
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


def kept(engine: sa.Engine) -> sa.Engine:
    """`engine`, forgotten by forked children."""
    _kept.add(engine)
    return engine


def _forget_parents_connections() -> None:
    for engine in list(_kept):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parents_connections)


def is_postgres(url: str) -> bool:
    return url.startswith(_POSTGRES_SCHEMES)


def sqlalchemy_url(url: str) -> str:
    """The URL for SQLAlchemy: a PostgreSQL one through psycopg2, others as they are."""
    return f"postgresql+psycopg2://{url.split('://', 1)[1]}" if is_postgres(url) else url


def libpq_url(url: str) -> str:
    """A PostgreSQL URL as psycopg2.connect takes it."""
    return f"postgresql://{url.split('://', 1)[1]}"


SCHEMA_LOCK = 0x646F6367  # "docg": the advisory lock held while our tables are created


def create_pg_tables(conn, statements: list[str]) -> None:
    """Run `statements` (CREATE … IF NOT EXISTS) on a psycopg2 connection in autocommit
    mode, in one transaction holding SCHEMA_LOCK; the connection is left as it was."""
    conn.autocommit = False
    try:
        with conn, conn.cursor() as cur:  # commits, or rolls back on an error
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.autocommit = True


_ENGINE_LOCK = threading.Lock()
_WRITE = "docgraph_write"  # execution option: this transaction writes


def database(url: str, schema: tuple[str, ...]) -> sa.Engine:
    """The kept engine (a pool of connections) of a SQLite or PostgreSQL database with
    `schema` (CREATE … IF NOT EXISTS statements) run: one per database and schema, made by
    one thread (threads starting at once would otherwise each create the schema and switch
    SQLite's journal, which fails, "database is locked", rather than waits)."""
    with _ENGINE_LOCK:
        return _new_engine(url, schema)


@functools.lru_cache(maxsize=8)  # the databases used last; the others' engines close
def _new_engine(url: str, schema: tuple[str, ...]) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args=dict(timeout=30, check_same_thread=False))
        sa.event.listen(engine, "connect", _sqlite_connected)
        # A deferred transaction that writes cannot wait for another writer: SQLite may
        # refuse it at once, "database is locked", busy timeout or not. A writing
        # transaction takes the write lock at BEGIN, and waits its turn there instead.
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN"))
    else:
        engine = sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True)
    with transaction(engine, write=True) as conn:
        if engine.dialect.name == "postgresql":  # others may create it at the same moment
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": SCHEMA_LOCK})
        for statement in schema:
            conn.execute(sa.text(statement))
    return kept(engine)


@contextlib.contextmanager
def transaction(engine: sa.Engine, write: bool) -> Iterator[sa.Connection]:
    """One transaction; a writing one takes SQLite's write lock at its start."""
    with engine.connect() as conn, conn.execution_options(**{_WRITE: write}).begin():
        yield conn


def _sqlite_connected(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver's own BEGIN off: ours is IMMEDIATE
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
