"""The engine as a Dagster resource: the only module of resources/llm that knows Dagster.

Fields left unset come from the environment (resources/llm/settings.py); the API key only
ever does, so it never appears in run config or the UI.
"""

import contextlib
import logging
from collections.abc import AsyncIterator

import dagster as dg
from pydantic import PrivateAttr

from resources.llm.engine import LLMEngine
from resources.llm.metrics import BatchMetrics
from resources.llm.settings import LLMSettings


class LLMResource(dg.ConfigurableResource):
    base_url: str | None = None
    chat_model: str | None = None
    embed_model: str | None = None
    max_concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    timeout_seconds: float | None = None
    cache_path: str | None = None
    # what each model's server accepts as response_format, learned by the step's first
    # engine and known to its later ones (resources/llm/formats.py)
    _learned_formats: dict[str, str] = PrivateAttr(default_factory=dict)

    def settings(self) -> LLMSettings:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return LLMSettings.from_env(**overrides)

    @contextlib.asynccontextmanager
    async def engine(self, logger: logging.Logger | None = None) -> AsyncIterator[LLMEngine]:
        """A fresh engine for the running event loop; closed on exit."""
        engine = LLMEngine(self.settings(), logger=logger,
                           learned_formats=self._learned_formats)
        try:
            yield engine
        finally:
            await engine.aclose()


def metrics_metadata(metrics: BatchMetrics) -> dict[str, dg.MetadataValue]:
    """The batch's accounting as typed metadata, so the UI can plot it across partitions."""
    def number(value: float | None) -> dg.MetadataValue:
        return dg.MetadataValue.float(float(value)) if value is not None else \
            dg.MetadataValue.null()

    return {
        "llm_provider": dg.MetadataValue.text(metrics.provider),
        "llm_model": dg.MetadataValue.text(metrics.model),
        "attempted": dg.MetadataValue.int(metrics.attempted),
        "succeeded": dg.MetadataValue.int(metrics.succeeded),
        "failed": dg.MetadataValue.int(metrics.failed),
        "success_rate": dg.MetadataValue.float(round(metrics.success_rate, 4)),
        "failed_by_class": dg.MetadataValue.json(metrics.failed_by_class),
        "retries": dg.MetadataValue.int(metrics.retries),
        "http_calls": dg.MetadataValue.int(metrics.http_calls),
        "repairs": dg.MetadataValue.int(metrics.repairs),
        "cache_hits": dg.MetadataValue.int(metrics.cache_hits),
        "rate_limited_responses": dg.MetadataValue.int(metrics.rate_limited_responses),
        "latency_p50_ms": number(metrics.latency_p50_ms),
        "latency_p95_ms": number(metrics.latency_p95_ms),
        "latency_max_ms": number(metrics.latency_max_ms),
        "prompt_tokens": dg.MetadataValue.int(metrics.prompt_tokens),
        "completion_tokens": dg.MetadataValue.int(metrics.completion_tokens),
        "estimated_cost_usd": number(metrics.estimated_cost_usd),
        "peak_concurrency": dg.MetadataValue.int(metrics.peak_concurrency),
        "llm_seconds": dg.MetadataValue.float(metrics.wall_seconds),
        # near-miss answers brought into the schema before validating, per field
        "normalised": dg.MetadataValue.json(metrics.normalised),
        "normalised_total": dg.MetadataValue.int(sum(metrics.normalised.values())),
        # 400s to a response_format the server does not take, and the modes that answered
        "structured_fallbacks": dg.MetadataValue.int(metrics.format_rejected),
        "response_format_mode": dg.MetadataValue.json(metrics.response_format_modes),
        # calls paced on an equal share while the shared LLM budget could not be reached
        "budget_fallback_calls": dg.MetadataValue.int(metrics.budget_fallback_calls),
        # how the items were answered (sync, batch; cached ones are in cache_hits), the
        # provider batches that answered them, and what the batch and the provider's
        # prompt cache saved against the sync price
        "llm_route": dg.MetadataValue.text(route_label(metrics)),
        "routes": dg.MetadataValue.json(metrics.routes),
        "batch_ids": dg.MetadataValue.json(metrics.batch_ids),
        "batch_fallbacks": dg.MetadataValue.int(metrics.batch_fallbacks),
        "flex_fallbacks": dg.MetadataValue.int(metrics.flex_fallbacks),
        "cached_tokens": dg.MetadataValue.int(metrics.cached_tokens),
        "cost_saved_usd": number(metrics.cost_saved_usd),
    }


def route_label(metrics: BatchMetrics) -> str:
    """One word for the UI: sync, batch, batch+sync, or cache when nothing was asked."""
    return "+".join(sorted(metrics.routes)) or "cache"
