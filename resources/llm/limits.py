"""Throttles: token buckets for RPM/TPM and AIMD adaptive concurrency.

The bucket and the AIMD rule are pure: they take `now` and return how long to wait, so
unit tests drive them with a fake clock. `ConcurrencyGate` is the asyncio wrapper.
"""

import asyncio
import contextlib
import math
import re
from collections import deque
from collections.abc import Callable


class TokenBucket:
    """A refilling budget (requests or tokens per second) with reservations.

    `reserve` debits at once and says how long the caller must wait before spending: the
    level may go negative, which queues later callers behind earlier ones in order.
    """

    def __init__(self, rate_per_second: float, capacity: float, now: float):
        self.rate = rate_per_second
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, amount: float, now: float) -> float:
        self._refill(now)
        self.level -= amount
        return max(0.0, -self.level / self.rate)

    def try_take(self, amount: float, now: float) -> float:
        """Take `amount` if it is there (0.0), else take nothing and say how long until
        it will be: how a server enforces its limit."""
        self._refill(now)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate

    def settle(self, estimated: float, actual: float, now: float) -> None:
        """Correct a reservation once the real cost is known (refund or charge)."""
        self._refill(now)
        self.level = min(self.capacity, self.level + estimated - actual)

    def sync(self, remaining: float, reset_seconds: float | None, now: float) -> None:
        """Follow the server's view (x-ratelimit-remaining-*, reset-*): never spend more
        than it says is left; with nothing left, wait until its window resets."""
        self._refill(now)
        self.level = min(self.level, remaining)
        if remaining <= 0 and reset_seconds:
            self.level = min(self.level, -reset_seconds * self.rate)


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|h|m|s))")


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset headers: "1s", "6m0s", "250ms", "1h2m3.5s", or plain seconds."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    total, matched = 0.0, False
    for number, unit in _DURATION.findall(value):
        matched = True
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total if matched else None


class AIMDLimit:
    """Additive increase, multiplicative decrease of the concurrency limit.

    +1 after `limit` successes (about one round trip at full concurrency). Halved when
    overload signals (429, timeouts) make up more than `overload_ratio` of the last
    `window` outcomes, at most once per `decrease_interval` seconds: a provider that
    rejects one request in twenty is noisy, not overloaded, and halving on every such
    429 would starve a healthy endpoint.

    `slow_start` is for a server whose limits are not known yet: the limit starts at the
    floor and doubles every round trip (+1 per success) until the first overload signal,
    which halves it at once and ends the slow start. The first answers teach the engine
    the server's x-ratelimit-* limits before it has many requests in flight.
    """

    def __init__(self, floor: int, ceiling: int, initial: int | None = None,
                 window: int = 50, overload_ratio: float = 0.2, decrease_interval: float = 1.0,
                 slow_start: bool = False):
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got {floor}, {ceiling}")
        self.floor, self.ceiling = floor, ceiling
        self.slow_start = slow_start
        if slow_start:
            initial = floor
        self.limit = min(ceiling, max(floor, initial or ceiling))
        self.overload_ratio = overload_ratio
        self.decrease_interval = decrease_interval
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = overload signal
        self._successes = 0
        self._last_decrease = -math.inf

    def on_success(self) -> None:
        self._outcomes.append(False)
        self._successes += 1
        if self.slow_start:
            self.limit = min(self.ceiling, self.limit + 1)
        elif self._successes >= self.limit:
            self._successes = 0
            self.limit = min(self.ceiling, self.limit + 1)

    def on_overload(self, now: float) -> bool:
        """Record an overload signal; True if the limit was lowered."""
        self._outcomes.append(True)
        if self.slow_start:  # the first sign of a limit: stop probing upwards
            self.slow_start = False
            self._last_decrease = now
            self.limit = max(self.floor, self.limit // 2)
            return True
        seen = len(self._outcomes)
        if seen < min(10, self._outcomes.maxlen):
            return False
        if sum(self._outcomes) / seen <= self.overload_ratio:
            return False
        if now - self._last_decrease < self.decrease_interval:
            return False
        self._last_decrease = now
        self._successes = 0
        self._outcomes.clear()
        self.limit = max(self.floor, self.limit // 2)
        return True


class ConcurrencyGate:
    """At most `limit()` holders at once; records the peak.

    `cap` (optional) lowers the AIMD limit to what is useful: when a rate budget binds,
    requests beyond rate x latency only queue for tokens (Little's law), and a long queue
    of reservations delays the retries that finish a batch.
    """

    def __init__(self, aimd: AIMDLimit, cap: Callable[[], int | None] = lambda: None):
        self.aimd = aimd
        self.cap = cap
        self.in_flight = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    def limit(self) -> int:
        cap = self.cap()
        return self.aimd.limit if cap is None else max(self.aimd.floor, min(self.aimd.limit, cap))

    @contextlib.asynccontextmanager
    async def slot(self):
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit())
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                # wake as many waiters as there are free slots (the limit may have grown),
                # not all of them
                self._changed.notify(max(1, self.limit() - self.in_flight))

    async def limit_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()
