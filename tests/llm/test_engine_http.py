"""The engine over real HTTP against the simulator on loopback."""

import asyncio
import json
import time
from collections import Counter

import httpx2
import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from resources.llm import ChatItem, EmbedItem, LLMEngine
from resources.llm.cache import SQLiteCache
from resources.llm.retry import ITEM_ERROR_CLASSES
from resources.llm.structured import json_schema
from tests.llm.conftest import Summary, chat_items, fast_settings, run


def assert_accounted(results, metrics, n):
    """Every item exactly once, succeeded or failed with a known class; counts add up."""
    assert sorted(r.key for r in results) == sorted({r.key for r in results})
    assert len(results) == n == metrics.attempted
    assert metrics.attempted == metrics.succeeded + metrics.failed
    assert metrics.succeeded == sum(r.ok for r in results)
    assert dict(Counter(r.error_class for r in results if not r.ok)) == metrics.failed_by_class
    assert all(r.error_class in ITEM_ERROR_CLASSES and r.error for r in results if not r.ok)


def test_in_flight_never_exceeds_the_ceiling(sim):
    sim.configure(latency_ms=30)
    results, metrics = run(fast_settings(sim, max_concurrency=64), chat_items(300),
                           concurrency=8)
    assert_accounted(results, metrics, 300)
    assert metrics.succeeded == 300
    assert sim.stats()["max_in_flight"] <= 8
    assert metrics.peak_concurrency == 8  # and it did use all of it


def test_retry_after_is_waited_for(sim):
    sim.configure(script=[429, 200], retry_after_seconds=1.0, ratelimit_headers=False)
    results, metrics = run(fast_settings(sim), chat_items(1))
    first, second = sim.stats()["arrivals"]
    assert 1.0 <= second - first < 1.3  # the server's word (plus <10% jitter), not backoff
    assert results[0].ok and results[0].http_calls == 2
    assert metrics.rate_limited_responses == 1 and metrics.retries == 1


def test_non_retryable_client_errors_fail_at_once(sim):
    sim.configure(script=[400, 404])
    results, metrics = run(fast_settings(sim, max_concurrency=1), chat_items(3))
    assert_accounted(results, metrics, 3)
    assert metrics.failed_by_class == {"client_error": 2}
    assert metrics.http_calls == 3 and metrics.retries == 0


def test_every_item_ends_succeeded_or_failed_with_class_under_faults(sim):
    sim.configure(latency_ms=5, rate_429=0.05, rate_500=0.1, rate_503=0.05, rate_reset=0.03,
                  rate_hang=0.02, hang_seconds=3, rate_garbled=0.03, rate_malformed=0.05,
                  retry_after_seconds=0.05, seed=11)
    settings = fast_settings(sim, timeout_seconds=0.5, max_attempts=3)
    results, metrics = run(settings, chat_items(400, Summary), concurrency=16)
    assert_accounted(results, metrics, 400)
    stats = sim.stats()
    assert metrics.http_calls == stats["requests"]  # every HTTP call is counted once
    assert metrics.retries > 0 and metrics.repairs > 0
    assert metrics.succeeded > 300
    # the faults that were injected are the failures that were seen
    assert set(metrics.failed_by_class) <= {"rate_limited", "server_error", "timeout",
                                            "connection", "invalid_output"}
    for result in results:
        if result.ok:
            assert isinstance(result.value, Summary)


def test_malformed_json_is_repaired_or_counted(sim):
    sim.configure(rate_malformed=0.5, seed=3)
    results, metrics = run(fast_settings(sim), chat_items(60, Summary))
    assert_accounted(results, metrics, 60)
    assert metrics.repairs > 0
    repaired = [r for r in results if r.ok and r.http_calls == 2]
    assert repaired, "some answers were fixed by the repair turn"
    assert {r.error_class for r in results if not r.ok} <= {"invalid_output"}
    # always broken: every item gets LLM_MAX_REPAIRS (2) repairs, then invalid_output
    sim.configure(rate_malformed=1.0)
    results, metrics = run(fast_settings(sim), chat_items(5, Summary, prefix="bad"))
    assert metrics.failed_by_class == {"invalid_output": 5}
    assert all(r.http_calls == 3 for r in results) and metrics.repairs == 10
    assert all("invalid after 2 repair(s)" in r.error for r in results)
    # with LLM_MAX_REPAIRS=0 an unparsable answer fails at once
    results, metrics = run(fast_settings(sim, max_repairs=0), chat_items(5, Summary, "none"))
    assert all(r.http_calls == 1 for r in results) and metrics.repairs == 0


