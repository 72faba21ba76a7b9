"""LLMEngine: every chat and embedding call, bounded, throttled, retried, cached, counted.

    engine = LLMEngine(LLMSettings.from_env())
    async with engine:
        metrics = await engine.run(items, on_result=results.append, concurrency=16)

`run` feeds a fixed set of workers from the item iterator, so memory stays O(concurrency)
whatever the number of items, and every item ends as exactly one `ItemResult`: succeeded,
or failed with an error class. `on_result` may return follow-up items (a document's next
calls, once this answer is in): they join the same run ahead of the iterator's next items
(resources/llm/feed.py), so dependent work needs no second run and no barrier. Cancelling
`run` cancels its workers and their requests. Items may take another route (`route_of`):
flex (service_tier=flex, resources/llm/calls.py) or the batch lane, in rounds
(resources/llm/batch_lane.py); answers a batch gave are served from the cache, accounted at
the batch price in the run that collected them.
"""

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable

import httpx2
import openai
import sqlalchemy
from pydantic import BaseModel, ValidationError

from resources.errors import ErrorClass
from resources.llm.batch_lane import BatchLane
from resources.llm.batch_store import BatchStore
from resources.llm.breaker import CircuitBreaker
from resources.llm.cache import CACHE_ERRORS, Cache, cache_key, open_cache
from resources.llm.calls import Batch, CallLoop, FormatRejected, ItemFailed
from resources.llm.client import make_client
from resources.llm.feed import ROUND, Feed
from resources.llm.formats import FormatModes, as_mode
from resources.llm.items import ChatItem, EmbedItem, ItemAccount, ItemResult
from resources.llm.limits import AIMDLimit, ConcurrencyGate
from resources.llm.metrics import BatchMetrics
from resources.llm.settings import LLMSettings
from resources.llm.shared_budget import throttle_for
from resources.llm.structured import answer_text, parse, repair_turn, response_format, short
from resources.tokenizer import get_tokenizer

log = logging.getLogger(__name__)


