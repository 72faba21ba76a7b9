"""One RPM/TPM budget for every process of a deployment, kept in PostgreSQL.

With LLM_BUDGET_URL=postgresql://… (scripts/prod.sh sets it to the instance's database),
every engine of every run, step and worker that talks to the same provider with the same
models spends one budget: a row of `docgraph_llm_budget` holding the request and token
buckets and the hold of a header-less 429. Each operation (reserve before a call; settle
with the usage the answer reports; follow x-ratelimit-* headers; hold) locks the row, applies
the rules of throttle.Budget to it on the database's clock, and writes it back, in one
short transaction: the same rules as one process alone, shared.

Reservations debit at once and queue the callers in order (a level below zero is the
queue). A process that dies with reservations still queued would leave them spent, so
each engine holds a lease (`docgraph_llm_holders`: what it has reserved but not yet sent,
renewed every LEASE_SECONDS / 3); any engine that finds a lease expired gives its
reservations back to the budget. What a dead process had already sent stays spent: the
provider counted it.

If the database cannot be reached, the engine says so once, paces itself on an equal
share of the budget (the configured rates divided by the engines last seen holding a
lease, or LLM_BUDGET_FALLBACK_SHARE if none was ever seen), counts the calls it paced so
(`budget_fallback_calls` in the batch metrics), and goes back to the shared budget as soon
as the database answers again.

Why our own and not a library: pyrate-limiter's PostgreSQL bucket logs one row per
request in a sliding window (weights are SMALLINT, too small for token counts) and cannot
refund an estimate with the usage an answer reports; token-throttle reserves and refunds
but keeps its state only in Redis or memory and needs Python 3.12; `limits` has no
PostgreSQL storage and no refunds; none follows x-ratelimit-* headers or shares a 429's
hold, and none gives a dead process's reservations back.
"""

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg2
import psycopg2.errors

from resources.engines import is_postgres, libpq_url
from resources.llm.limits import TokenBucket
from resources.llm.settings import LLMSettings
from resources.llm.throttle import Budget, Throttle, bucket, token_burst

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_SECONDS = 10.0
_UNREACHABLE = (psycopg2.OperationalError, psycopg2.InterfaceError)
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
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(self.url, connect_timeout=5)
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    for statement in _TABLES:  # another engine may create them at once
                        with contextlib.suppress(psycopg2.errors.UniqueViolation):
                            cur.execute(statement)
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
        fresh = Budget(bucket(self.settings.rpm, self.settings.burst_seconds, now),
                       bucket(self.settings.tpm, token_burst(self.settings), now))
        row = _row(fresh, now)
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
        except _UNREACHABLE:
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
                _give_back(budget, requests, tokens, now)
            cur.execute("SELECT count(*) FROM docgraph_llm_holders WHERE budget = %s",
                        (self.key,))
            return cur.fetchone()[0]

    def leave(self, queued_requests: float, queued_tokens: float) -> None:
        """Give back what is still queued and end the lease."""
        with self.locked() as (budget, now):
            _give_back(budget, queued_requests, queued_tokens, now)
            with self._conn.cursor() as cur:
                cur.execute("DELETE FROM docgraph_llm_holders WHERE holder = %s", (self.holder,))
        self._conn.close()


def _give_back(budget: Budget, requests: float, tokens: float, now: float) -> None:
    if budget.rpm is not None and requests:
        budget.rpm.settle(requests, 0, now)
    if budget.tpm is not None and tokens:
        budget.tpm.settle(tokens, 0, now)


