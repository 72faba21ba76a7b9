"""What goes into the engine (ChatItem, EmbedItem) and what comes out (ItemResult), with
the per-item accounting that batch metrics are the sums of."""

from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel

from resources.errors import ErrorClass


@dataclass(frozen=True)
class ChatItem:
    key: str
    messages: list[dict]
    schema: type[BaseModel] | None = None  # structured output, validated
    prompt_version: str = "v1"
    max_tokens: int | None = None
    temperature: float = 0.0


@dataclass(frozen=True)
class EmbedItem:
    key: str
    inputs: list[str]  # one request embeds them all
    dimensions: int | None = None


@dataclass(frozen=True)
class ItemResult:
    """One item's outcome and exactly what it cost; batch metrics are sums of these."""

    key: str
    value: object = None  # a model instance, text, or a list of vectors
    error_class: ErrorClass | None = None
    error: str | None = None
    cached: bool = False
    http_calls: int = 0
    retries: int = 0
    repairs: int = 0
    rate_limited: int = 0  # 429 responses seen
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None if a model's price is unknown
    latencies: tuple[float, ...] = ()  # seconds, of each successful HTTP call
    # values brought into the schema before validating, per field ("Model.field": n)
    normalised: tuple[tuple[str, int], ...] = ()
    format_rejected: int = 0  # 400s to a response_format the server does not take
    response_format: str | None = None  # json_schema / json_object / prompt; None if cached
    route: str | None = None  # sync or batch: how it was answered; None if cached
    batch_id: str | None = None  # the provider batch that answered it
    cached_tokens: int = 0  # prompt tokens the provider served from its prompt cache
    saved_usd: float | None = 0.0  # the sync price less what was paid (batch, cached)
    batch_fallback: bool = False  # the batch did not answer it: asked synchronously
    flex_fallback: bool = False  # flex had no capacity for long enough: asked standard

    @property
    def ok(self) -> bool:
        return self.error_class is None


@dataclass
class ItemAccount:
    """Per-item accounting while the item is being processed."""

    cached: bool = False
    http_calls: int = 0
    retries: int = 0
    repairs: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    latencies: list[float] = field(default_factory=list)
    normalised: Counter[str] = field(default_factory=Counter)
    format_rejected: int = 0
    response_format: str | None = None
    route: str | None = None
    batch_id: str | None = None
    cached_tokens: int = 0
    saved_usd: float | None = 0.0
    batch_fallback: bool = False
    flex: bool = False  # its calls go with service_tier=flex (until flex_fallback)
    flex_fallback: bool = False

    def add_cost(self, cost: float | None, saved: float | None) -> None:
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost
        self.saved_usd = None if saved is None or self.saved_usd is None \
            else self.saved_usd + saved

    def result(self, key: str, value: object = None, error_class: ErrorClass | None = None,
               error: str | None = None) -> ItemResult:
        return ItemResult(
            key, value, error_class, error, self.cached, self.http_calls, self.retries,
            self.repairs, self.rate_limited, self.prompt_tokens, self.completion_tokens,
            self.cost_usd, tuple(self.latencies), tuple(sorted(self.normalised.items())),
            self.format_rejected, self.response_format, self.route, self.batch_id,
            self.cached_tokens, self.saved_usd, self.batch_fallback, self.flex_fallback,
        )
