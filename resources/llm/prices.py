"""What a call costs: USD per million tokens per model, by route, with cached input.

OpenAI prices input tokens the provider found in its prompt cache
(`usage.prompt_tokens_details.cached_tokens`) at a fraction of the input rate, and the
Batch API and Flex processing at a share of the synchronous price (half, for the models
that offer them). `LLM_PRICES` extends or overrides the table, per model, as
`[input, output]`, `[input, output, cached_input]` or
`{"input": …, "output": …, "cached_input": …, "batch": 0.5, "flex": 0.5}` (`batch`/`flex`:
the share of the synchronous price; `null`: the route is not offered for that model).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Route = Literal["sync", "batch", "flex"]


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)  # None: cached tokens cost the input rate
    batch: float | None = Field(0.5, gt=0, le=1)  # share of the sync price; None: no batch
    flex: float | None = Field(None, gt=0, le=1)  # share of the sync price; None: no flex

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            if not 1 <= len(value) <= 3:
                raise ValueError("a price list is [input, output] or [input, output, cached]")
            return dict(zip(("input", "output", "cached_input"), value, strict=False))
        return value

    def share(self, route: Route) -> float | None:
        """The route's share of the synchronous price; None if the model lacks the route."""
        return 1.0 if route == "sync" else self.batch if route == "batch" else self.flex

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             route: Route = "sync") -> float | None:
        share = self.share(route)
        if share is None:
            return None
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        usd = ((prompt_tokens - cached) * self.input + cached * cached_rate
               + completion_tokens * self.output) / 1e6
        return usd * share


# USD per 1M tokens, OpenAI's list prices; batch is half of sync for all of them, flex
# only for the models that offer it.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(input=0.15, output=0.60, cached_input=0.075),
    "gpt-4o": Price(input=2.50, output=10.00, cached_input=1.25),
    "gpt-4.1-mini": Price(input=0.40, output=1.60, cached_input=0.10),
    "gpt-4.1-nano": Price(input=0.10, output=0.40, cached_input=0.025),
    "gpt-5": Price(input=1.25, output=10.00, cached_input=0.125, flex=0.5),
    "gpt-5-mini": Price(input=0.25, output=2.00, cached_input=0.025, flex=0.5),
    "gpt-5-nano": Price(input=0.05, output=0.40, cached_input=0.005, flex=0.5),
    "o4-mini": Price(input=1.10, output=4.40, cached_input=0.275, flex=0.5),
    "text-embedding-3-small": Price(input=0.02),
    "text-embedding-3-large": Price(input=0.13),
}