def test_second_run_is_served_from_the_cache_with_zero_http_calls(sim, tmp_path):
    sim.configure(rate_malformed=0.3, seed=5)
    settings = fast_settings(sim, cache_path=str(tmp_path / "cache.sqlite"))
    first, m1 = run(settings, chat_items(40, Summary))
    ok_first = {r.key: r.value for r in first if r.ok}
    assert 0 < m1.failed < 40
    # only valid answers were stored: a cached bad answer would be replayed forever
    assert len(SQLiteCache(tmp_path / "cache.sqlite")) == len(ok_first)

    sim.configure(rate_malformed=0.0)
    calls = sim.stats()["requests"]
    second, m2 = run(settings, chat_items(40, Summary))
    assert m2.succeeded == 40 and m2.cache_hits == len(ok_first)
    assert sim.stats()["requests"] - calls == m1.failed  # only the failed ones were asked
    assert {r.key: r.value for r in second if r.cached} == ok_first

    calls = sim.stats()["requests"]
    third, m3 = run(settings, chat_items(40, Summary))
    assert sim.stats()["requests"] == calls and m3.http_calls == 0
    assert m3.cache_hits == 40 and all(r.cached and r.ok for r in third)


def test_a_full_outage_holds_items_instead_of_failing_them(sim):
    sim.configure(latency_ms=5, outage_after_seconds=0.2, outage_seconds=1.0)
    settings = fast_settings(sim, max_attempts=3, breaker_threshold=3)
    engine_log = []

    async def go():
        async with LLMEngine(settings) as engine:
            results, metrics = await engine.run_all(chat_items(400), concurrency=4)
            engine_log.append(engine.breaker.times_opened)
            return results, metrics

    results, metrics = asyncio.run(go())
    assert_accounted(results, metrics, 400)
    assert metrics.succeeded == 400  # a 1 s outage lost nothing
    assert engine_log[0] >= 1
    assert sim.stats()["by_status"].get("503", 0) >= 3


def test_an_outage_longer_than_the_limit_fails_items_as_circuit_open(sim):
    sim.configure(outage_after_seconds=0, outage_seconds=60)
    settings = fast_settings(sim, breaker_threshold=2, max_outage_seconds=0.5)
    results, metrics = run(settings, chat_items(20), concurrency=4)
    assert_accounted(results, metrics, 20)
    assert metrics.failed_by_class.get("circuit_open", 0) >= 15


def test_the_engine_adopts_the_servers_advertised_limits(sim):
    sim.configure(rpm=600, burst_seconds=0.5)  # 10/s, bursts of 5
    engine = LLMEngine(fast_settings(sim))
    assert engine.rpm is None  # no LLM_RPM configured

    async def go():
        async with engine:
            return await engine.run_all(chat_items(30), concurrency=8)

    results, metrics = asyncio.run(go())
    assert metrics.succeeded == 30
    assert engine.rpm is not None and engine.rpm.rate == 10  # from x-ratelimit-limit-*
    # after the first answers the engine paces itself instead of collecting 429s
    assert metrics.rate_limited_responses <= 8


def test_429s_without_headers_hold_every_caller_even_with_no_budgets(sim):
    sim.configure(rpm=600, burst_seconds=0.5, ratelimit_headers=False)
    results, metrics = run(fast_settings(sim, max_attempts=6), chat_items(60), concurrency=16)
    assert metrics.succeeded == 60  # the shared Retry-After, not a stampede of retries


def test_items_held_past_the_outage_limit_fail_but_the_engine_recovers(sim):
    settings = fast_settings(sim, breaker_threshold=2, max_outage_seconds=0.3)
    engine = LLMEngine(settings)

    async def go():
        async with engine:
            sim.configure(outage_after_seconds=0, outage_seconds=2.0)
            started = time.monotonic()
            first = await engine.run_all(chat_items(10), concurrency=2)
            await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - started)))  # it's back
            second = await engine.run_all(chat_items(10, prefix="later"), concurrency=2)
            return first, second

    (first, m1), (second, m2) = asyncio.run(go())
    assert m1.failed_by_class.get("circuit_open", 0) >= 8  # held 0.3 s each, then failed
    assert m2.succeeded == 10  # the breaker kept probing and closed


