"""LLMEngine: every chat and embedding call, bounded, throttled, retried, cached, counted.

    engine = LLMEngine(LLMSettings.from_env())
    async with engine:
        metrics = await engine.run(items, on_result=results.append, concurrency=16)

`run` feeds a fixed set of workers from the item iterator, so memory stays O(concurrency)
whatever the number of items, and every item ends as exactly one `ItemResult`: succeeded,
or failed with an error class. Cancelling `run` cancels its workers and their requests.
"""

import asyncio
import functools
import logging
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx2
import openai
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, ValidationError

from resources.llm.breaker import CircuitBreaker
from resources.llm.cache import Cache, SQLiteCache, cache_key
from resources.llm.limits import AIMDLimit, ConcurrencyGate, TokenBucket, parse_reset
from resources.llm.metrics import BatchMetrics, MetricsRecorder
from resources.llm.retry import OUTAGE, RETRYABLE, backoff_seconds, classify, retry_after_seconds
from resources.llm.settings import LLMSettings
from resources.tokenizer import get_tokenizer

log = logging.getLogger(__name__)

OFFLINE_BASE_URL = "http://offline.docgraph/v1"
# An item stops after this many HTTP calls per allowed attempt, whatever the breaker says.
MAX_CALLS_PER_ATTEMPT = 3
REPAIR_PROMPT = (
    "Your previous answer was not valid: {error}\n"
    "Answer again with only a JSON object that matches the requested schema."
)


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
    error_class: str | None = None
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

    @property
    def ok(self) -> bool:
        return self.error_class is None


class _ItemFailed(Exception):
    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


@dataclass
class _Batch:
    gate: ConcurrencyGate
    stats: MetricsRecorder = field(default_factory=MetricsRecorder)
    models: set[str] = field(default_factory=set)
    latency: float | None = None  # moving average of successful calls, seconds

    def observe(self, seconds: float) -> None:
        self.latency = seconds if self.latency is None else 0.9 * self.latency + 0.1 * seconds


@dataclass
class _Call:
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

    def result(self, key: str, value: object = None, error_class: str | None = None,
               error: str | None = None) -> ItemResult:
        return ItemResult(
            key, value, error_class, error, self.cached, self.http_calls, self.retries,
            self.repairs, self.rate_limited, self.prompt_tokens, self.completion_tokens,
            self.cost_usd, tuple(self.latencies),
        )


