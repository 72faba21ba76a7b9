"""resources/engines.py against the real PostgreSQL: tables created by many sessions at
once (Celery workers and engines starting together) are created once, without an error."""

import threading

import psycopg2

from resources.engines import create_pg_tables, libpq_url
from resources.llm.budget_store import _TABLES as BUDGET_TABLES
from resources.llm.cache import _PG_TABLE as CACHE_TABLE
from tests.conftest import fresh_database


def test_many_sessions_create_the_same_tables_at_once(pg_url, request):
    with fresh_database(pg_url, request) as url:
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def create() -> None:
            conn = psycopg2.connect(libpq_url(url))
            conn.autocommit = True
            try:
                start.wait()
                create_pg_tables(conn, [CACHE_TABLE, *BUDGET_TABLES])
                assert conn.autocommit  # left as it was
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=create) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
