"""LLMEngine: every chat and embedding call, bounded, throttled, retried, cached, counted.

    engine = LLMEngine(LLMSettings.from_env())
    async with engine:
        metrics = await engine.run(items, on_result=results.append, concurrency=16)

`run` feeds a fixed set of workers from the item iterator, so memory stays O(concurrency)
whatever the number of items, and every item ends as exactly one `ItemResult`: succeeded,
or failed with an error class. Cancelling `run` cancels its workers and their requests.
"""

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx2
import openai
from pydantic import BaseModel, ValidationError

from resources.llm.breaker import CircuitBreaker
from resources.llm.cache import Cache, SQLiteCache, cache_key
from resources.llm.client import make_client
from resources.llm.items import ChatItem, EmbedItem, ItemAccount, ItemResult
from resources.llm.limits import AIMDLimit, ConcurrencyGate
from resources.llm.metrics import BatchMetrics, MetricsRecorder
from resources.llm.retry import OUTAGE, RETRYABLE, backoff_seconds, classify, retry_after_seconds
from resources.llm.settings import LLMSettings
from resources.llm.structured import answer_text, parse, repair_turn, response_format, short
from resources.llm.throttle import Throttle, has_ratelimit_headers
from resources.tokenizer import get_tokenizer

log = logging.getLogger(__name__)

# An item stops after this many HTTP calls per allowed attempt, whatever the breaker says.
MAX_CALLS_PER_ATTEMPT = 3


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
        self.throttle = Throttle(settings, self.rng, time.monotonic())
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def rpm(self):
        return self.throttle.rpm

    # -- client: one per event loop ---------------------------------------------------
    def _client_here(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            raise RuntimeError("LLMEngine is bound to another event loop; make one per loop")
        if self._client is None:
            self._loop = loop
            self._client = make_client(self.settings, self._transport)
            self.log.info(
                "LLM provider: %s (chat %s, embeddings %s)%s", self.settings.provider,
                self.settings.chat_model, self.settings.embed_model,
                " - deterministic heuristics, not a language model" if self.settings.offline
                else "",
            )
        return self._client

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
        # Without a configured or learned RPM, start slowly: the first answers carry the
        # server's x-ratelimit-* limits, which a burst of `ceiling` requests would overrun.
        slow_start = not self.settings.offline and self.throttle.rpm is None
        batch = _Batch(gate=ConcurrencyGate(AIMDLimit(floor, ceiling, slow_start=slow_start)))
        batch.gate.cap = lambda: self.throttle.useful_concurrency(batch.latency)
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
        call = ItemAccount()
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
    async def _chat(self, item: ChatItem, batch: _Batch, call: ItemAccount) -> object:
        model = self.settings.chat_model
        batch.models.add(model)
        request: dict = {"model": model, "messages": list(item.messages),
                         "temperature": item.temperature}
        if item.max_tokens:
            request["max_tokens"] = item.max_tokens
        if item.schema is not None:
            request["response_format"] = response_format(item.schema)
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
        if reason := self.throttle.too_big(estimate):
            raise _ItemFailed("client_error", reason)
        content = answer_text(await self._call(batch, call, "chat", request, estimate))
        try:
            value = parse(content, item.schema)
        except ValueError as first:  # pydantic's ValidationError is a ValueError
            call.repairs += 1  # one repair attempt that shows the model its own mistake
            request["messages"] = [*request["messages"], *repair_turn(content, first)]
            content = answer_text(await self._call(batch, call, "chat", request, estimate))
            try:
                value = parse(content, item.schema)
            except ValueError as second:
                raise _ItemFailed("invalid_output",
                                  f"invalid after one repair: {short(second)}") from second
        stored = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        await self._cache_put(key, {"value": stored})
        return value

    def _estimate(self, messages: list[dict], max_tokens: int | None) -> int:
        prompt = sum(4 + self.tokenizer.count(str(m.get("content") or "")) for m in messages)
        return prompt + (max_tokens or self.settings.expected_completion_tokens)

    # -- embeddings ------------------------------------------------------------------------
    async def _embed(self, item: EmbedItem, batch: _Batch, call: ItemAccount) -> object:
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
        if reason := self.throttle.too_big(estimate):
            raise _ItemFailed("client_error", reason)
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
    async def _call(self, batch: _Batch, call: ItemAccount, kind: str, request: dict,
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
                    wait = self.throttle.reserve(estimate, time.monotonic())
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
                self.throttle.follow(headers, now)
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
            if error_class != "timeout":
                self.throttle.settle(estimate, 0, now)  # rejected requests spend no tokens
            retry_after = retry_after_seconds(headers)
            if error_class == "rate_limited":
                call.rate_limited += 1
                # With x-ratelimit-* headers the buckets already follow the server (above);
                # without them, the Retry-After is all we know and holds for every caller.
                if retry_after and not has_ratelimit_headers(headers):
                    self.throttle.hold(retry_after, now)
            if error_class in ("rate_limited", "timeout") and batch.gate.aimd.on_overload(now):
                await batch.gate.limit_changed()
            message = f"{error_class}: {short(error)}"
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

    def _succeeded(self, batch: _Batch, call: ItemAccount, request: dict, reply, estimate: int,
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
        if usage is not None:
            self.throttle.settle(estimate, prompt_tokens + completion_tokens, now)
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
