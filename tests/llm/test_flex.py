"""Flex processing over real HTTP against the simulator: service_tier=flex, priced at the
flex rate only when the server says it served the request on that tier, and its "Resource
Unavailable" 429s waited out, then the standard tier."""

import asyncio

from resources.llm import LLMEngine
from tests.llm.conftest import Summary, chat_items, fast_settings


def flex_run(settings, items):
    async def go():
        async with LLMEngine(settings) as engine:
            results = []
            metrics = await engine.run(items, results.append,
                                       route_of=lambda _: ("flex", "test"))
            return results, metrics

    return asyncio.run(go())


def test_flex_calls_are_asked_on_the_flex_tier_at_half_the_price(sim):
    settings = fast_settings(sim, chat_model="gpt-5-mini")
    items = list(chat_items(10, Summary))
    results, metrics = flex_run(settings, items)
    assert metrics.succeeded == 10 and metrics.routes == {"flex": 10}
    sync_results, sync_metrics = asyncio.run(_sync(settings, items))
    assert {r.key: r.value for r in results} == {r.key: r.value for r in sync_results}
    assert metrics.prompt_tokens == sync_metrics.prompt_tokens
    assert abs(metrics.estimated_cost_usd - sync_metrics.estimated_cost_usd / 2) <= 1e-6
    assert abs(metrics.cost_saved_usd - metrics.estimated_cost_usd) <= 1e-6


def test_no_flex_capacity_is_waited_out_then_asked_standard(sim):
    sim.configure(flex_unavailable_rate=1.0, retry_after_seconds=0.05)
    settings = fast_settings(sim, chat_model="gpt-5-mini", flex_fallback_seconds=0.3)
    results, metrics = flex_run(settings, list(chat_items(6, Summary)))
    assert metrics.succeeded == 6 and metrics.flex_fallbacks == 6
    assert metrics.routes == {"sync": 6}  # standard tier, standard price
    assert sim.stats()["faults"]["flex_unavailable"] >= 6
    assert metrics.rate_limited_responses == sim.stats()["faults"]["flex_unavailable"]
    assert metrics.failed == 0 and all(r.retries >= 1 for r in results)


async def _sync(settings, items):
    async with LLMEngine(settings) as engine:
        return await engine.run_all(items)
