"""One RPM/TPM budget for every process of a deployment, kept in PostgreSQL.

With LLM_BUDGET_URL=postgresql://… (scripts/prod.sh sets it to the instance's database),
every engine of every run, step and worker that talks to the same provider with the same
models spends one budget: a row of `docgraph_llm_budget` (resources/llm/budget_store.py)
holding the request and token buckets and the hold of a header-less 429. Each operation
(reserve before a call; settle with the usage the answer reports; follow x-ratelimit-*
headers; hold) locks the row, applies the rules of throttle.Budget to it on the database's
clock, and writes it back, in one short transaction: the same rules as one process alone, shared.

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
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg2

from resources.engines import is_postgres
from resources.llm.budget_store import LEASE_SECONDS, UNREACHABLE, BudgetStore, budget_key
from resources.llm.settings import LLMSettings
from resources.llm.throttle import Budget, Throttle, has_ratelimit_headers

log = logging.getLogger(__name__)
T = TypeVar("T")

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
            except UNREACHABLE as exc:
                if attempt:
                    self._fall_back(exc)
        return fallback()

    def _fall_back(self, exc: Exception) -> None:
        share = self._holders or self.fallback_share
        self._local = Budget.configured(self.settings, time.monotonic(), share)
        log.warning("LLM budget: the shared budget at %s cannot be reached (%s): this engine "
                    "paces itself on 1/%d of LLM_RPM=%s, LLM_TPM=%s until it can",
                    self.store.url.split("@")[-1], str(exc).strip().splitlines()[0], share,
                    self.settings.rpm, self.settings.tpm)

    def _renew_leases(self, pool: ThreadPoolExecutor, stop: threading.Event) -> None:
        while not stop.wait(self.store.lease_seconds / 3):
            if self._local is not None and not self._reachable():
                continue  # probed from here: the budget thread never waits on a dead server
            try:
                pool.submit(self._renew).result()
            except (UNREACHABLE, RuntimeError):  # RuntimeError: the pool was shut down
                continue
            except Exception:  # noqa: BLE001 - the lease thread must outlive a surprise
                log.exception("LLM budget: renewing the lease failed")

    def _reachable(self) -> bool:
        try:
            psycopg2.connect(self.store.url, connect_timeout=5).close()
            return True
        except UNREACHABLE:
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
        self._submit(lambda budget, at: budget.release(1, estimate, at))

    def settle(self, estimate: int, actual: int, now: float) -> None:
        if self.budget.tpm is not None:  # configured, or adopted from headers
            self._submit(lambda budget, at: budget.settle(estimate, actual, at))

    def hold(self, seconds: float, now: float) -> None:
        self._submit(lambda budget, at: budget.hold(seconds, at))

    def follow(self, headers, now: float) -> None:
        super().follow(headers, now)  # the local view: useful concurrency, adopted limits
        if has_ratelimit_headers(headers):  # nothing to share otherwise: no transaction
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

