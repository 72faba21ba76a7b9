"""Buckets, backoff, breaker and AIMD, driven by a fake clock (plain numbers for `now`)."""

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import openai
import pytest

from resources.llm.breaker import CircuitBreaker, State
from resources.llm.limits import AIMDLimit, ConcurrencyGate, TokenBucket, parse_reset
from resources.llm.retry import backoff_seconds, classify, retry_after_seconds


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# -- token bucket ---------------------------------------------------------------------------
def test_bucket_allows_the_burst_then_paces_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=10, capacity=10, now=clock.now)
    assert [bucket.reserve(1, clock.now) for _ in range(10)] == [0.0] * 10
    # the next ones queue behind each other, 0.1 s apart
    assert [round(bucket.reserve(1, clock.now), 3) for _ in range(3)] == [0.1, 0.2, 0.3]
    clock.advance(0.3)
    assert bucket.reserve(1, clock.now) == pytest.approx(0.1)


def test_bucket_refills_only_up_to_capacity():
    clock = FakeClock()
    bucket = TokenBucket(5, 5, clock.now)
    bucket.reserve(5, clock.now)
    clock.advance(100)
    assert bucket.reserve(5, clock.now) == 0.0
    assert bucket.reserve(1, clock.now) == pytest.approx(0.2)


def test_settle_refunds_overestimates_and_charges_underestimates():
    clock = FakeClock()
    bucket = TokenBucket(100, 1000, clock.now)
    bucket.reserve(800, clock.now)  # estimated
    bucket.settle(estimated=800, actual=300, now=clock.now)
    assert bucket.level == pytest.approx(700)
    bucket.settle(estimated=0, actual=900, now=clock.now)
    assert bucket.reserve(1, clock.now) == pytest.approx(2.01)


def test_sync_follows_the_server_and_waits_for_its_reset():
    clock = FakeClock()
    bucket = TokenBucket(10, 10, clock.now)
    bucket.sync(remaining=3, reset_seconds=None, now=clock.now)
    assert bucket.level == 3
    bucket.sync(remaining=50, reset_seconds=None, now=clock.now)  # never raises the level
    assert bucket.level == 3
    bucket.sync(remaining=0, reset_seconds=2.5, now=clock.now)
    assert bucket.reserve(1, clock.now) == pytest.approx(2.6)


def test_try_take_takes_nothing_when_short():
    clock = FakeClock()
    bucket = TokenBucket(2, 2, clock.now)
    assert bucket.try_take(2, clock.now) == 0.0
    assert bucket.try_take(1, clock.now) == pytest.approx(0.5)
    assert bucket.level == 0  # the refused request took nothing
    clock.advance(0.5)
    assert bucket.try_take(1, clock.now) == 0.0


@pytest.mark.parametrize("value,seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("250ms", 0.25), ("1h2m3.5s", 3723.5), ("2.5", 2.5),
    ("", None), (None, None), ("soon", None),
])
def test_parse_reset(value, seconds):
    assert parse_reset(value) == seconds


# -- backoff and retry-after ----------------------------------------------------------------
def test_backoff_is_full_jitter_under_a_growing_capped_ceiling():
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(8.0, 0.5 * 2**attempt)
        draws = [backoff_seconds(attempt, 0.5, 8.0, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling and min(draws) < 0.1 * ceiling  # the whole range
    assert backoff_seconds(3, 0.5, 8, random.Random(1)) == backoff_seconds(
        3, 0.5, 8, random.Random(1))


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    when = datetime(2030, 1, 1, tzinfo=UTC)
    header = {"retry-after": format_datetime(when + timedelta(seconds=4), usegmt=True)}
    assert retry_after_seconds(header, now=when.timestamp()) == pytest.approx(4.0)
    assert retry_after_seconds({"retry-after": "not a date"}) is None
    assert retry_after_seconds({}) is None


def _status_error(status: int) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, request=request, json={"error": {"message": "x"}})
    return openai.AsyncOpenAI(api_key="x", base_url="http://127.0.0.1/v1")._make_status_error(
        "x", body=None, response=response)


@pytest.mark.parametrize("status,error_class", [
    (429, "rate_limited"), (500, "server_error"), (503, "server_error"), (408, "timeout"),
    (400, "client_error"), (401, "client_error"), (404, "client_error"),
    (422, "client_error"),
])
def test_classify_status_errors(status, error_class):
    assert classify(_status_error(status)) == error_class


def test_classify_transport_errors():
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert classify(openai.APITimeoutError(request=request)) == "timeout"
    assert classify(openai.APIConnectionError(request=request)) == "connection"
    assert classify(ValueError("garbled body")) == "server_error"


# -- circuit breaker ----------------------------------------------------------------------------
def test_breaker_opens_on_a_rate_of_outage_failures_not_on_scattered_ones():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=1.0, window=5)
    for _ in range(10):  # one failure in five: noise
        breaker.on_failure(clock.now, outage=True)
        for _ in range(4):
            breaker.on_success()
    assert breaker.state is State.CLOSED
    for _ in range(20):
        breaker.on_failure(clock.now, outage=False)  # 429s and 4xx say nothing of outages
    assert breaker.state is State.CLOSED
    breaker.on_failure(clock.now, outage=True)
    breaker.on_success()
    breaker.on_failure(clock.now, outage=True)
    assert breaker.state is State.CLOSED
    breaker.on_failure(clock.now, outage=True)  # three of the last five
    assert breaker.state is State.OPEN and breaker.times_opened == 1