class LLMEngine:
    def __init__(
        self,
        settings: LLMSettings,
        *,
        cache: Cache | None = None,
        use_cache: bool = True,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ):
        """`transport` replaces the network for an online base_url (benchmarks use it to
        measure the engine alone)."""
        self.settings = settings
        self._transport = transport
        path = settings.resolved_cache_path()
        self.cache = cache if cache is not None else (
            SQLiteCache(path) if use_cache and path else None
        )
        self.rng = rng or random.Random()
        self.log = logger or log
        self.tokenizer = get_tokenizer()
        self.breaker = CircuitBreaker(
            threshold=settings.breaker_threshold,
            cooldown=settings.breaker_cooldown_seconds,
            max_cooldown=max(settings.breaker_cooldown_seconds, settings.backoff_cap_seconds),
        )
        # A 429 without x-ratelimit-* headers says "everyone wait": nobody sends before
        # _hold_until, and the waiters spread over the following _hold_spread seconds
        # rather than all returning at once.
        self._hold_until = 0.0
        self._hold_spread = 0.0
        now = time.monotonic()
        burst = settings.burst_seconds
        self.rpm = self._bucket(settings.rpm, burst, now)
        # Token costs are lumpy (one prompt may be thousands): allow a 10 s burst of tokens.
        self.tpm = self._bucket(settings.tpm, max(burst, 10.0), now)
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def _bucket(per_minute: float | None, burst: float, now: float) -> TokenBucket | None:
        if not per_minute:
            return None
        rate = per_minute / 60
        return TokenBucket(rate, max(1.0, rate * burst), now)

    # -- client: one per event loop ---------------------------------------------------
    def _client_here(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            raise RuntimeError("LLMEngine is bound to another event loop; make one per loop")
        if self._client is None:
            self._loop = loop
            self._client = self._make_client()
            self.log.info(
                "LLM provider: %s (chat %s, embeddings %s)%s", self.settings.provider,
                self.settings.chat_model, self.settings.embed_model,
                " - deterministic heuristics, not a language model" if self.settings.offline
                else "",
            )
        return self._client

    def _make_client(self) -> openai.AsyncOpenAI:
        s = self.settings
        timeout = httpx2.Timeout(s.timeout_seconds, connect=min(10.0, s.timeout_seconds))
        if s.offline:
            from resources.llm.offline.app import create_app

            # raise_app_exceptions=False: a bug in the offline app answers 500, like a
            # server would, instead of escaping into the engine.
            http = httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=create_app(), raise_app_exceptions=False),
                timeout=timeout,
            )
            base_url, api_key = OFFLINE_BASE_URL, "offline"
        else:
            # The gate bounds requests in flight (per batch ceiling), so the pool itself is
            # unbounded: a request let through never waits for a socket (no pool timeouts).
            http = httpx2.AsyncClient(
                timeout=timeout, transport=self._transport,
                limits=httpx2.Limits(max_connections=None,
                                     max_keepalive_connections=s.max_concurrency),
            )
            base_url, api_key = s.base_url, s.api_key or "unused"
        # max_retries=0: the engine owns retries, so every HTTP call is counted.
        return openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout, http_client=http
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client, self._loop = None, None

    async def __aenter__(self) -> "LLMEngine":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # -- batches ------------------------------------------------------------------------
    async def run(
        self,
        items: Iterable[ChatItem | EmbedItem],
        on_result: Callable[[ItemResult], None],
        concurrency: int | None = None,
    ) -> BatchMetrics:
        """Process every item; call `on_result` once per item, in completion order."""
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._client_here()
        ceiling = concurrency or self.settings.max_concurrency
        floor = min(self.settings.min_concurrency, ceiling)
        batch = _Batch(gate=ConcurrencyGate(AIMDLimit(floor, ceiling)))
        batch.gate.cap = lambda: self._useful_concurrency(batch)
        source = iter(items)
        started = time.monotonic()

        async def worker() -> None:
            for item in source:  # workers share one iterator: items are pulled, not queued
                result = await self._process(item, batch)
                batch.stats.add(result)
                on_result(result)

        async with asyncio.TaskGroup() as workers:
            for _ in range(ceiling):
                workers.create_task(worker())

        return batch.stats.snapshot(
            provider=self.settings.provider,
            model=",".join(sorted(batch.models)) or self.settings.chat_model,
            peak=batch.gate.peak,
            limit=batch.gate.limit(),
            wall=time.monotonic() - started,
        )

    async def run_all(self, items: Iterable[ChatItem | EmbedItem], concurrency: int | None = None
                      ) -> tuple[list[ItemResult], BatchMetrics]:
        results: list[ItemResult] = []
        metrics = await self.run(items, results.append, concurrency)
        return results, metrics

    async def _process(self, item: ChatItem | EmbedItem, batch: _Batch) -> ItemResult:
        call = _Call()
        try:
            if isinstance(item, ChatItem):
                value = await self._chat(item, batch, call)
            else:
                value = await self._embed(item, batch, call)
        except _ItemFailed as failure:
            return call.result(item.key, error_class=failure.error_class, error=str(failure))
        except Exception as exc:  # noqa: BLE001 - a bug for one item must not end the batch
            self.log.exception("item %s: unexpected %s", item.key, type(exc).__name__)
            return call.result(item.key, error_class="internal_error",
                               error=f"{type(exc).__name__}: {exc}")
        return call.result(item.key, value)

    # -- chat -----------------------------------------------------------------------------
    async def _chat(self, item: ChatItem, batch: _Batch, call: _Call) -> object:
        model = self.settings.chat_model
        batch.models.add(model)
        schema = _json_schema(item.schema) if item.schema else None
        request: dict = {"model": model, "messages": list(item.messages),
                         "temperature": item.temperature}
        if item.max_tokens:
            request["max_tokens"] = item.max_tokens
        if schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": item.schema.__name__, "schema": schema, "strict": True},
            }
        key = cache_key(kind="chat", prompt_version=item.prompt_version, **request)
        hit = await self._cache_get(key)
        if hit is not None:
            try:
                value = item.schema.model_validate(hit["value"]) if item.schema else hit["value"]
            except ValidationError:
                pass  # the model's validators changed since: ask again, never serve it
            else:
                call.cached = True
                return value

        estimate = self._estimate(request["messages"], item.max_tokens)
        self._check_fits(estimate)
        reply = await self._call(batch, call, "chat", request, estimate)
        content = reply.choices[0].message.content if reply.choices else None
        try:
            value = self._parse(content, item.schema)
        except (ValidationError, ValueError) as first:
            # One repair attempt that shows the model its own mistake.
            call.repairs += 1
            request["messages"] = [
                *request["messages"],
                {"role": "assistant", "content": content or ""},
                {"role": "user", "content": REPAIR_PROMPT.format(error=_short(first))},
            ]
            reply = await self._call(batch, call, "chat", request, estimate)
            content = reply.choices[0].message.content if reply.choices else None
            try:
                value = self._parse(content, item.schema)
            except (ValidationError, ValueError) as second:
                raise _ItemFailed("invalid_output",
                                  f"invalid after one repair: {_short(second)}") from second
        stored = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        await self._cache_put(key, {"value": stored})
        return value

    @staticmethod
    def _parse(content: str | None, schema: type[BaseModel] | None) -> object:
        if not content or not content.strip():
            raise ValueError("the answer was empty")
        if schema is None:
            return content
        return schema.model_validate_json(content)

    def _check_fits(self, estimate: int) -> None:
        """A request larger than a minute's token budget would wait forever."""
        if self.settings.tpm and estimate > self.settings.tpm:
            raise _ItemFailed("client_error", f"the request needs ~{estimate} tokens, more than "
                                              f"LLM_TPM={self.settings.tpm:.0f} allows in a minute")

    def _estimate(self, messages: list[dict], max_tokens: int | None) -> int:
        prompt = sum(4 + self.tokenizer.count(str(m.get("content") or "")) for m in messages)
        return prompt + (max_tokens or self.settings.expected_completion_tokens)

    # -- embeddings ------------------------------------------------------------------------
    async def _embed(self, item: EmbedItem, batch: _Batch, call: _Call) -> object:
        model = self.settings.embed_model
        batch.models.add(model)
        request: dict = {"model": model, "input": list(item.inputs)}
        if item.dimensions:
            request["dimensions"] = item.dimensions
        key = cache_key(kind="embeddings", **request)
        hit = await self._cache_get(key)
        if hit is not None:
            call.cached = True
            return hit["value"]
        estimate = sum(self.tokenizer.count(text) for text in item.inputs)
        self._check_fits(estimate)
        reply = await self._call(batch, call, "embeddings", request, estimate)
        vectors = [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
        dims = {len(v) for v in vectors}
        if len(vectors) != len(item.inputs) or len(dims) != 1:
            raise _ItemFailed("invalid_output", f"{len(vectors)} vectors of sizes {sorted(dims)}"
                                                f" for {len(item.inputs)} inputs")
        await self._cache_put(key, {"value": vectors})
        return vectors

    # -- the cache, off the event loop: a writer in another process may hold its lock ---------
    async def _cache_get(self, key: str) -> dict | None:
        if self.cache is None:
            return None
        try:
            return await asyncio.to_thread(self.cache.get, key)
        except sqlite3.Error as exc:
            self.log.warning("response cache unavailable (%s): asking the provider", exc)
            return None

    async def _cache_put(self, key: str, value: dict) -> None:
        if self.cache is None:
            return
        try:
            await asyncio.to_thread(self.cache.put, key, value)
        except sqlite3.Error as exc:
            self.log.warning("response cache unavailable (%s): answer not stored", exc)

    # -- one request, with throttling, retries and the breaker ------------------------------
    async def _call(self, batch: _Batch, call: _Call, kind: str, request: dict,
                    estimate: int):
        client = self._client_here()
        create = (client.chat.completions if kind == "chat" else client.embeddings)
        create = create.with_raw_response.create
        attempts = 0
        limited_since: float | None = None  # first 429 that said when to come back
        held_since: float | None = None  # first time the breaker held this item
        while True:
            probe, held_since = await self._wait_for_breaker(held_since)
            settled = False
            try:
                async with batch.gate.slot():
                    wait = self._reserve(estimate)
                    if wait > 0:
                        await asyncio.sleep(wait)
                    call.http_calls += 1
                    sent = time.monotonic()
                    try:
                        # The SDK's timeout is per socket read; this one bounds the request.
                        async with asyncio.timeout(self.settings.timeout_seconds):
                            raw = await create(**request)
                            reply = raw.parse()
                    except (openai.OpenAIError, ValueError, TimeoutError) as exc:
                        # ValueError: a garbled body; TimeoutError: the whole-request limit
                        error = exc
                        headers = getattr(getattr(exc, "response", None), "headers", None)
                    else:
                        error, headers = None, raw.headers
                now = time.monotonic()
                self._follow_headers(headers, now)
                if error is None:
                    self._succeeded(batch, call, request, reply, estimate, sent, now)
                    self.breaker.on_success(probe)
                    settled = True
                    return reply
                error_class = classify(error)
                was_closed = self.breaker.is_closed
                self.breaker.on_failure(now, outage=error_class in OUTAGE, probe=probe)
                settled = True
            finally:
                if probe and not settled:  # cancelled mid-probe: let someone else probe
                    self.breaker.abandon_probe()
            if was_closed and not self.breaker.is_closed:
                self.log.warning("circuit opened: %s of the last %s calls failed (last: %s)",
                                 self.breaker.threshold, self.breaker.recent.maxlen,
                                 error_class)
            if self.tpm is not None and error_class != "timeout":
                self.tpm.settle(estimate, 0, now)  # rejected requests spend no tokens
            retry_after = retry_after_seconds(headers)
            if error_class == "rate_limited":
                call.rate_limited += 1
                # With x-ratelimit-* headers the buckets already follow the server (above);
                # without them, the Retry-After is all we know and holds for every caller.
                if retry_after and not _has_ratelimit_headers(headers):
                    self._hold_until = max(self._hold_until, now + retry_after)
                    self._hold_spread = retry_after
            if error_class in ("rate_limited", "timeout") and batch.gate.aimd.on_overload(now):
                await batch.gate.limit_changed()
            message = f"{error_class}: {_short(error)}"
            if error_class not in RETRYABLE:
                raise _ItemFailed(error_class, message)
            # A failure during an outage does not spend the item's retries (the breaker
            # holds it until the provider is back), nor does a 429 that said when to come
            # back: that is pacing, not failure. The call cap still bounds an item that an
            # on-and-off provider would otherwise keep alive forever.
            paced = error_class == "rate_limited" and retry_after is not None
            if self.breaker.is_closed and not paced:
                attempts += 1
            limited_since = limited_since or (now if paced else None)
            if (attempts >= self.settings.max_attempts
                    or call.http_calls - call.rate_limited
                    >= MAX_CALLS_PER_ATTEMPT * self.settings.max_attempts
                    or limited_since and now - limited_since > self.settings.max_outage_seconds):
                raise _ItemFailed(error_class, f"{message} (after {call.http_calls} calls)")
            call.retries += 1
            if retry_after is not None:  # the server's word, plus a little jitter so that
                delay = retry_after * (1 + 0.1 * self.rng.random())  # waiters don't stampede
            else:
                delay = backoff_seconds(attempts, self.settings.backoff_base_seconds,
                                        self.settings.backoff_cap_seconds, self.rng)
            await asyncio.sleep(delay)

    def _succeeded(self, batch: _Batch, call: _Call, request: dict, reply, estimate: int,
                   sent: float, now: float) -> None:
        call.latencies.append(now - sent)
        batch.observe(now - sent)
        usage = getattr(reply, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        call.prompt_tokens += prompt_tokens
        call.completion_tokens += completion_tokens
        cost = self.settings.cost_usd(request["model"], prompt_tokens, completion_tokens)
        call.cost_usd = None if cost is None or call.cost_usd is None else call.cost_usd + cost
        if self.tpm is not None and usage is not None:
            self.tpm.settle(estimate, prompt_tokens + completion_tokens, now)
        batch.gate.aimd.on_success()

    async def _wait_for_breaker(self, held_since: float | None) -> tuple[bool, float | None]:
        """Wait while the circuit is open; an item is held LLM_MAX_OUTAGE_SECONDS at most in
        all, counted from when it was first held. Returns (is this call the half-open
        probe, when the item was first held)."""
        while True:
            now = time.monotonic()
            decision = self.breaker.decide(now)
            if decision.proceed:
                return decision.probe, held_since
            held_since = held_since or now
            left = self.settings.max_outage_seconds - (now - held_since)
            if left <= 0:
                raise _ItemFailed(
                    "circuit_open",
                    f"provider unavailable; held for {self.settings.max_outage_seconds:.0f}s",
                )
            await asyncio.sleep(min(decision.wait, left))

    def _useful_concurrency(self, batch: _Batch) -> int | None:
        """Little's law: with the RPM budget binding, rate x latency requests in flight
        already use it all; a quarter more absorbs jitter, more would only queue."""
        if self.rpm is None or batch.latency is None:
            return None
        return math.ceil(self.rpm.rate * batch.latency * 1.25) + 2

    def _reserve(self, estimate: int) -> float:
        now = time.monotonic()
        held = self._hold_until - now
        waits = [held + self._hold_spread * self.rng.random() if held > 0 else 0.0]
        if self.rpm is not None:
            waits.append(self.rpm.reserve(1, now))
        if self.tpm is not None:
            waits.append(self.tpm.reserve(estimate, now))
        return max(waits)

    def _follow_headers(self, headers, now: float) -> None:
        """Adopt and follow x-ratelimit-* headers; ignore ones that don't parse."""
        if not headers:
            return
        for bucket_name, unit in (("rpm", "requests"), ("tpm", "tokens")):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{unit}"))
            if remaining is None:
                continue
            bucket = getattr(self, bucket_name)
            if bucket is None:  # the server tells us its limit: adopt it
                limit = _number(headers.get(f"x-ratelimit-limit-{unit}"))
                if not limit or limit <= 0:
                    continue
                bucket = self._bucket(limit, self.settings.burst_seconds, now)
                setattr(self, bucket_name, bucket)
            bucket.sync(remaining, parse_reset(headers.get(f"x-ratelimit-reset-{unit}")), now)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@functools.cache
def _json_schema(model: type[BaseModel]) -> dict:
    """The schema in OpenAI's strict form (every property required, optional ones
    nullable, no extra properties), as the SDK's own structured-output helper builds it;
    a plain pydantic schema is rejected with strict=True."""
    return to_strict_json_schema(model)


def _has_ratelimit_headers(headers) -> bool:
    return bool(headers) and any(
        headers.get(f"x-ratelimit-remaining-{unit}") is not None for unit in ("requests", "tokens")
    )


def _short(error: BaseException, limit: int = 300) -> str:
    text = str(error).replace("\n", " ")
    if isinstance(error, ValidationError):
        text = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors()
        )
    return text[:limit]

