"""One HTTP request of an item, with throttling, retries and the circuit breaker.

`CallLoop._call` is the only place a request is sent; it counts every HTTP call on the
item's account, retries what is worth retrying, and raises `ItemFailed` (the item ends
with that error class) or `FormatRejected` (the server does not take the request's
response_format: the engine falls back, see resources/llm/formats.py).
"""

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import httpx2
import openai

from resources.errors import DocgraphError, ErrorClass
from resources.llm.formats import is_format_rejection
from resources.llm.items import ItemAccount
from resources.llm.limits import ConcurrencyGate
from resources.llm.metrics import MetricsRecorder
from resources.llm.retry import OUTAGE, RETRYABLE, backoff_seconds, classify, retry_after_seconds
from resources.llm.structured import short
from resources.llm.throttle import has_ratelimit_headers

# An item stops after this many HTTP calls per allowed attempt, whatever the breaker says.
MAX_CALLS_PER_ATTEMPT = 3

# Requests go through the SDK's raw request (`client.post(path, cast_to=httpx2.Response)`,
# its documented way to any endpoint): the same base URL, auth, timeouts and APIStatusError
# subclasses as `chat.completions.create`, without its per-call walk of the request
# through the SDK's TypedDicts and its pydantic model of every answer - together ~2.5 ms of
# CPU a call (bench/pipeline.py), a quarter of the client's CPU at 32 calls in flight. The
# engine builds plain JSON requests and reads four fields of an answer (reply_of).
PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}


def reply_of(response: httpx2.Response) -> SimpleNamespace:
    """The JSON body with attribute access (reply.choices[0].message.content), requiring
    no field, like the SDK's models; ValueError if the body is not a JSON object."""
    reply = json.loads(response.content, object_hook=lambda d: SimpleNamespace(**d))
    if not isinstance(reply, SimpleNamespace):
        raise ValueError(f"the response body is a JSON {type(reply).__name__}, not an object")
    return reply