def test_breaker_holds_then_lets_exactly_one_probe_through():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=1.0, max_cooldown=4.0)
    breaker.on_failure(clock.now, outage=True)
    decision = breaker.decide(clock.now)
    assert not decision.proceed and decision.wait == pytest.approx(1.0)
    clock.advance(1.0)
    probe = breaker.decide(clock.now)
    assert probe.proceed and probe.probe
    assert not breaker.decide(clock.now).proceed  # others wait for the probe
    # a failed probe reopens with a doubled cooldown
    breaker.on_failure(clock.now, outage=True, probe=True)
    assert breaker.state is State.OPEN and breaker.retry_at == pytest.approx(clock.now + 2.0)
    clock.advance(2.0)
    assert breaker.decide(clock.now).probe
    breaker.on_success(probe=True)
    assert breaker.state is State.CLOSED and breaker.decide(clock.now).proceed
    assert breaker.cooldown == 1.0


def test_breaker_keeps_probing_however_long_the_outage():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=1.0, max_cooldown=4.0)
    breaker.on_failure(clock.now, outage=True)
    for _ in range(50):  # 200 s of failed probes, the cooldown capped at 4 s
        clock.advance(4.0)
        decision = breaker.decide(clock.now)
        assert decision.probe
        breaker.on_failure(clock.now, outage=True, probe=True)
    clock.advance(4.0)
    assert breaker.decide(clock.now).probe
    breaker.on_success(probe=True)
    assert breaker.state is State.CLOSED


def test_an_abandoned_probe_lets_the_next_caller_probe():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=1.0)
    breaker.on_failure(clock.now, outage=True)
    clock.advance(1.0)
    assert breaker.decide(clock.now).probe
    assert not breaker.decide(clock.now).proceed
    breaker.abandon_probe()  # e.g. the run was cancelled mid-call
    assert breaker.decide(clock.now).probe


def test_a_probe_answered_with_a_client_error_closes_the_circuit():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=1.0)
    breaker.on_failure(clock.now, outage=True)
    clock.advance(1.0)
    assert breaker.decide(clock.now).probe
    breaker.on_failure(clock.now, outage=False, probe=True)  # e.g. a 400: the API is up
    assert breaker.state is State.CLOSED


# -- AIMD ---------------------------------------------------------------------------------------
def test_aimd_adds_one_per_window_of_successes_up_to_the_ceiling():
    aimd = AIMDLimit(floor=2, ceiling=6, initial=4)
    for _ in range(4):
        aimd.on_success()
    assert aimd.limit == 5
    for _ in range(100):
        aimd.on_success()
    assert aimd.limit == 6


def test_aimd_halves_on_sustained_overload_not_on_noise():
    clock = FakeClock()
    aimd = AIMDLimit(floor=2, ceiling=64, window=50, overload_ratio=0.2, decrease_interval=1.0)
    for i in range(200):  # 5% noise
        if i % 20 == 0:
            assert not aimd.on_overload(clock.advance(0.01))
        else:
            aimd.on_success()
    assert aimd.limit == 64
    lowered = [aimd.on_overload(clock.advance(0.01)) for _ in range(30)]
    assert lowered.count(True) == 1 and aimd.limit == 32  # once per interval
    clock.advance(1.0)
    assert any(aimd.on_overload(clock.advance(0.01)) for _ in range(30))
    assert aimd.limit == 16
    for _ in range(50):
        clock.advance(1.0)
        for _ in range(20):
            aimd.on_overload(clock.now)
    assert aimd.limit == 2  # never below the floor


def test_aimd_rejects_a_floor_above_the_ceiling():
    with pytest.raises(ValueError):
        AIMDLimit(floor=8, ceiling=4)


def test_gate_admits_the_lower_of_aimd_and_the_useful_cap():
    gate = ConcurrencyGate(AIMDLimit(floor=2, ceiling=10), cap=lambda: 4)
    assert gate.limit() == 4
    gate.cap = lambda: None
    assert gate.limit() == 10
    gate.cap = lambda: 0
    assert gate.limit() == 2  # never below the floor

    async def crowd():
        gate.cap = lambda: 3
        now_in, seen = 0, []

        async def one():
            nonlocal now_in
            async with gate.slot():
                now_in += 1
                seen.append(now_in)
                await asyncio.sleep(0.001)
                now_in -= 1

        await asyncio.gather(*(one() for _ in range(50)))
        return max(seen)

    assert asyncio.run(crowd()) == 3 and gate.peak == 3
