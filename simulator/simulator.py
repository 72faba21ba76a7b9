"""The offline provider served over loopback, behaving like a real API under load.

Knobs (`SimConfig`): latency, a server-side concurrency cap (extra requests queue), RPM
and TPM limits answering 429 with Retry-After and x-ratelimit-* headers, injected
500/503/429, hangs, connection resets, malformed JSON answers, garbled bodies, scripted
statuses, a full outage window, and a loose model (simulator/loose.py: enum
near-misses, language names, over-long strings and lists, unpatterned signatures,
reformatted citations, prose-wrapped JSON) on a server that may reject
response_format json_schema / json_object with HTTP 400. `GET /sim/stats` reports what
it saw, including the most requests in flight at once and the loose liberties taken;
`POST /sim/config` changes knobs, `POST /sim/reset` clears the stats. The Batch API
(/v1/files, /v1/batches: resources/llm/offline/batch_api.py) answers its lines like
synchronous requests (same heuristics, loose model and format rejections, no rate limits:
a provider runs batches on a budget of their own), with the `batch` knobs (completion
delay, failed lines, expiring batches); its counts are in the stats' `batch`.

Serve it with simulator/server.py (a thread for tests, a process for
benchmarks and manual use).
"""

import asyncio
import contextlib
import hashlib
import json
import math
import random
import time
from collections import Counter

from pydantic import ConfigDict, Field
from starlette.applications import Starlette

from resources.llm.limits import TokenBucket
from resources.llm.offline.app import (
    HEURISTICS,
    MODELS,
    answer_request,
    chat_completion,
    embeddings,
)
from resources.llm.offline.batch_api import BatchKnobs, BatchService
from simulator.asgi import (
    Disconnected,
    read_body,
    send_json,
    send_raw,
    sleep_or_disconnect,
)
from simulator.loose import LooseConfig, loosen_answer
from simulator.memo import CHEAP


class SimConfig(LooseConfig):  # the loose_* and reject_* knobs: loose.LooseConfig
    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0)
    latency_jitter_ms: float = Field(0.0, ge=0)  # uniform +/- around latency_ms
    concurrency_cap: int | None = Field(None, ge=1)
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    burst_seconds: float = Field(1.0, gt=0)
    ratelimit_headers: bool = True
    rate_429: float = Field(0.0, ge=0, le=1)
    rate_500: float = Field(0.0, ge=0, le=1)
    rate_503: float = Field(0.0, ge=0, le=1)
    rate_hang: float = Field(0.0, ge=0, le=1)
    rate_reset: float = Field(0.0, ge=0, le=1)
    rate_malformed: float = Field(0.0, ge=0, le=1)  # answer content is broken JSON
    rate_garbled: float = Field(0.0, ge=0, le=1)  # HTTP body is not JSON at all
    retry_after_seconds: float = Field(1.0, ge=0)
    hang_seconds: float = Field(30.0, ge=0)
    outage_after_seconds: float | None = Field(None, ge=0)  # from when the config is set
    outage_seconds: float = Field(0.0, ge=0)
    outage_status: int = 503
    script: list[int] = Field(default_factory=list)  # statuses for the next requests; 200 = normal
    # Faults for some content only: requests whose body contains `target` fail with
    # `target_status` at `target_rate` (e.g. one document's chunks).
    target: str | None = None
    target_status: int = 400
    target_rate: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    # Cheap answers (simulator/memo.py): the same answers from memoised analytics, token
    # counts estimated; for benchmarks where the full heuristics would be the floor.
    cheap_answers: bool = False
    # Prompt caching as OpenAI's: a request whose messages before the last were seen before
    # has those tokens reported as usage.prompt_tokens_details.cached_tokens, in blocks of
    # prompt_cache_block, if its prompt has at least prompt_cache_min_tokens (None: off).
    prompt_cache_min_tokens: int | None = Field(None, ge=0)
    prompt_cache_block: int = Field(128, ge=1)
    # Flex processing: the share of service_tier=flex requests answered 429 "Resource
    # Unavailable" (OpenAI's answer when the flex tier has no capacity)
    flex_unavailable_rate: float = Field(0.0, ge=0, le=1)
    batch: BatchKnobs = Field(default_factory=BatchKnobs)


FAULTS = ("429", "500", "503", "hang", "reset", "malformed", "garbled")


