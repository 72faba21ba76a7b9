"""The shared LLM budget's rows in PostgreSQL (resources/llm/shared_budget.py uses them).

`docgraph_llm_budget`: one row per provider and models with the request and token buckets
and a header-less 429's hold, all on the database's clock (epoch seconds). `locked()` hands
out the row as a throttle.Budget under a row lock and writes it back when the block ends,
so every process applies the same rules to the same state. `docgraph_llm_holders`: one
lease per engine, with what it has reserved and not yet sent; `renew` gives the queued
reservations of expired leases back.
"""

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator

import psycopg2

from resources.engines import create_pg_tables, libpq_url
from resources.llm.limits import TokenBucket
from resources.llm.settings import LLMSettings
from resources.llm.throttle import Budget

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
UNREACHABLE = (psycopg2.OperationalError, psycopg2.InterfaceError)
_COLUMNS = ("request_rate", "request_capacity", "request_level",
            "token_rate", "token_capacity", "token_level", "updated", "hold_until",
            "hold_spread")
_TABLES = (
    "CREATE TABLE IF NOT EXISTS docgraph_llm_budget (budget TEXT PRIMARY KEY,"
    " request_rate DOUBLE PRECISION, request_capacity DOUBLE PRECISION,"
    " request_level DOUBLE PRECISION, token_rate DOUBLE PRECISION,"
    " token_capacity DOUBLE PRECISION, token_level DOUBLE PRECISION,"
    " updated DOUBLE PRECISION NOT NULL, hold_until DOUBLE PRECISION NOT NULL,"
    " hold_spread DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS docgraph_llm_holders (holder TEXT PRIMARY KEY,"
    " budget TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,"
    " queued_requests DOUBLE PRECISION NOT NULL, queued_tokens DOUBLE PRECISION NOT NULL)",
)
_NOW = "extract(epoch from clock_timestamp())::float8"


def budget_key(settings: LLMSettings) -> str:
    """One budget per provider and models: engines that share both share it."""
    return f"{settings.provider} chat={settings.chat_model} embed={settings.embed_model}"


def _state(row: tuple) -> Budget:
    """The row as a Budget (its buckets at the row's `updated` time)."""
    rr, rc, rl, tr, tc, tl, updated, hold_until, hold_spread = row

    def restored(rate, capacity, level) -> TokenBucket | None:
        if rate is None:
            return None
        restored_bucket = TokenBucket(rate, capacity, updated)
        restored_bucket.level = level
        return restored_bucket

    return Budget(restored(rr, rc, rl), restored(tr, tc, tl), hold_until, hold_spread)


def _row(budget: Budget, now: float) -> tuple:
    values = []
    for current in (budget.rpm, budget.tpm):
        if current is not None:
            current._refill(now)  # every bucket at the one `updated` time of the row
        values += [None, None, None] if current is None else [
            current.rate, current.capacity, current.level]
    return (*values, now, budget.hold_until, budget.hold_spread)


class BudgetStore:
    """The budget's row and this engine's lease, on one connection (used by one thread)."""

    def __init__(self, url: str, key: str, settings: LLMSettings,
                 lease_seconds: float = LEASE_SECONDS):
        self.url = libpq_url(url)
        self.key = key
        self.settings = settings
        self.lease_seconds = lease_seconds
        # One lease per engine, not per content: a random part, since one process may run
        # several engines (and a pid is reused on another machine or after a restart).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(self.url, connect_timeout=5)
            try:
                conn.autocommit = True
                create_pg_tables(conn, _TABLES)
                with conn.cursor() as cur:
                    self._join(cur)
                conn.autocommit = False
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _join(self, cur) -> None:
        """The budget's row (this engine's configured limits win over the row's: the
        newest configuration applies), and this engine's lease."""
        cur.execute(f"SELECT {_NOW}")
        [(now,)] = cur.fetchall()
        row = _row(Budget.configured(self.settings, now), now)
        cur.execute(
            f"INSERT INTO docgraph_llm_budget (budget, {', '.join(_COLUMNS)})"
            f" VALUES (%s, {', '.join(['%s'] * len(_COLUMNS))}) ON CONFLICT (budget) DO UPDATE"
            " SET request_rate = coalesce(excluded.request_rate, docgraph_llm_budget.request_rate),"
            " request_capacity = coalesce(excluded.request_capacity,"
            "   docgraph_llm_budget.request_capacity),"
            " token_rate = coalesce(excluded.token_rate, docgraph_llm_budget.token_rate),"
            " token_capacity = coalesce(excluded.token_capacity,"
            "   docgraph_llm_budget.token_capacity),"
            " request_level = coalesce(docgraph_llm_budget.request_level, excluded.request_level),"
            " token_level = coalesce(docgraph_llm_budget.token_level, excluded.token_level)",
            (self.key, *row))
        cur.execute("INSERT INTO docgraph_llm_holders VALUES (%s, %s, %s, 0, 0)"
                    " ON CONFLICT (holder) DO NOTHING",
                    (self.holder, self.key, now + self.lease_seconds))

    @contextlib.contextmanager
    def locked(self) -> Iterator[tuple[Budget, float]]:
        """The budget as it is now (row locked), written back when the block ends."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT {', '.join(_COLUMNS)}, {_NOW} FROM docgraph_llm_budget"
                            " WHERE budget = %s FOR UPDATE", (self.key,))
                *row, now = cur.fetchone()
                budget = _state(tuple(row))
                yield budget, now
                cur.execute(f"UPDATE docgraph_llm_budget SET"
                            f" {', '.join(f'{c} = %s' for c in _COLUMNS)} WHERE budget = %s",
                            (*_row(budget, now), self.key))
            conn.commit()
        except UNREACHABLE:
            conn.close()  # the next operation connects again
            raise
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise

    def renew(self, queued_requests: float, queued_tokens: float) -> int:
        """Renew this engine's lease with what it has queued; give the queued
        reservations of expired leases back to the budget. The engines holding a lease."""
        with self.locked() as (budget, now), self._conn.cursor() as cur:
            cur.execute("UPDATE docgraph_llm_holders SET expires = %s,"
                        " queued_requests = %s, queued_tokens = %s WHERE holder = %s",
                        (now + self.lease_seconds, queued_requests, queued_tokens, self.holder))
            if cur.rowcount == 0:  # given up for dead (a long pause): take a new one
                cur.execute("INSERT INTO docgraph_llm_holders VALUES (%s, %s, %s, %s, %s)",
                            (self.holder, self.key, now + self.lease_seconds, queued_requests,
                             queued_tokens))
            cur.execute("DELETE FROM docgraph_llm_holders WHERE budget = %s AND expires < %s"
                        " RETURNING holder, queued_requests, queued_tokens", (self.key, now))
            for holder, requests, tokens in cur.fetchall():
                log.info("LLM budget: gave back %.0f requests and %.0f tokens queued by "
                         "%s, whose lease expired", requests, tokens, holder)
                budget.release(requests, tokens, now)
            cur.execute("SELECT count(*) FROM docgraph_llm_holders WHERE budget = %s",
                        (self.key,))
            return cur.fetchone()[0]

    def leave(self, queued_requests: float, queued_tokens: float) -> None:
        """Give back what is still queued and end the lease."""
        with self.locked() as (budget, now):
            budget.release(queued_requests, queued_tokens, now)
            with self._conn.cursor() as cur:
                cur.execute("DELETE FROM docgraph_llm_holders WHERE holder = %s", (self.holder,))
        self._conn.close()