class LLMEngine(CallLoop):
    def __init__(
        self,
        settings: LLMSettings,
        *,
        cache: Cache | None = None,
        use_cache: bool = True,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        learned_formats: dict[str, str] | None = None,
    ):
        """`transport` replaces the network for an online base_url (benchmarks use it to
        measure the engine alone); `learned_formats` (model -> response_format that works)
        is shared by the engines of one step (resources/llm/formats.py)."""
        self.settings = settings
        self._transport = transport
        path = settings.resolved_cache_path()
        self.cache = cache if cache is not None else (
            open_cache(path) if use_cache and path else None
        )
        self.rng = rng or random.Random()
        self.log = logger or log
        self.tokenizer = get_tokenizer()
        self.breaker = CircuitBreaker(
            threshold=settings.breaker_threshold,
            cooldown=settings.breaker_cooldown_seconds,
            max_cooldown=max(settings.breaker_cooldown_seconds, settings.backoff_cap_seconds),
        )
        self.throttle = throttle_for(settings, self.rng, time.monotonic())
        # per model: the response_format that works (shared by a step's engines)
        self.formats = FormatModes(self.log, learned_formats)
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lane: BatchLane | None = None  # once batch_lane() made one
        self.waiting: list[ChatItem | EmbedItem] = []  # the last run's items left in batches

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

    def client(self) -> openai.AsyncOpenAI:
        return self._client_here()

    def batch_lane(self) -> BatchLane:
        """This engine's batch lane (resources/llm/batch_lane.py); its answers then serve
        this engine's items, on the batch route."""
        location = self.settings.resolved_cache_path()
        if self.cache is None or not location:
            raise ValueError("the batch lane needs the response cache (LLM_CACHE_PATH is "
                                 "off): batch answers are kept there until a run uses them")
        if self.lane is None:
            self.lane = BatchLane(self, BatchStore(location), self.cache, self.log)
        return self.lane

    async def aclose(self) -> None:
        self.throttle.close()
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
        on_result: Callable[[ItemResult], Iterable[ChatItem | EmbedItem] | None],
        concurrency: int | None = None,
        route_of: Callable[[ChatItem | EmbedItem], tuple[str, str] | None] | None = None,
        wait_for_batches: bool = True,
    ) -> BatchMetrics:
        """Process every item; call `on_result` once per item, in completion order; the
        items it returns are processed in the same run.

        `route_of` gives an item's (route, stage) when it is not sync: `flex` items are
        asked with service_tier=flex; a `batch` item without an answer in the cache is
        held, and sent with the others when nothing else is left (resources/llm/feed.py):
        with `wait_for_batches` the run waits for the batches and goes on with their
        answers; without, the items still in open batches are left out (`self.waiting`:
        no `on_result` for them)."""
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._client_here()
        ceiling = concurrency or self.settings.max_concurrency
        floor = min(self.settings.min_concurrency, ceiling)
        # Without a configured or learned RPM, start slowly: the first answers carry the
        # server's x-ratelimit-* limits, which a burst of `ceiling` requests would overrun.
        slow_start = not self.settings.offline and self.throttle.rpm is None
        batch = Batch(gate=ConcurrencyGate(AIMDLimit(floor, ceiling, slow_start=slow_start)))
        batch.gate.cap = lambda: self.throttle.useful_concurrency(batch.latency)
        feed: Feed[ChatItem | EmbedItem] = Feed(items)
        started = time.monotonic()
        fallbacks_before = self.throttle.fallback_calls

        laned: set[str] = set()  # items held once: a second time they go sync

        async def worker() -> None:
            while (item := await feed.take()) is not None:
                if item is ROUND:
                    await self._batch_round(feed, wait_for_batches)
                    continue
                route, stage = (route_of and route_of(item)) or ("sync", None)
                if route == "batch" and item.key not in laned \
                        and not await self._answered(item):
                    laned.add(item.key)
                    feed.hold((stage, item))
                    continue
                result = await self._process(item, batch, flex=route == "flex")
                batch.stats.add(result)
                feed.done(on_result(result) or ())

        async with asyncio.TaskGroup() as workers:
            for _ in range(ceiling):
                workers.create_task(worker())
        self.waiting = [item for _, item in feed.held]

        return batch.stats.snapshot(
            provider=self.settings.provider,
            model=",".join(sorted(batch.models)) or self.settings.chat_model,
            peak=batch.gate.peak,
            limit=batch.gate.limit(),
            wall=time.monotonic() - started,
            budget_fallback_calls=self.throttle.fallback_calls - fallbacks_before,
        )

    async def run_all(self, items: Iterable[ChatItem | EmbedItem], concurrency: int | None = None
                      ) -> tuple[list[ItemResult], BatchMetrics]:
        results: list[ItemResult] = []
        metrics = await self.run(items, results.append, concurrency)
        return results, metrics

    async def _process(self, item: ChatItem | EmbedItem, batch: Batch, flex: bool = False
                       ) -> ItemResult:
        call = ItemAccount(flex=flex)
        try:
            if isinstance(item, ChatItem):
                value = await self._chat(item, batch, call)
            else:
                value = await self._embed(item, batch, call)
        except ItemFailed as failure:
            return call.result(item.key, error_class=failure.error_class, error=str(failure))
        except Exception as exc:  # noqa: BLE001 - a bug for one item must not end the batch
            self.log.exception("item %s: unexpected %s", item.key, type(exc).__name__)
            return call.result(item.key, error_class=ErrorClass.INTERNAL_ERROR,
                               error=f"{type(exc).__name__}: {exc}")
        return call.result(item.key, value)

    # -- chat -----------------------------------------------------------------------------
    def chat_request(self, item: ChatItem) -> tuple[dict, str]:
        """The request as the cache knows it (json_schema form), and its cache key."""
        request: dict = {"model": self.settings.chat_model, "messages": list(item.messages),
                         "temperature": item.temperature}
        if item.max_tokens:
            request["max_tokens"] = item.max_tokens
        if item.schema is not None:
            request["response_format"] = response_format(item.schema)
        return request, cache_key(kind="chat", prompt_version=item.prompt_version, **request)

    def sendable(self, request: dict, schema: type[BaseModel] | None) -> dict:
        """The request in the response_format mode that works for its model so far."""
        if schema is None:
            return request
        return as_mode(request, schema, self.formats.mode(request["model"]))

    async def _chat(self, item: ChatItem, batch: Batch, call: ItemAccount) -> object:
        request, key = self.chat_request(item)
        model = request["model"]
        batch.models.add(model)
        hit = await self._cache_get(key)
        if hit is not None:
            try:
                value = item.schema.model_validate(hit["value"]) if item.schema else hit["value"]
            except ValidationError:
                pass  # the model's validators changed since: ask again, never serve it
            else:
                self._served(call, hit, model)
                call.normalised.update(hit.get("normalised") or {})  # older entries: none
                return value

        estimate = self._estimate(request["messages"], item.max_tokens)
        if reason := self.throttle.too_big(estimate):
            raise ItemFailed(ErrorClass.CLIENT_ERROR, reason)
        content = await self._batch_fallback(key, call)
        if content is None:
            content = await self._ask(item, batch, call, request)
        while True:
            try:
                value, normalised = parse(content, item.schema)
                break
            except ValueError as invalid:  # pydantic's ValidationError is a ValueError
                if call.repairs >= self.settings.max_repairs:
                    raise ItemFailed(ErrorClass.INVALID_OUTPUT, f"invalid after "
                                     f"{call.repairs} repair(s): {short(invalid)}") from invalid
                mistake = invalid
            # a repair turn shows the model its own mistake (the answer is cached under the
            # original request's key: the repair never changes what the cache knows it by)
            call.repairs += 1
            request["messages"] = [*request["messages"], *repair_turn(content, mistake)]
            content = await self._ask(item, batch, call, request)
        call.normalised.update(normalised)
        stored = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        await self._cache_put(key, {"value": stored, "normalised": dict(normalised)})
        return value

    async def _ask(self, item: ChatItem, batch: Batch, call: ItemAccount, request: dict
                   ) -> str | None:
        """The answer to `request` in the response_format mode that works for its model
        (resources/llm/formats.py); a rejected format costs an HTTP call, not a retry."""
        if item.schema is None:
            estimate = self._estimate(request["messages"], item.max_tokens)
            return answer_text(await self._call(batch, call, "chat", request, estimate))
        model = request["model"]
        while True:
            async with self.formats.probing(model):
                mode = self.formats.mode(model)
                sent = as_mode(request, item.schema, mode)
                estimate = self._estimate(sent["messages"], item.max_tokens)
                if reason := self.throttle.too_big(estimate):  # the schema makes it larger
                    raise ItemFailed(ErrorClass.CLIENT_ERROR, reason)
                try:
                    reply = await self._call(batch, call, "chat", sent, estimate)
                except FormatRejected as rejected:
                    call.format_rejected += 1
                    if not self.formats.rejected(model, mode):
                        raise ItemFailed(rejected.error_class, str(rejected)) from rejected
                    continue
                self.formats.worked(model, mode)
            call.response_format = mode
            return answer_text(reply)

    # -- the batch lane -----------------------------------------------------------------------
    def cache_key_of(self, item: ChatItem | EmbedItem) -> str:
        return (self.chat_request(item) if isinstance(item, ChatItem)
                else self.embed_request(item))[1]

    async def _answered(self, item: ChatItem | EmbedItem) -> bool:
        return await self._cache_get(self.cache_key_of(item)) is not None

    async def _batch_round(self, feed: Feed, wait: bool) -> None:
        """Send the held items as batches; requeue those no longer waiting for one. A
        provider without the Batch API (or down) costs the sync price, not the items."""
        held, lane = feed.held, self.batch_lane()
        waiting: set[str] = set()
        try:
            await lane.resume_submitting(lane.report)
            holding = await lane.submit(held, lane.partitions, lane.report)
            if await lane.settle(holding, wait, lane.report):  # some still open
                keys = [self.cache_key_of(item) for _, item in held]
                waiting = set(await asyncio.to_thread(lane.store.open_for, keys))
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            self.log.warning("batch lane unavailable (%s: %s): %s items go sync",
                             type(exc).__name__, short(exc), len(held))
            lane.report.lane_errors += 1
        if not waiting:
            feed.requeue([item for _, item in held], [])
            return
        ready, still_held = [], []
        for key, (stage, item) in zip(keys, held, strict=True):
            if key in waiting:
                still_held.append((stage, item))
            else:
                ready.append(item)
        feed.requeue(ready, still_held)

    # -- what the batch lane answered -------------------------------------------------------
    def _served(self, call: ItemAccount, hit: dict, model: str) -> None:
        """A cached answer: this run's if its batch was collected by this engine's lane
        (accounted at the batch price), else an earlier run's (free)."""
        answered = hit.get("batch")
        if answered and self.lane is not None and answered["id"] in self.lane.collected:
            call.route, call.batch_id = "batch", answered["id"]
            usage = {k: answered.get(k, 0)
                     for k in ("prompt_tokens", "completion_tokens", "cached_tokens")}
            self.account(call, model, usage, "batch")
        else:
            call.cached = True

    async def _batch_fallback(self, key: str, call: ItemAccount) -> str | None:
        """For an item this engine's lane sent and its batch did not answer: fail it
        (LLM_BATCH_FALLBACK=fail) or go on synchronously, from the batch's invalid answer
        if there is one (its repair turn is then the next call)."""
        if self.lane is None:
            return None
        try:
            outcome = await asyncio.to_thread(self.lane.store.outcome, key)
        except CACHE_ERRORS + (sqlalchemy.exc.SQLAlchemyError,) as exc:
            self.log.warning("batch records unavailable (%s): asking synchronously", exc)
            return None
        if outcome is None:
            return None
        state, detail, batch_id = outcome
        if self.settings.batch_fallback == "fail":
            error_class = {"expired": ErrorClass.BATCH_EXPIRED,
                           "invalid": ErrorClass.INVALID_OUTPUT}.get(state,
                                                                     ErrorClass.BATCH_FAILED)
            reason = json.loads(detail)["error"] if state == "invalid" else detail
            raise ItemFailed(error_class, f"batch {batch_id}: {state}: {reason or 'no answer'}")
        call.batch_fallback = True
        return json.loads(detail)["content"] if state == "invalid" else None

    def _estimate(self, messages: list[dict], max_tokens: int | None) -> int:
        prompt = sum(4 + self.tokenizer.count(str(m.get("content") or "")) for m in messages)
        return prompt + (max_tokens or self.settings.expected_completion_tokens)

    # -- embeddings ------------------------------------------------------------------------
    def embed_request(self, item: EmbedItem) -> tuple[dict, str]:
        request: dict = {"model": self.settings.embed_model, "input": list(item.inputs)}
        if item.dimensions:
            request["dimensions"] = item.dimensions
        return request, cache_key(kind="embeddings", **request)

    async def _embed(self, item: EmbedItem, batch: Batch, call: ItemAccount) -> object:
        request, key = self.embed_request(item)
        batch.models.add(request["model"])
        hit = await self._cache_get(key)
        if hit is not None and len(hit["value"]) == len(item.inputs):
            self._served(call, hit, request["model"])
            return hit["value"]
        estimate = sum(self.tokenizer.count(text) for text in item.inputs)
        if reason := self.throttle.too_big(estimate):
            raise ItemFailed(ErrorClass.CLIENT_ERROR, reason)
        await self._batch_fallback(key, call)
        reply = await self._call(batch, call, "embeddings", request, estimate)
        vectors = [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
        dims = {len(v) for v in vectors}
        if len(vectors) != len(item.inputs) or len(dims) != 1:
            raise ItemFailed(ErrorClass.INVALID_OUTPUT, f"{len(vectors)} vectors of sizes "
                             f"{sorted(dims)} for {len(item.inputs)} inputs")
        await self._cache_put(key, {"value": vectors})
        return vectors

    # -- the cache, off the event loop: a writer in another process may hold its lock ---------
    async def _cache_get(self, key: str) -> dict | None:
        if self.cache is None:
            return None
        try:
            return await asyncio.to_thread(self.cache.get, key)
        except CACHE_ERRORS as exc:
            self.log.warning("response cache unavailable (%s): asking the provider", exc)
            return None

    async def _cache_put(self, key: str, value: dict) -> None:
        if self.cache is None:
            return
        try:
            await asyncio.to_thread(self.cache.put, key, value)
        except CACHE_ERRORS as exc:
            self.log.warning("response cache unavailable (%s): answer not stored", exc)
