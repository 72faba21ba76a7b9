"""A circuit breaker that holds work during an outage instead of failing it.

Closed: calls flow. When `threshold` of the last `window` outcomes are outage-type
failures (5xx, timeouts, connection errors) it opens: no calls for `cooldown` seconds
(doubling up to `max_cooldown` while probes keep failing). A rate, not a run of failures
in a row: with many requests in flight, scattered faults line up by chance. Then
half-open: exactly one probe call; its success closes the circuit, its failure reopens
it. Callers ask `decide(now)` before each call and wait while told to. How long one
caller may wait is the caller's business (the engine gives up on an item after
LLM_MAX_OUTAGE_SECONDS of its own waiting); the breaker itself never stops probing, so it
closes as soon as the provider is back, whoever asks next.
"""

from collections import deque
from dataclasses import dataclass
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Decision:
    proceed: bool
    wait: float = 0.0
    probe: bool = False


class CircuitBreaker:
    def __init__(self, threshold: int = 10, cooldown: float = 1.0, max_cooldown: float = 30.0,
                 window: int = 20):
        self.threshold = min(threshold, window)
        self.recent: deque[bool] = deque(maxlen=window)  # True = outage failure
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.state = State.CLOSED
        self.retry_at = 0.0
        self.cooldown = cooldown
        self.probe_in_flight = False
        self.times_opened = 0

    def decide(self, now: float) -> Decision:
        if self.state is State.CLOSED:
            return Decision(proceed=True)
        if self.state is State.OPEN and now >= self.retry_at:
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return Decision(proceed=True, probe=True)
        # Waiting for the probe (or the cooldown): check back soon, not busily.
        return Decision(proceed=False, wait=max(self.retry_at - now, self.base_cooldown / 4))

    def abandon_probe(self) -> None:
        """The probe never finished (cancelled): let the next caller probe instead."""
        self.probe_in_flight = False

    def on_success(self, probe: bool = False) -> None:
        self.recent.append(False)
        if probe or self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.cooldown = self.base_cooldown
            self.probe_in_flight = False

    def on_failure(self, now: float, outage: bool, probe: bool = False) -> None:
        """`outage`: the failure says the provider is down (not a 429 or a 4xx)."""
        if probe:
            self.probe_in_flight = False
        if not outage:
            if probe:  # the provider answered: it is up
                self.on_success(probe=True)
            return
        self.recent.append(True)
        if probe:
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
            self._open(now)
        elif self.state is State.CLOSED and sum(self.recent) >= self.threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        if self.state is State.CLOSED:
            self.times_opened += 1
            self.recent.clear()
        self.state = State.OPEN
        self.retry_at = now + self.cooldown

    @property
    def is_closed(self) -> bool:
        return self.state is State.CLOSED
