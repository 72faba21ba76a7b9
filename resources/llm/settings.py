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
| LLM_PRICES | built-in table | JSON {model: [usd per 1M input, usd per 1M output]} |
"""

import json
import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from resources.paths import docgraph_home

# USD per million tokens (input, output). Extend or override with LLM_PRICES.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
}

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
    prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))

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
            values["prices"] = {**DEFAULT_PRICES, **json.loads(env["LLM_PRICES"])}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.prices.get(model)
        if self.offline:
            return 0.0
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