def test_a_cancelled_probe_does_not_wedge_the_breaker(sim):
    sim.configure(outage_after_seconds=0, outage_seconds=0.3)
    settings = fast_settings(sim, breaker_threshold=2)
    engine = LLMEngine(settings)

    async def go():
        async with engine:
            sim.configure(outage_after_seconds=0, outage_seconds=0.3, latency_ms=0)
            task = asyncio.create_task(engine.run(chat_items(50), lambda r: None, 4))
            await asyncio.sleep(0.2)
            sim.configure(latency_ms=2000)  # the probe that follows hangs...
            await asyncio.sleep(0.3)
            task.cancel()  # ...and is cancelled mid-call
            with pytest.raises(asyncio.CancelledError):
                await task
            sim.configure(latency_ms=0)
            return await engine.run_all(chat_items(5, prefix="after"), concurrency=2)

    results, metrics = asyncio.run(go())
    assert metrics.succeeded == 5


def test_a_cached_answer_that_no_longer_validates_is_asked_again(sim, tmp_path):
    settings = fast_settings(sim, cache_path=str(tmp_path / "cache.sqlite"))
    run(settings, chat_items(3, Summary))
    calls = sim.stats()["requests"]

    class StricterSummary(Summary):
        @field_validator("title")
        @classmethod
        def long_title(cls, value: str) -> str:
            if len(value) < 1000:
                raise ValueError("title too short")
            return value

    results, metrics = run(settings, chat_items(3, StricterSummary))
    assert metrics.cache_hits == 0 and sim.stats()["requests"] > calls
    assert metrics.failed_by_class == {"invalid_output": 3}


def test_malformed_rate_limit_headers_are_ignored(sim):
    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "ok"}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                 "total_tokens": 2}}).encode()
    headers = {"content-type": "application/json", "x-ratelimit-limit-requests": "1k",
               "x-ratelimit-remaining-requests": "lots", "x-ratelimit-limit-tokens": "0",
               "x-ratelimit-remaining-tokens": "5"}
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=body,
                                                                    headers=headers))

    async def go():
        async with LLMEngine(fast_settings(sim), transport=transport) as engine:
            return await engine.run_all(chat_items(5))

    results, metrics = asyncio.run(go())
    assert metrics.succeeded == 5


def test_strict_schemas_are_sent_in_openais_strict_form():
    class WithOptional(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        nickname: str | None = None

    schema = json_schema(WithOptional)
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["name", "nickname"]


def test_cancelling_a_run_stops_promptly_and_leaves_no_tasks(sim):
    sim.configure(latency_ms=300)

    async def go():
        async with LLMEngine(fast_settings(sim)) as engine:
            task = asyncio.create_task(engine.run(chat_items(1000), lambda r: None, 8))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stopped_in = time.monotonic() - started
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            return stopped_in, others

    stopped_in, others = asyncio.run(go())
    assert stopped_in < 0.5 and others == []
    deadline = time.monotonic() + 2
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.stats()["in_flight"] == 0  # requests were aborted, not left running
    assert sim.stats()["requests"] < 40


def test_items_are_pulled_lazily_memory_stays_bounded(sim):
    pulled = completed = 0
    ahead = []

    def items():
        nonlocal pulled
        for item in chat_items(2000):
            pulled += 1
            ahead.append(pulled - completed)
            yield item

    def done(_):
        nonlocal completed
        completed += 1

    async def go():
        async with LLMEngine(fast_settings(sim)) as engine:
            return await engine.run(items(), done, concurrency=8)

    metrics = asyncio.run(go())
    assert metrics.succeeded == 2000
    assert max(ahead) <= 8  # never more items in hand than workers


def test_embeddings_are_batched_validated_and_cached(sim, tmp_path):
    settings = fast_settings(sim, cache_path=str(tmp_path / "c.sqlite"))
    batches = [EmbedItem(f"b{i}", [f"chunk {i}-{j} about Okta SSO" for j in range(10)])
               for i in range(5)]
    results, metrics = run(settings, batches)
    assert metrics.succeeded == 5 and sim.stats()["embedding_requests"] == 5
    assert all(len(r.value) == 10 and len(r.value[0]) == 256 for r in results)
    again, metrics = run(settings, batches)
    assert metrics.cache_hits == 5 and sim.stats()["embedding_requests"] == 5
    assert [r.value for r in sorted(again, key=lambda r: r.key)] == [
        r.value for r in sorted(results, key=lambda r: r.key)]


def test_one_engine_is_bound_to_one_event_loop(sim):
    engine = LLMEngine(fast_settings(sim))
    asyncio.run(engine.run_all([ChatItem("a", [{"role": "user", "content": "hi there."}])]))
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(engine.run_all([ChatItem("b", [{"role": "user", "content": "hi."}])]))
