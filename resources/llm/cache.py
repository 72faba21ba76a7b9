"""A durable response cache: re-runs and resumed runs never pay twice.

A SQLite file in WAL mode by default, so several step processes on one machine can read
and write it at once; for workers on several machines, a PostgreSQL database
(LLM_CACHE_PATH=postgresql://…, e.g. the instance's own): `open_cache` picks by the
setting. Keys are sha256 of everything that determines the answer (model, prompt version,
messages, schema, parameters). Only valid responses are stored: a cached bad answer would
be replayed forever. Another store needs only get/put; a store that cannot be reached
raises one of CACHE_ERRORS, and the engine then asks the provider (a miss, not a failure).
"""

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

import psycopg2

from resources.engines import create_pg_tables, is_postgres, libpq_url

CACHE_ERRORS = (sqlite3.Error, psycopg2.Error)
_PG_TABLE = ("CREATE TABLE IF NOT EXISTS llm_responses (key TEXT PRIMARY KEY,"
             " value TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)")


class Cache(Protocol):
    def get(self, key: str) -> dict | None: ...
    def put(self, key: str, value: dict) -> None: ...


def cache_key(**parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class SQLiteCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # sqlite3 connections are per thread
        with self._conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL)"
            )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict | None:
        row = self._conn().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, value, created_at) VALUES (?, ?, ?)",
            (key, json.dumps(value, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return self._conn().execute("SELECT count(*) FROM responses").fetchone()[0]


class PostgresCache:
    """The same table in PostgreSQL; one autocommit connection per thread (the engine
    calls it from worker threads), made (with the table, if need be) at first use and again
    after the server dropped it: an unreachable server costs misses, not the run."""

    def __init__(self, url: str):
        self.url = libpq_url(url)
        self._local = threading.local()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.url, connect_timeout=5)
            conn.autocommit = True
            create_pg_tables(conn, [_PG_TABLE])
            self._local.conn = conn  # kept once the table is there
        return conn

    def _run(self, sql: str, params: tuple = ()) -> tuple | None:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchone() if cur.description else None
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            conn.close()  # the next call connects again
            raise

    def get(self, key: str) -> dict | None:
        row = self._run("SELECT value FROM llm_responses WHERE key = %s", (key,))
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        self._run("INSERT INTO llm_responses (key, value, created_at) VALUES (%s, %s, %s)"
                  " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                  " created_at = excluded.created_at",
                  (key, json.dumps(value, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return self._run("SELECT count(*) FROM llm_responses")[0]


def open_cache(location: str) -> Cache:
    """LLM_CACHE_PATH: a postgresql:// URL, or a SQLite file's path."""
    if is_postgres(location):
        return PostgresCache(location)
    return SQLiteCache(location)