class SharedThrottle(Throttle):
    """Throttle whose budget is the deployment's (BudgetStore), with a local equal share
    while the database cannot be reached. Database work runs in one thread of its own, so
    the event loop never waits on it except for a reservation."""

    def __init__(self, settings: LLMSettings, rng, now: float,
                 lease_seconds: float = LEASE_SECONDS):
        super().__init__(settings, rng, now)
        self.store = BudgetStore(settings.budget_url, budget_key(settings), settings,
                                 lease_seconds)
        self.fallback_share = settings.budget_fallback_share
        self.lease_seconds = lease_seconds
        self.queued = [0.0, 0.0]  # requests and tokens reserved, not yet sent
        self._local: Budget | None = None  # the equal share, while the database is away
        self._holders: int | None = None
        self._pool: ThreadPoolExecutor | None = None  # started by the first reservation
        self._stop = threading.Event()

    def _start(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-budget")
            self._stop = threading.Event()
            threading.Thread(target=self._renew_leases, args=(self._pool, self._stop),
                             daemon=True, name="llm-budget-lease").start()
        return self._pool

    # -- the database, from the budget thread ------------------------------------------
    def _shared(self, operation: Callable[[Budget, float], T], fallback: Callable[[], T]) -> T:
        """`operation` on the shared budget, or `fallback()` if the database is away."""
        for attempt in range(2):  # a dropped connection is made again once
            if self._local is not None:
                break
            try:
                with self.store.locked() as (budget, now):
                    return operation(budget, now)
            except _UNREACHABLE as exc:
                if attempt:
                    self._fall_back(exc)
        return fallback()

    def _fall_back(self, exc: Exception) -> None:
        share = self._holders or self.fallback_share
        now = time.monotonic()
        self._local = Budget(
            bucket(self.settings.rpm and self.settings.rpm / share, self.settings.burst_seconds,
                   now),
            bucket(self.settings.tpm and self.settings.tpm / share, token_burst(self.settings),
                   now))
        log.warning("LLM budget: the shared budget at %s cannot be reached (%s): this engine "
                    "paces itself on 1/%d of LLM_RPM=%s, LLM_TPM=%s until it can",
                    self.store.url.split("@")[-1], str(exc).strip().splitlines()[0], share,
                    self.settings.rpm, self.settings.tpm)

    def _renew_leases(self, pool: ThreadPoolExecutor, stop: threading.Event) -> None:
        while not stop.wait(self.lease_seconds / 3):
            if self._local is not None and not self._reachable():
                continue  # probed from here: the budget thread never waits on a dead server
            try:
                pool.submit(self._renew).result()
            except (_UNREACHABLE, RuntimeError):  # RuntimeError: the pool was shut down
                continue
            except Exception:  # noqa: BLE001 - the lease thread must outlive a surprise
                log.exception("LLM budget: renewing the lease failed")

    def _reachable(self) -> bool:
        try:
            psycopg2.connect(self.store.url, connect_timeout=5).close()
            return True
        except _UNREACHABLE:
            return False

    def _renew(self) -> None:  # in the budget thread
        self._holders = self.store.renew(*self.queued)
        if self._local is not None:
            self._local = None
            log.warning("LLM budget: the shared budget answers again; this engine spends it "
                        "again (%d calls were paced on the equal share)", self.fallback_calls)

    def _submit(self, operation: Callable[[Budget, float], None]) -> None:
        """Run `operation` in the budget thread; nobody waits for it."""
        done = self._start().submit(self._shared, operation,
                                    lambda: operation(self._local, time.monotonic()))
        done.add_done_callback(_log_failure)

    # -- what the engine calls ---------------------------------------------------------
    async def reserve(self, estimate: int, now: float) -> float:
        def local() -> float:
            self.fallback_calls += 1
            return self._local.reserve(estimate, time.monotonic(), self.rng)

        wait = await asyncio.wrap_future(self._start().submit(
            self._shared, lambda budget, at: budget.reserve(estimate, at, self.rng), local))
        self.queued[0] += 1
        self.queued[1] += estimate
        return wait

    def sent(self, estimate: int) -> None:
        self.queued[0] -= 1
        self.queued[1] -= estimate

    def release(self, estimate: int, now: float) -> None:
        self.sent(estimate)
        self._submit(lambda budget, at: budget.release(estimate, at))

    def settle(self, estimate: int, actual: int, now: float) -> None:
        if self.budget.tpm is not None:  # configured, or adopted from headers
            self._submit(lambda budget, at: budget.settle(estimate, actual, at))

    def hold(self, seconds: float, now: float) -> None:
        self._submit(lambda budget, at: budget.hold(seconds, at))

    def follow(self, headers, now: float) -> None:
        super().follow(headers, now)  # the local view: useful concurrency, adopted limits
        if headers:
            burst = self.settings.burst_seconds
            self._submit(lambda budget, at: budget.follow(headers, at, burst))

    def close(self) -> None:
        """Stop renewing the lease and give back what is still queued (a later
        reservation joins again)."""
        if self._pool is None:
            return
        self._stop.set()
        with contextlib.suppress(Exception):  # unreachable: the lease expires on its own
            self._pool.submit(self.store.leave, *self.queued).result(timeout=10)
        self._pool.shutdown(wait=False)
        self._pool = None


def _log_failure(done) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("LLM budget: an update failed: %r", done.exception())


def throttle_for(settings: LLMSettings, rng, now: float) -> Throttle:
    """The engine's throttle: the deployment's budget with LLM_BUDGET_URL, else its own."""
    if not settings.budget_url or settings.offline:
        return Throttle(settings, rng, now)
    if not is_postgres(settings.budget_url):
        raise ValueError(f"LLM_BUDGET_URL must be a postgresql:// URL, not "
                         f"{settings.budget_url.split('://')[0]}://…")
    return SharedThrottle(settings, rng, now)

