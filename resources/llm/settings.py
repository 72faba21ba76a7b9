"""Engine settings, read from the environment in this one place.

| variable | default | meaning |
|---|---|---|
| OPENAI_BASE_URL | (unset: offline provider) | any OpenAI-compatible endpoint |
| OPENAI_API_KEY | | sent as the bearer token |
| LLM_CHAT_MODEL / LLM_EMBED_MODEL | gpt-4o-mini / text-embedding-3-small | model names |
| LLM_MAX_CONCURRENCY / LLM_MIN_CONCURRENCY | 16 / 1 | AIMD ceiling and floor |
| LLM_RPM / LLM_TPM | unlimited | proactive request and token budgets per minute |
| LLM_TIMEOUT_SECONDS | 60 | per request |
| LLM_MAX_ATTEMPTS | 6 | tries per request for retryable errors |
| LLM_MAX_REPAIRS | 2 | repair turns for an answer that cannot be parsed or normalised |
| LLM_MAX_OUTAGE_SECONDS | 300 | how long the circuit breaker holds items |
| LLM_BUDGET_URL | (unset: per process) | postgresql://…: one RPM/TPM budget for all processes |
| LLM_BUDGET_FALLBACK_SHARE | 4 | processes assumed if that database was never reached |
| LLM_CACHE_PATH | <docgraph home>/llm-cache.sqlite | response cache: a file, postgresql://…, off |
| LLM_PRICES | built-in table | JSON per model: resources/llm/prices.py |
| LLM_ROUTE | sync | sync, batch (Batch API), flex, auto: assets/batch_route.py |
| LLM_BATCH_MIN_ITEMS | 1000 | auto takes the batch lane from this many items of a stage |
| LLM_BATCH_POLL_SECONDS | 30 | how often an open batch is looked at |
| LLM_BATCH_FALLBACK | sync | a batch's failed or expired line: asked synchronously, or fail |
| LLM_FLEX_TIMEOUT_SECONDS | 900 | per request on the flex route (slower by design) |
| LLM_FLEX_FALLBACK_SECONDS | 300 | waiting out flex's "resource unavailable", then standard |
"""

import json
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from resources.llm.prices import DEFAULT_PRICES, Price, Route
from resources.paths import docgraph_home

RouteSetting = Literal["sync", "batch", "flex", "auto"]

_ENV = {
    "base_url": "OPENAI_BASE_URL",
    "api_key": "OPENAI_API_KEY",
    "chat_model": "LLM_CHAT_MODEL",
    "embed_model": "LLM_EMBED_MODEL",
    "max_concurrency": "LLM_MAX_CONCURRENCY",
    "min_concurrency": "LLM_MIN_CONCURRENCY",
    "rpm": "LLM_RPM",
    "tpm": "LLM_TPM",
    "timeout_seconds": "LLM_TIMEOUT_SECONDS",
    "max_attempts": "LLM_MAX_ATTEMPTS",
    "max_repairs": "LLM_MAX_REPAIRS",
    "max_outage_seconds": "LLM_MAX_OUTAGE_SECONDS",
    "cache_path": "LLM_CACHE_PATH",
    "budget_url": "LLM_BUDGET_URL",
    "budget_fallback_share": "LLM_BUDGET_FALLBACK_SHARE",
    "route": "LLM_ROUTE",
    "batch_min_items": "LLM_BATCH_MIN_ITEMS",
    "batch_poll_seconds": "LLM_BATCH_POLL_SECONDS",
    "batch_fallback": "LLM_BATCH_FALLBACK",
    "flex_timeout_seconds": "LLM_FLEX_TIMEOUT_SECONDS",
    "flex_fallback_seconds": "LLM_FLEX_FALLBACK_SECONDS",
}


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = None  # None: the embedded offline provider
    api_key: str | None = Field(default=None, repr=False)
    chat_model: str = "gpt-4o-mini"
    embed_model: str = "text-embedding-3-small"
    max_concurrency: int = Field(16, ge=1, le=1024)
    min_concurrency: int = Field(1, ge=1)
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    # Bursts the buckets allow, in seconds of budget: providers refill continuously.
    burst_seconds: float = Field(1.0, gt=0)
    timeout_seconds: float = Field(60.0, gt=0)
    max_attempts: int = Field(6, ge=1)
    # repair turns for an answer that cannot be parsed or normalised; 2, so that one
    # malformed repair (a truncated answer, a slip) does not fail the item
    max_repairs: int = Field(2, ge=0)
    backoff_base_seconds: float = Field(0.1, ge=0)
    backoff_cap_seconds: float = Field(20.0, ge=0)
    breaker_threshold: int = Field(10, ge=1)  # outage failures among the last 20 calls
    breaker_cooldown_seconds: float = Field(1.0, gt=0)
    max_outage_seconds: float = Field(300.0, ge=0)
    expected_completion_tokens: int = Field(256, ge=1)  # TPM estimate before usage is known
    cache_path: str | None = ""  # "" -> default location, None -> no cache
    budget_url: str | None = None  # None -> the budget is this process's (throttle.py)
    budget_fallback_share: int = Field(4, ge=1)
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    route: RouteSetting = "sync"  # a stage's default route (run config may set its own)
    batch_min_items: int = Field(1000, ge=1)
    batch_poll_seconds: float = Field(30.0, gt=0)
    batch_fallback: Literal["sync", "fail"] = "sync"
    # a batch input file's limits (OpenAI's: 50,000 requests, 200 MB)
    batch_max_requests: int = Field(50_000, ge=1)
    batch_max_bytes: int = Field(200_000_000, ge=1_000)
    flex_timeout_seconds: float = Field(900.0, gt=0)
    flex_fallback_seconds: float = Field(300.0, ge=0)

    @property
    def offline(self) -> bool:
        return not self.base_url

    @property
    def provider(self) -> str:
        return "offline" if self.offline else str(self.base_url)

    def resolved_cache_path(self) -> str | None:
        if self.cache_path is None or self.cache_path == "off":
            return None
        return self.cache_path or str(docgraph_home() / "llm-cache.sqlite")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: object
    ) -> "LLMSettings":
        """Settings from the environment; explicit overrides (not None) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {f: env[v] for f, v in _ENV.items() if env.get(v)}
        if env.get("LLM_PRICES"):
            given = {model: Price.model_validate(price)
                     for model, price in json.loads(env["LLM_PRICES"]).items()}
            values["prices"] = {**DEFAULT_PRICES, **given}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int,
                 cached_tokens: int = 0, route: Route = "sync") -> float | None:
        """The call's estimated price; 0.0 offline, None for a model not in the table."""
        if self.offline:
            return 0.0
        price = self.prices.get(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens,
                                                      cached_tokens, route)

    def has_cheaper_route(self, model: str) -> bool:
        """Whether the batch lane is priced below sync for `model` (what `auto` needs)."""
        price = self.prices.get(model)
        return self.offline or price is not None and (price.batch or 1.0) < 1.0
