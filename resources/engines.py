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

import os
import weakref

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
