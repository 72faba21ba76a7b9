import asyncio

import pytest
from pydantic import BaseModel, ConfigDict

from resources.llm import ChatItem, LLMEngine, LLMSettings
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig


class Summary(BaseModel):
    """A small structured output, like the pipeline's own models."""

    model_config = ConfigDict(extra="forbid")
    title: str
    keywords: list[str]


def chat_items(n: int, schema=None, prefix: str = "item"):
    for i in range(n):
        text = f"Ticket {i}: Priya Raman refunded the double charge for Bluebird Dental."
        yield ChatItem(f"{prefix}-{i}", [{"role": "user", "content": text}], schema)


def fast_settings(sim: SimulatorServer, **overrides) -> LLMSettings:
    """Real HTTP to the simulator, with waits short enough for a test."""
    values = dict(base_url=sim.base_url, api_key="test", cache_path=None, max_concurrency=16,
                  timeout_seconds=2.0, backoff_base_seconds=0.01, backoff_cap_seconds=0.1,
                  breaker_cooldown_seconds=0.05)
    values.update(overrides)
    return LLMSettings(**values)


def run(settings: LLMSettings, items, concurrency=None, **engine_kwargs):
    async def go():
        async with LLMEngine(settings, **engine_kwargs) as engine:
            return await engine.run_all(items, concurrency)

    return asyncio.run(go())


@pytest.fixture
def sim():
    with SimulatorServer(SimConfig()) as server:
        yield server


__all__ = ["SimConfig", "Summary", "chat_items", "fast_settings", "run"]
