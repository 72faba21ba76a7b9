"""The engine inside a Dagster asset, with settings from the environment."""

import asyncio

import dagster as dg

from resources.llm import ChatItem
from resources.llm.resource import LLMResource, metrics_metadata
from resources.llm.settings import LLMSettings
from tests.llm.conftest import Summary


def test_settings_come_from_the_environment_and_config_wins():
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-test",
           "LLM_RPM": "600", "LLM_MAX_CONCURRENCY": "8",
           "LLM_PRICES": '{"m": [1, 2], "f": {"input": 1, "output": 2, "cached_input": 0.5,'
                         ' "batch": null, "flex": 0.5}}'}
    settings = LLMSettings.from_env(env, max_concurrency=4)
    assert settings.base_url == "http://127.0.0.1:9/v1" and settings.rpm == 600
    assert settings.max_concurrency == 4 and settings.prices["m"].input == 1.0
    assert "sk-test" not in repr(settings)
    assert LLMSettings.from_env({}).offline
    assert settings.cost_usd("m", 1_000_000, 1_000_000) == 3.0
    assert settings.cost_usd("unknown-model", 10, 10) is None
    # a list's model has the batch lane at half price, its cached tokens at the input rate
    assert settings.cost_usd("m", 1_000_000, 1_000_000, route="batch") == 1.5
    assert settings.cost_usd("m", 1_000_000, 0, cached_tokens=500_000) == 1.0
    assert settings.has_cheaper_route("m") and not settings.has_cheaper_route("f")
    assert settings.cost_usd("f", 1_000_000, 0, cached_tokens=500_000) == 0.75
    assert settings.cost_usd("f", 1_000_000, 0, route="batch") is None  # not offered
    assert settings.cost_usd("f", 1_000_000, 0, route="flex") == 0.5
    assert settings.cost_usd("gpt-4o-mini", 1_000_000, 0, cached_tokens=1_000_000) == 0.075


def test_an_asset_reports_the_engines_accounting(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the offline provider
    monkeypatch.setenv("LLM_CACHE_PATH", str(tmp_path / "cache.sqlite"))

    @dg.asset
    def summaries(context: dg.AssetExecutionContext, llm: LLMResource) -> dg.MaterializeResult:
        async def go():
            async with llm.engine(context.log) as engine:
                items = [ChatItem(str(i), [{"role": "user", "content": f"Priya Raman closed "
                                                                         f"ticket {i}."}], Summary)
                         for i in range(5)]
                return await engine.run_all(items)

        results, metrics = asyncio.run(go())
        assert all(isinstance(r.value, Summary) for r in results)
        return dg.MaterializeResult(metadata=metrics_metadata(metrics))

    result = dg.materialize([summaries], resources={"llm": LLMResource()})
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["llm_provider"].value == "offline"
    assert meta["attempted"].value == meta["succeeded"].value == 5
    assert meta["estimated_cost_usd"].value == 0.0
    again = dg.materialize([summaries], resources={"llm": LLMResource()})
    [event] = again.get_asset_materialization_events()
    assert event.materialization.metadata["cache_hits"].value == 5
    assert event.materialization.metadata["http_calls"].value == 0
