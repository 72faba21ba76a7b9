"""No burst into an unknown limit: without LLM_RPM the engine learns the server's limits
from its first answers before it opens up."""

from resources.llm.limits import AIMDLimit
from tests.llm.conftest import chat_items, fast_settings, run


def test_slow_start_doubles_per_round_trip_and_halves_on_the_first_overload():
    limit = AIMDLimit(1, 16, slow_start=True)
    assert limit.limit == 1
    for expected in (2, 4, 8, 16):
        for _ in range(limit.limit):  # one round trip at the current limit
            limit.on_success()
        assert limit.limit == expected
    assert limit.on_overload(now=0.0) and limit.limit == 8 and not limit.slow_start
    for _ in range(8):
        limit.on_success()
    assert limit.limit == 9  # additive from here on


def test_a_server_with_an_rpm_limit_sees_at_most_one_percent_429s(sim):
    # 10 requests/s with bursts of 1 s, as the x-ratelimit-* headers say; no LLM_RPM here
    sim.configure(rpm=600, latency_ms=40, seed=5)
    results, metrics = run(fast_settings(sim, max_concurrency=32), chat_items(150),
                           concurrency=32)
    stats = sim.stats()
    assert metrics.succeeded == 150
    assert stats["requests"] == metrics.http_calls
    assert stats["by_status"].get("429", 0) <= 0.01 * stats["requests"], stats["by_status"]

