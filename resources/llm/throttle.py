"""The engine's pacing: RPM/TPM budgets, the server's x-ratelimit-* headers, and the hold a
header-less 429 puts on every caller.

`Budget` is the state and its rules (pure: every method takes `now`). `Throttle` keeps one
in this process; `SharedThrottle` (resources/llm/shared_budget.py) keeps it in PostgreSQL
for every process of a deployment and applies the same rules to it. The engine calls
`reserve` (awaited: it may ask the database) and then `sent`, and, without waiting,
`settle`, `follow` and `hold`.
"""

import math
import random
from dataclasses import dataclass

from resources.llm.limits import TokenBucket, parse_reset
from resources.llm.settings import LLMSettings


def bucket(per_minute: float | None, burst: float, now: float) -> TokenBucket | None:
    if not per_minute:
        return None
    rate = per_minute / 60
    return TokenBucket(rate, max(1.0, rate * burst), now)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def has_ratelimit_headers(headers) -> bool:
    return bool(headers) and any(
        headers.get(f"x-ratelimit-remaining-{unit}") is not None for unit in ("requests", "tokens")
    )


@dataclass
class Budget:
    """The request and token buckets, and the hold: nobody sends before `hold_until`, and
    the waiters spread over the following `hold_spread` seconds rather than all returning
    at once."""

    rpm: TokenBucket | None
    tpm: TokenBucket | None
    hold_until: float = 0.0
    hold_spread: float = 0.0

    @classmethod
    def configured(cls, settings: LLMSettings, now: float, share: int = 1) -> "Budget":
        """Full buckets of LLM_RPM / LLM_TPM (divided by `share`: one process's part)."""
        def per_process(per_minute: float | None) -> float | None:
            return per_minute and per_minute / share

        # Token costs are lumpy (one prompt may be thousands): allow a 10 s burst of tokens.
        return cls(bucket(per_process(settings.rpm), settings.burst_seconds, now),
                   bucket(per_process(settings.tpm), max(settings.burst_seconds, 10.0), now))

    def reserve(self, estimate: float, now: float, rng: random.Random) -> float:
        """Seconds to wait before sending a request of `estimate` tokens (debited now)."""
        held = self.hold_until - now
        waits = [held + self.hold_spread * rng.random() if held > 0 else 0.0]
        if self.rpm is not None:
            waits.append(self.rpm.reserve(1, now))
        if self.tpm is not None:
            waits.append(self.tpm.reserve(estimate, now))
        return max(waits)

    def release(self, requests: float, tokens: float, now: float) -> None:
        """Give back reservations that will not be sent."""
        if self.rpm is not None:
            self.rpm.settle(requests, 0, now)
        if self.tpm is not None:
            self.tpm.settle(tokens, 0, now)

    def settle(self, estimate: float, actual: float, now: float) -> None:
        if self.tpm is not None:
            self.tpm.settle(estimate, actual, now)

    def hold(self, seconds: float, now: float) -> None:
        self.hold_until = max(self.hold_until, now + seconds)
        self.hold_spread = seconds

    def follow(self, headers, now: float, burst_seconds: float) -> None:
        """Adopt and follow x-ratelimit-* headers; ignore ones that don't parse."""
        if not headers:
            return
        for name, unit in (("rpm", "requests"), ("tpm", "tokens")):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{unit}"))
            if remaining is None:
                continue
            current = getattr(self, name)
            if current is None:  # the server tells us its limit: adopt it
                current = bucket(_number(headers.get(f"x-ratelimit-limit-{unit}")),
                                 burst_seconds, now)
                if current is None or current.rate <= 0:
                    continue
                setattr(self, name, current)
            current.sync(remaining, parse_reset(headers.get(f"x-ratelimit-reset-{unit}")), now)


class Throttle:
    """The budget of this process alone."""

    def __init__(self, settings: LLMSettings, rng: random.Random, now: float):
        self.settings = settings
        self.rng = rng
        self.fallback_calls = 0  # reservations paced on an equal share (SharedThrottle)
        self.budget = Budget.configured(settings, now)

    @property
    def rpm(self) -> TokenBucket | None:
        return self.budget.rpm

    def too_big(self, estimate: int) -> str | None:
        """Why a request can never be sent: larger than a minute's token budget."""
        if self.settings.tpm and estimate > self.settings.tpm:
            return (f"the request needs ~{estimate} tokens, more than "
                    f"LLM_TPM={self.settings.tpm:.0f} allows in a minute")
        return None

    async def reserve(self, estimate: int, now: float) -> float:
        return self.budget.reserve(estimate, now, self.rng)

    def sent(self, estimate: int) -> None:
        """The reservation's wait is over and the request is on its way."""

    def release(self, estimate: int, now: float) -> None:
        self.budget.release(1, estimate, now)

    def settle(self, estimate: int, actual: int, now: float) -> None:
        self.budget.settle(estimate, actual, now)

    def hold(self, seconds: float, now: float) -> None:
        self.budget.hold(seconds, now)

    def follow(self, headers, now: float) -> None:
        self.budget.follow(headers, now, self.settings.burst_seconds)

    def close(self) -> None:
        """Nothing to give back here; a SharedThrottle leaves its budget."""

    def useful_concurrency(self, latency: float | None) -> int | None:
        """Little's law: with the RPM budget binding, rate x latency requests in flight
        already use it all; a quarter more absorbs jitter, more would only queue."""
        if self.rpm is None or latency is None:
            return None
        return math.ceil(self.rpm.rate * latency * 1.25) + 2
