"""The engine's shared pacing: RPM/TPM budgets, the server's x-ratelimit-* headers, and
the hold a header-less 429 puts on every caller."""

import math
import random

from resources.llm.limits import TokenBucket, parse_reset
from resources.llm.settings import LLMSettings


def _bucket(per_minute: float | None, burst: float, now: float) -> TokenBucket | None:
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


class Throttle:
    def __init__(self, settings: LLMSettings, rng: random.Random, now: float):
        self.settings = settings
        self.rng = rng
        self.rpm = _bucket(settings.rpm, settings.burst_seconds, now)
        # Token costs are lumpy (one prompt may be thousands): allow a 10 s burst of tokens.
        self.tpm = _bucket(settings.tpm, max(settings.burst_seconds, 10.0), now)
        # A 429 without x-ratelimit-* headers says "everyone wait": nobody sends before
        # hold_until, and the waiters spread over the following hold_spread seconds
        # rather than all returning at once.
        self.hold_until = 0.0
        self.hold_spread = 0.0

    def too_big(self, estimate: int) -> str | None:
        """Why a request can never be sent: larger than a minute's token budget."""
        if self.settings.tpm and estimate > self.settings.tpm:
            return (f"the request needs ~{estimate} tokens, more than "
                    f"LLM_TPM={self.settings.tpm:.0f} allows in a minute")
        return None

    def reserve(self, estimate: int, now: float) -> float:
        """Seconds to wait before sending a request of `estimate` tokens."""
        held = self.hold_until - now
        waits = [held + self.hold_spread * self.rng.random() if held > 0 else 0.0]
        if self.rpm is not None:
            waits.append(self.rpm.reserve(1, now))
        if self.tpm is not None:
            waits.append(self.tpm.reserve(estimate, now))
        return max(waits)

    def settle(self, estimate: int, actual: int, now: float) -> None:
        if self.tpm is not None:
            self.tpm.settle(estimate, actual, now)

    def hold(self, seconds: float, now: float) -> None:
        self.hold_until = max(self.hold_until, now + seconds)
        self.hold_spread = seconds

    def follow(self, headers, now: float) -> None:
        """Adopt and follow x-ratelimit-* headers; ignore ones that don't parse."""
        if not headers:
            return
        for name, unit in (("rpm", "requests"), ("tpm", "tokens")):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{unit}"))
            if remaining is None:
                continue
            bucket = getattr(self, name)
            if bucket is None:  # the server tells us its limit: adopt it
                limit = _number(headers.get(f"x-ratelimit-limit-{unit}"))
                if not limit or limit <= 0:
                    continue
                bucket = _bucket(limit, self.settings.burst_seconds, now)
                setattr(self, name, bucket)
            bucket.sync(remaining, parse_reset(headers.get(f"x-ratelimit-reset-{unit}")), now)

    def useful_concurrency(self, latency: float | None) -> int | None:
        """Little's law: with the RPM budget binding, rate x latency requests in flight
        already use it all; a quarter more absorbs jitter, more would only queue."""
        if self.rpm is None or latency is None:
            return None
        return math.ceil(self.rpm.rate * latency * 1.25) + 2
