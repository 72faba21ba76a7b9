"""What a batch attempted, what succeeded, what failed and why, and what it cost."""

import random
import statistics
from collections import Counter
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

from resources.llm.retry import ITEM_ERROR_CLASSES

if TYPE_CHECKING:
    from resources.llm.items import ItemResult

LATENCY_SAMPLE = 10_000  # latency percentiles come from a reservoir sample this large


class BatchMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str
    attempted: int
    succeeded: int
    failed: int
    failed_by_class: dict[str, int]
    retries: int
    http_calls: int
    repairs: int
    cache_hits: int
    rate_limited_responses: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    estimated_cost_usd: float | None
    peak_concurrency: int
    final_concurrency_limit: int
    wall_seconds: float
    normalised: dict[str, int] = {}  # values brought into the schema, per field
    format_rejected: int = 0  # 400s to a response_format (included in http_calls)
    response_format_modes: dict[str, int] = {}  # items answered per response_format mode
    # calls paced on an equal share because the shared budget could not be reached
    budget_fallback_calls: int = 0
    cached_tokens: int = 0  # prompt tokens served from the provider's prompt cache
    cost_saved_usd: float | None = 0.0  # the sync price less the estimate (batch, cached)
    routes: dict[str, int] = {}  # items answered per route (sync, batch)
    batch_ids: list[str] = []  # the provider batches that answered items
    batch_fallbacks: int = 0  # items a batch did not answer, asked synchronously
    flex_fallbacks: int = 0  # flex items asked standard after flex had no capacity

    @model_validator(mode="after")
    def _accounts(self) -> "BatchMetrics":
        # The invariant every report must keep: nothing attempted goes unaccounted for.
        if self.attempted != self.succeeded + self.failed:
            raise ValueError(f"attempted {self.attempted} != succeeded {self.succeeded} "
                             f"+ failed {self.failed}")
        if sum(self.failed_by_class.values()) != self.failed:
            raise ValueError(f"failed_by_class {self.failed_by_class} != failed {self.failed}")
        return self

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.attempted if self.attempted else 1.0


class MetricsRecorder:
    """Sums of item results; `snapshot` turns them into BatchMetrics. The same sums serve a
    whole engine run and any subset of its items (one document's chunks, say)."""

    def __init__(self):
        self.attempted = 0
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.retries = 0
        self.http_calls = 0
        self.repairs = 0
        self.cache_hits = 0
        self.rate_limited = 0
        self.latencies: list[float] = []  # a uniform sample of at most LATENCY_SAMPLE
        self._latency_seen = 0
        self._rng = random.Random(0)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd: float | None = 0.0  # None once any call's price is unknown
        self.normalised: Counter[str] = Counter()
        self.format_rejected = 0
        self.modes: Counter[str] = Counter()
        self.cached_tokens = 0
        self.saved_usd: float | None = 0.0
        self.routes: Counter[str] = Counter()
        self.batch_ids: dict[str, None] = {}
        self.batch_fallbacks = 0
        self.flex_fallbacks = 0

    def add(self, result: "ItemResult") -> None:
        self.attempted += 1
        if result.ok:
            self.succeeded += 1
        else:
            self.failed[result.error_class] += 1
        self.retries += result.retries
        self.http_calls += result.http_calls
        self.repairs += result.repairs
        self.cache_hits += result.cached
        self.normalised.update(dict(result.normalised))
        self.format_rejected += result.format_rejected
        if result.response_format:
            self.modes[result.response_format] += 1
        self.rate_limited += result.rate_limited
        for latency in result.latencies:  # a fixed-size sample keeps memory O(1)
            self._latency_seen += 1
            if len(self.latencies) < LATENCY_SAMPLE:
                self.latencies.append(latency)
            else:
                slot = self._rng.randrange(self._latency_seen)
                if slot < LATENCY_SAMPLE:
                    self.latencies[slot] = latency
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        if self.cost_usd is not None:
            self.cost_usd = None if result.cost_usd is None else self.cost_usd + result.cost_usd
        if self.saved_usd is not None:
            self.saved_usd = None if result.saved_usd is None \
                else self.saved_usd + result.saved_usd
        self.cached_tokens += result.cached_tokens
        if result.route:
            self.routes[result.route] += 1
        if result.batch_id:
            self.batch_ids[result.batch_id] = None
        self.batch_fallbacks += result.batch_fallback
        self.flex_fallbacks += result.flex_fallback

    def snapshot(self, *, provider: str, model: str, peak: int, limit: int,
                 wall: float, budget_fallback_calls: int = 0) -> BatchMetrics:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1)

        return BatchMetrics(
            provider=provider,
            model=model,
            attempted=self.attempted,
            succeeded=self.succeeded,
            failed=sum(self.failed.values()),
            # plain words as keys: this dict is logged and stored as it is
            failed_by_class={str(c): self.failed[c] for c in ITEM_ERROR_CLASSES
                             if self.failed[c]},
            retries=self.retries,
            http_calls=self.http_calls,
            repairs=self.repairs,
            cache_hits=self.cache_hits,
            rate_limited_responses=self.rate_limited,
            latency_p50_ms=round(1000 * statistics.median(lat), 1) if lat else None,
            latency_p95_ms=pct(0.95),
            latency_max_ms=round(1000 * lat[-1], 1) if lat else None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            estimated_cost_usd=None if self.cost_usd is None else round(self.cost_usd, 6),
            peak_concurrency=peak,
            final_concurrency_limit=limit,
            wall_seconds=round(wall, 3),
            normalised=dict(sorted(self.normalised.items())),
            format_rejected=self.format_rejected,
            response_format_modes=dict(sorted(self.modes.items())),
            budget_fallback_calls=budget_fallback_calls,
            cached_tokens=self.cached_tokens,
            cost_saved_usd=None if self.saved_usd is None else round(self.saved_usd, 6),
            routes=dict(sorted(self.routes.items())),
            batch_ids=list(self.batch_ids),
            batch_fallbacks=self.batch_fallbacks,
            flex_fallbacks=self.flex_fallbacks,
        )