def usage_of(reply) -> dict[str, int]:
    """An answer's prompt, completion and cached prompt tokens (0 for what it lacks)."""
    usage = getattr(reply, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    return {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
            "cached_tokens": getattr(details, "cached_tokens", 0) or 0}


def is_flex_unavailable(error: BaseException) -> bool:
    """OpenAI's 429 "Resource Unavailable": the flex tier has no capacity just now."""
    if getattr(error, "status_code", None) != 429:
        return False
    body = getattr(error, "body", None)
    code = str(body.get("code") or "") if isinstance(body, dict) else ""
    text = f"{code} {getattr(error, 'message', '')}".lower().replace("_", " ")
    return "resource unavailable" in text


class ItemFailed(DocgraphError):
    """The item is over: it ends as failed, with this error class."""


@dataclass
class Batch:
    gate: ConcurrencyGate
    stats: MetricsRecorder = field(default_factory=MetricsRecorder)
    models: set[str] = field(default_factory=set)
    latency: float | None = None  # moving average of successful calls, seconds

    def observe(self, seconds: float) -> None:
        self.latency = seconds if self.latency is None else 0.9 * self.latency + 0.1 * seconds


class FormatRejected(DocgraphError):
    """HTTP 400 to the request's response_format: not the item's fault, no retry spent
    (a client_error only if no response_format is left to fall back to)."""

    def __init__(self, message: str):
        super().__init__(ErrorClass.CLIENT_ERROR, message)


class CallLoop:
    """The per-request loop of LLMEngine (a mixin: it uses the engine's settings, client,
    throttle, breaker, tokenizer and log)."""

    async def _call(self, batch: Batch, call: ItemAccount, kind: str, request: dict,
                    estimate: int):
        client = self._client_here()
        attempts = 0
        limited_since: float | None = None  # first 429 that said when to come back
        flex_since: float | None = None  # first "resource unavailable" on the flex route
        held_since: float | None = None  # first time the breaker held this item
        while True:
            probe, held_since = await self._wait_for_breaker(held_since)
            settled = False
            try:
                async with batch.gate.slot():
                    wait = await self.throttle.reserve(estimate, time.monotonic())
                    try:
                        if wait > 0:
                            await asyncio.sleep(wait)
                    except asyncio.CancelledError:  # never sent: the budget gets it back
                        self.throttle.release(estimate, time.monotonic())
                        raise
                    self.throttle.sent(estimate)
                    call.http_calls += 1
                    sent = time.monotonic()
                    try:
                        # The SDK's timeout is per socket read; this one bounds the request.
                        body, timeout = (({**request, "service_tier": "flex"},
                                          self.settings.flex_timeout_seconds) if call.flex
                                         else (request, self.settings.timeout_seconds))
                        async with asyncio.timeout(timeout):
                            raw = await client.post(PATHS[kind], body=body,
                                                    cast_to=httpx2.Response,
                                                    options=dict(timeout=timeout))
                            reply = reply_of(raw)
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
            if error_class != ErrorClass.TIMEOUT:
                self.throttle.settle(estimate, 0, now)  # rejected requests spend no tokens
            retry_after = retry_after_seconds(headers)
            if call.flex and is_flex_unavailable(error):
                # No capacity on the flex tier (not our rate: no AIMD, no attempt spent):
                # wait, and after LLM_FLEX_FALLBACK_SECONDS ask at the standard tier.
                call.rate_limited += 1
                flex_since = flex_since or now
                if now - flex_since >= self.settings.flex_fallback_seconds:
                    call.flex, call.flex_fallback = False, True
                    continue
                call.retries += 1
                await asyncio.sleep(retry_after or backoff_seconds(
                    call.rate_limited, self.settings.backoff_base_seconds,
                    self.settings.backoff_cap_seconds, self.rng))
                continue
            if error_class == ErrorClass.RATE_LIMITED:
                call.rate_limited += 1
                # With x-ratelimit-* headers the buckets already follow the server (above);
                # without them, the Retry-After is all we know and holds for every caller.
                if retry_after and not has_ratelimit_headers(headers):
                    self.throttle.hold(retry_after, now)
            overload = (ErrorClass.RATE_LIMITED, ErrorClass.TIMEOUT)
            if error_class in overload and batch.gate.aimd.on_overload(now):
                await batch.gate.limit_changed()
            message = f"{error_class}: {short(error)}"
            if error_class == ErrorClass.CLIENT_ERROR and is_format_rejection(error, request):
                raise FormatRejected(message)
            if error_class not in RETRYABLE:
                raise ItemFailed(error_class, message)
            # A failure during an outage does not spend the item's retries (the breaker
            # holds it until the provider is back), nor does a 429 that said when to come
            # back: that is pacing, not failure. The call cap still bounds an item that an
            # on-and-off provider would otherwise keep alive forever.
            paced = error_class == ErrorClass.RATE_LIMITED and retry_after is not None
            if self.breaker.is_closed and not paced:
                attempts += 1
            limited_since = limited_since or (now if paced else None)
            if (attempts >= self.settings.max_attempts
                    or call.http_calls - call.rate_limited - call.format_rejected
                    >= MAX_CALLS_PER_ATTEMPT * self.settings.max_attempts
                    or limited_since and now - limited_since > self.settings.max_outage_seconds):
                raise ItemFailed(error_class, f"{message} (after {call.http_calls} calls)")
            call.retries += 1
            if retry_after is not None:  # the server's word, plus a little jitter so that
                delay = retry_after * (1 + 0.1 * self.rng.random())  # waiters don't stampede
            else:
                delay = backoff_seconds(attempts, self.settings.backoff_base_seconds,
                                        self.settings.backoff_cap_seconds, self.rng)
            await asyncio.sleep(delay)

    def _succeeded(self, batch: Batch, call: ItemAccount, request: dict, reply, estimate: int,
                   sent: float, now: float) -> None:
        call.latencies.append(now - sent)
        batch.observe(now - sent)
        usage = usage_of(reply)
        # priced at flex only if the server says it served the request on that tier
        call.route = "flex" if call.flex and getattr(reply, "service_tier", None) == "flex" \
            else "sync"
        self.account(call, request["model"], usage, call.route)
        if getattr(reply, "usage", None) is not None:
            self.throttle.settle(estimate, usage["prompt_tokens"] + usage["completion_tokens"],
                                 now)
        batch.gate.aimd.on_success()

    def account(self, call: ItemAccount, model: str, usage: dict, route: str) -> None:
        """Tokens and price of one answer on `route`; what it saved against the sync price
        without the provider's prompt cache."""
        call.prompt_tokens += usage["prompt_tokens"]
        call.completion_tokens += usage["completion_tokens"]
        call.cached_tokens += usage["cached_tokens"]
        cost = self.settings.cost_usd(model, **usage, route=route)
        full = self.settings.cost_usd(model, usage["prompt_tokens"], usage["completion_tokens"])
        call.add_cost(cost, None if cost is None or full is None else full - cost)

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
                raise ItemFailed(
                    ErrorClass.CIRCUIT_OPEN,
                    f"provider unavailable; held for {self.settings.max_outage_seconds:.0f}s",
                )
            await asyncio.sleep(min(decision.wait, left))
