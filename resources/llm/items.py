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

    def result(self, key: str, value: object = None, error_class: ErrorClass | None = None,
               error: str | None = None) -> ItemResult:
        return ItemResult(
            key, value, error_class, error, self.cached, self.http_calls, self.retries,
            self.repairs, self.rate_limited, self.prompt_tokens, self.completion_tokens,
            self.cost_usd, tuple(self.latencies), tuple(sorted(self.normalised.items())),
            self.format_rejected, self.response_format,
        )