class Simulator:
    """An ASGI app: the offline provider plus latency, limits and faults."""

    def __init__(self, config: SimConfig | None = None):
        self.batches = BatchService(self._batch_answer)
        self.batch_app = Starlette(routes=self.batches.routes())
        self.configure(config or SimConfig())
        self.reset()

    def configure(self, config: SimConfig) -> None:
        now = time.monotonic()
        self.config = config
        self.batches.configure(config.batch)
        self.rng = random.Random(config.seed)
        self.target_rng = random.Random(config.seed + 1)  # drawn only for targeted requests
        self.cap = asyncio.Semaphore(config.concurrency_cap) if config.concurrency_cap else None
        self.rpm = self._bucket(config.rpm, now)
        self.tpm = self._bucket(config.tpm, now)
        self.script = list(config.script)
        start = config.outage_after_seconds
        self.outage = (now + start, now + start + config.outage_seconds) if start is not None \
            else None

    def _bucket(self, per_minute: float | None, now: float) -> TokenBucket | None:
        if not per_minute:
            return None
        rate = per_minute / 60
        return TokenBucket(rate, max(1.0, rate * self.config.burst_seconds), now)

    def reset(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int | str] = Counter()
        self.faults: Counter[str] = Counter()
        self.loose: Counter[str] = Counter()  # liberties a loose model took, by kind
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        self.batches.counts.clear()
        self.prefixes: set[str] = set()  # prompt prefixes seen (prompt_cache_min_tokens)
        self.cached_tokens = 0

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "chat_requests": self.by_path["/v1/chat/completions"],
            "embedding_requests": self.by_path["/v1/embeddings"],
            "by_status": {str(k): v for k, v in sorted(self.by_status.items(), key=str)},
            "faults": dict(self.faults),
            "loose": dict(self.loose),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "arrivals": self.arrivals[-10_000:],
            "batch": self.batches.stats(),
            "cached_tokens": self.cached_tokens,
        }

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith(("/v1/files", "/v1/batches")):
            self.requests += 1
            self.by_path[path] += 1
            await self.batch_app(scope, receive, send)
            return
        try:
            body = await read_body(receive)
        except Disconnected:
            return
        if path.startswith("/sim/"):
            await self._control(path, body, send)
            return
        if path == "/v1/models":
            await send_json(send, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "docgraph"}
                for m in MODELS]})
            return
        self.requests += 1
        self.by_path[path] += 1
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status = await self._serve(path, body, receive, send)
        except Disconnected:
            status = 499  # the client gave up (its timeout), as nginx would log it
        except ConnectionResetError:
            self.by_status["reset"] += 1
            raise  # uvicorn drops the connection: the client sees a reset
        finally:
            self.in_flight -= 1
        self.by_status[status] += 1

    async def _serve(self, path: str, body: bytes, receive, send) -> int:
        cfg = self.config
        now = time.monotonic()
        scripted = self.script.pop(0) if self.script else None
        if scripted == 429:
            return await self._rate_limited(send, cfg.retry_after_seconds)
        if scripted not in (None, 200):
            return await self._error(send, scripted, "scripted failure")
        if self.outage and self.outage[0] <= now < self.outage[1]:
            return await self._error(send, cfg.outage_status, "the service is unavailable")
        wait = self._over_limit(body, now)
        if wait < 0:
            return await self._error(send, 413, "request larger than the token limit",
                                     "invalid_request_error")
        if wait:
            return await self._rate_limited(send, wait)
        if cfg.flex_unavailable_rate and b'"service_tier":"flex"' in body.replace(b" ", b"") \
                and self.rng.random() < cfg.flex_unavailable_rate:
            self.faults["flex_unavailable"] += 1
            await send_json(send, 429, {"error": {
                "message": "Resource Unavailable: flex processing has no capacity right "
                "now; retry later or use the default service tier.",
                "type": "service_unavailable", "code": "resource_unavailable"}},
                {"retry-after-ms": str(int(cfg.retry_after_seconds * 1000))})
            return 429
        targeted = bool(cfg.target) and cfg.target.encode() in body
        if targeted and self.target_rng.random() < cfg.target_rate:
            self.faults["targeted"] += 1
            return await self._error(send, cfg.target_status, "targeted failure",
                                     "invalid_request_error" if cfg.target_status < 500
                                     else "server_error")
        fault = None if scripted == 200 else self._draw_fault()
        if fault in ("429", "500", "503"):
            self.faults[fault] += 1
            if fault == "429":
                return await self._rate_limited(send, cfg.retry_after_seconds)
            return await self._error(send, int(fault), "injected server error")
        if fault:
            self.faults[fault] += 1
        if fault == "hang":
            await sleep_or_disconnect(receive, cfg.hang_seconds)
        async with self.cap or contextlib.nullcontext():  # beyond the cap, requests queue
            latency = cfg.latency_ms + self.rng.uniform(-1, 1) * cfg.latency_jitter_ms
            await sleep_or_disconnect(receive, max(0.0, latency) / 1000)
        if fault == "reset":
            # Start the response, then drop the connection: the client sees a reset.
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ConnectionResetError("injected connection reset")
        try:
            payload = json.loads(body)
            if rejected := self._rejected_format(payload):
                self.faults[f"reject_{rejected}"] += 1
                return await self._error(send, 400, f"response_format {rejected} is not "
                                         "supported", "invalid_request_error")
            heuristics = CHEAP if cfg.cheap_answers else HEURISTICS
            answer = chat_completion(payload, heuristics) if path.endswith("chat/completions") \
                else embeddings(payload, heuristics) if path.endswith("/embeddings") else None
        except (ValueError, TypeError, KeyError) as exc:
            return await self._error(send, 400, str(exc), "invalid_request_error")
        if answer is not None and "choices" in answer:
            loosen_answer(cfg, payload, body, answer, self.loose)
            self._prompt_cache(payload, answer)
        if answer is None:
            return await self._error(send, 404, f"no route {path}", "invalid_request_error")
        if fault == "garbled":
            await send_raw(send, 200, b'{"id": "chatcmpl-garbled", "choices": [', self._headers())
            return 200
        if fault == "malformed" and "choices" in answer:
            content = answer["choices"][0]["message"]["content"]
            answer["choices"][0]["message"]["content"] = content[: len(content) // 2]
        await send_json(send, 200, answer, self._headers())
        return 200

    def _batch_answer(self, endpoint: str, payload: dict) -> tuple[int, dict]:
        if rejected := self._rejected_format(payload):
            self.faults[f"reject_{rejected}"] += 1
            return 400, {"error": {"message": f"response_format {rejected} is not supported",
                                   "type": "invalid_request_error"}}
        heuristics = CHEAP if self.config.cheap_answers else HEURISTICS
        status, answer = answer_request(endpoint, payload, heuristics)
        if status == 200 and "choices" in answer:
            body = json.dumps(payload, sort_keys=True).encode()
            loosen_answer(self.config, payload, body, answer, self.loose)
            self._prompt_cache(payload, answer)
        return status, answer

    def _prompt_cache(self, payload: dict, answer: dict) -> None:
        least = self.config.prompt_cache_min_tokens
        messages = payload.get("messages") or []
        if least is None or len(messages) < 2:
            return
        prefix = json.dumps([payload.get("response_format"), messages[:-1]], sort_keys=True)
        digest = hashlib.sha256(prefix.encode()).hexdigest()
        usage = answer["usage"]
        if digest in self.prefixes and usage["prompt_tokens"] >= least:
            count = (CHEAP if self.config.cheap_answers else HEURISTICS).count
            tokens = sum(4 + count(str(m.get("content") or "")) for m in messages[:-1])
            block = self.config.prompt_cache_block
            cached = min(tokens, usage["prompt_tokens"]) // block * block
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
            self.cached_tokens += cached
        self.prefixes.add(digest)

    def _rejected_format(self, payload: dict) -> str | None:
        kind = (payload.get("response_format") or {}).get("type")
        if kind == "json_schema" and self.config.reject_json_schema or \
                kind == "json_object" and self.config.reject_json_object:
            return kind
        return None

    def _draw_fault(self) -> str | None:
        cfg = self.config
        roll = self.rng.random()
        for name, rate in zip(FAULTS, (cfg.rate_429, cfg.rate_500, cfg.rate_503, cfg.rate_hang,
                                       cfg.rate_reset, cfg.rate_malformed, cfg.rate_garbled),
                              strict=True):
            if roll < rate:
                return name
            roll -= rate
        return None

    def _over_limit(self, body: bytes, now: float) -> float:
        """Seconds until this request would fit the RPM and TPM limits; 0.0 if it fits."""
        if self.rpm is not None:
            wait = self.rpm.try_take(1, now)
            if wait:
                return wait
        if self.tpm is not None:
            estimate = max(1, len(body) // 4)
            if estimate > self.tpm.capacity:
                if self.rpm is not None:
                    self.rpm.settle(1, 0, now)
                return -1.0  # can never fit: a real API answers 4xx, not "wait"
            wait = self.tpm.try_take(estimate, now)
            if wait:
                if self.rpm is not None:
                    self.rpm.settle(1, 0, now)  # refused: the request slot is given back
                return wait
        return 0.0

    def _headers(self) -> dict[str, str]:
        if not self.config.ratelimit_headers:
            return {}
        headers = {}
        for unit, bucket, per_minute in (("requests", self.rpm, self.config.rpm),
                                         ("tokens", self.tpm, self.config.tpm)):
            if bucket is None:
                continue
            level = max(0.0, bucket.level)
            headers[f"x-ratelimit-limit-{unit}"] = str(int(per_minute))
            headers[f"x-ratelimit-remaining-{unit}"] = str(int(level))
            headers[f"x-ratelimit-reset-{unit}"] = f"{(bucket.capacity - level) / bucket.rate:.3f}s"
        return headers

    async def _rate_limited(self, send, wait: float) -> int:
        wait = max(wait, 0.001)
        headers = {**self._headers(), "retry-after-ms": str(math.ceil(wait * 1000)),
                   "retry-after": str(math.ceil(wait))}
        await send_json(send, 429, {"error": {
            "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
            headers)
        return 429

    async def _error(self, send, status: int, message: str, kind: str = "server_error") -> int:
        await send_json(send, status, {"error": {"message": message, "type": kind}})
        return status

    async def _control(self, path: str, body: bytes, send) -> None:
        if path == "/sim/stats":
            await send_json(send, 200, self.stats())
        elif path == "/sim/config":
            self.configure(SimConfig.model_validate_json(body or b"{}"))
            await send_json(send, 200, self.config.model_dump())
        elif path == "/sim/reset":
            self.reset()
            await send_json(send, 200, {"ok": True})
        else:
            await send_json(send, 404, {"error": {"message": f"no route {path}"}})
