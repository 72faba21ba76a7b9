"""OpenAI's Batch API, served by the offline provider and the simulator.

`POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}`, `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`,
with OpenAI's request and response shapes (as the openai SDK sends and reads them). A batch's
lines are answered by the same function as synchronous requests; line i of n is done
`completion_delay_seconds * (i + 1) / n` after the batch was created, so the request counts
grow while it runs and a cancelled or expired batch holds the lines done by then.
Knobs (`BatchKnobs`): the delay, a share of lines that fail (HTTP 500 in the error file), the
next N batches expiring (their unfinished lines in the error file as `batch_expired`).
State is in memory: the offline provider's lasts as long as its process, the simulator's
as long as the server.
"""

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resources.errors import ErrorClass

# (endpoint, request body) -> (HTTP status, response body)
Answer = Callable[[str, dict], tuple[int, dict]]
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
TERMINAL = ("completed", "failed", "expired", "cancelled")


class BatchKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion_delay_seconds: float = Field(0.0, ge=0)
    failed_line_rate: float = Field(0.0, ge=0, le=1)
    expire_next: int = Field(0, ge=0)  # the next N batches created expire
    expired_done_share: float = Field(0.5, ge=0, le=1)  # of an expired batch's lines
    seed: int = 0


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": code}}, status_code=status)


class BatchService:
    """Files and batches in memory, and the routes that serve them."""

    def __init__(self, answer: Answer, knobs: BatchKnobs | None = None):
        self.answer = answer
        self.knobs = knobs or BatchKnobs()
        self.rng = random.Random(self.knobs.seed)
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self._work: dict[str, dict] = {}  # batch id -> its lines, answers, due times
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.counts: Counter[str] = Counter()  # files_uploaded, batches_created, lines...

    def configure(self, knobs: BatchKnobs) -> None:
        self.knobs = knobs
        self.rng = random.Random(knobs.seed)

    def stats(self) -> dict:
        return dict(self.counts)

    # -- files --------------------------------------------------------------------------
    def _add_file(self, content: bytes, filename: str, purpose: str) -> dict:
        file_id = f"file-{next(self._ids):06d}{self.rng.getrandbits(32):08x}"
        meta = {"id": file_id, "object": "file", "bytes": len(content),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                "status": "processed", "expires_at": None, "status_details": None}
        self.files[file_id] = (meta, content)
        return meta

    async def upload(self, request: Request) -> Response:
        try:
            form = await request.form()
        except Exception as exc:  # noqa: BLE001 - a malformed body is the client's error
            return _error(400, f"the upload is not a multipart form: {exc}")
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "batch":
            return _error(400, f"purpose must be 'batch' here, not {purpose!r}")
        if upload is None or isinstance(upload, str):
            return _error(400, "a file is required")
        content = await upload.read()
        self.counts["files_uploaded"] += 1
        return JSONResponse(self._add_file(content, upload.filename or "upload.jsonl", purpose))

    async def file(self, request: Request) -> Response:
        found = self.files.get(request.path_params["file_id"])
        return JSONResponse(found[0]) if found else _error(404, "no such file")

    async def file_content(self, request: Request) -> Response:
        found = self.files.get(request.path_params["file_id"])
        if not found:
            return _error(404, "no such file")
        return Response(found[1], media_type="application/octet-stream")

    # -- batches ------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        endpoint, file_id = body.get("endpoint"), body.get("input_file_id")
        if endpoint not in ENDPOINTS:
            return _error(400, f"endpoint must be one of {ENDPOINTS}, not {endpoint!r}")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'")
        if file_id not in self.files:
            return _error(400, f"no such file {file_id!r}")
        now = int(time.time())
        self.counts["batches_created"] += 1
        batch_id = f"batch_{next(self._ids):06d}{self.rng.getrandbits(32):08x}"
        lines, errors = self._parse(self.files[file_id][1], endpoint)
        batch = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": file_id, "completion_window": "24h", "status": "in_progress",
            "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": now, "expires_at": now + 86_400, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata") or None, "model": None, "usage": None,
        }
        if errors:
            batch.update(status="failed", failed_at=now, in_progress_at=None,
                         errors={"object": "list", "data": errors})
        else:
            self.counts["batch_lines"] += len(lines)
            expire = self.knobs.expire_next > 0
            if expire:
                self.knobs = self.knobs.model_copy(update={"expire_next":
                                                           self.knobs.expire_next - 1})
            started = time.monotonic()
            delay = self.knobs.completion_delay_seconds
            self._work[batch_id] = {
                "lines": lines, "expire": expire, "results": [None] * len(lines),
                "due": [started + delay * (i + 1) / max(1, len(lines))
                        for i in range(len(lines))],
                "fail": [self.rng.random() < self.knobs.failed_line_rate for _ in lines],
            }
        self.batches[batch_id] = batch
        return JSONResponse(batch)

    def _parse(self, content: bytes, endpoint: str) -> tuple[list[dict], list[dict]]:
        """The input file's lines, or OpenAI-style validation errors (the batch fails)."""
        lines, errors, seen = [], [], set()
        for number, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append({"code": "invalid_json_line", "line": number,
                               "message": "This line is not parseable as valid JSON."})
                continue
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or not isinstance(line.get("body"), dict):
                errors.append({"code": "invalid_request", "line": number,
                               "message": "A line needs a custom_id and a body."})
            elif line.get("url") != endpoint or line.get("method") != "POST":
                errors.append({"code": "mismatched_endpoint", "line": number,
                               "message": f"The line's url is not {endpoint}."})
            elif custom_id in seen:
                errors.append({"code": "duplicate_custom_id", "line": number,
                               "message": "The custom_id for this request is a duplicate."})
            else:
                seen.add(custom_id)
                lines.append(line)
        if not lines and not errors:
            errors.append({"code": "empty_file", "line": None, "message": "No requests."})
        return lines, errors

    def _advance(self, batch_id: str) -> dict:
        """The batch as of now: lines answered as their time comes, finalised once all are
        (or when it expires or was cancelled)."""
        with self._lock:
            batch, work = self.batches[batch_id], self._work.get(batch_id)
            if batch["status"] in TERMINAL or work is None:
                return batch
            now = time.monotonic()
            n = len(work["lines"])
            stop = {"cancelling": "cancelled"}.get(batch["status"])
            if work["expire"] and stop is None:
                limit = int(n * self.knobs.expired_done_share)
                stop = "expired" if all(d <= now for d in work["due"][:limit]) else None
                done = limit if stop else sum(d <= now for d in work["due"][:limit])
            else:
                done = sum(d <= now for d in work["due"])
            for i in range(done):
                if work["results"][i] is None:
                    work["results"][i] = self._answer_line(work, i)
            failed = sum(1 for r in work["results"][:done] if r["response"] and
                         r["response"]["status_code"] != 200)
            batch["request_counts"] = {"total": n, "completed": done - failed, "failed": failed}
            if stop is None and done < n:
                return batch
            self._finish(batch, work, done, stop or "completed")
            return batch

    def _answer_line(self, work: dict, i: int) -> dict:
        line = work["lines"][i]
        request_id = f"req_{self.rng.getrandbits(64):016x}"
        if work["fail"][i]:
            # OpenAI's error type, the word of docgraph's error class too
            status, body = 500, {"error": {"message": "The server had an error processing "
                                           "this request.",
                                           "type": str(ErrorClass.SERVER_ERROR)}}
        else:
            status, body = self.answer(line["url"], line["body"])
        return {"id": f"batch_req_{self.rng.getrandbits(64):016x}",
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": request_id, "body": body},
                "error": None}

    def _finish(self, batch: dict, work: dict, done: int, status: str) -> None:
        now = int(time.time())
        answered = work["results"][:done]
        ok = [r for r in answered if r["response"]["status_code"] == 200]
        bad = [r for r in answered if r["response"]["status_code"] != 200]
        if status == "expired":
            bad += [{"id": f"batch_req_{self.rng.getrandbits(64):016x}",
                     "custom_id": line["custom_id"], "response": None,
                     # OpenAI's code, the word of docgraph's error class too
                     "error": {"code": str(ErrorClass.BATCH_EXPIRED),
                               "message": "This request could not "
                               "be executed before the completion window expired."}}
                    for line in work["lines"][done:]]
        usage = Counter()
        for r in ok:
            got = r["response"]["body"].get("usage") or {}
            usage["input"] += got.get("prompt_tokens", 0)
            usage["output"] += got.get("completion_tokens", 0)
        dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        if ok:
            batch["output_file_id"] = self._add_file(dump(ok), f"{batch['id']}_output.jsonl",
                                                     "batch_output")["id"]
        if bad:
            batch["error_file_id"] = self._add_file(dump(bad), f"{batch['id']}_error.jsonl",
                                                    "batch_output")["id"]
        batch["request_counts"] = {"total": len(work["lines"]), "completed": len(ok),
                                   "failed": len(bad)}
        batch["usage"] = {"input_tokens": usage["input"], "output_tokens": usage["output"],
                          "total_tokens": usage["input"] + usage["output"],
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}
        batch["status"] = status
        batch["finalizing_at"] = now
        batch[f"{status}_at"] = now
        self.counts[f"batches_{status}"] += 1
        del self._work[batch["id"]]

    async def retrieve(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.batches:
            return _error(404, "no such batch")
        return JSONResponse(self._advance(batch_id))

    async def list_batches(self, request: Request) -> Response:
        limit = int(request.query_params.get("limit", 20))
        after = request.query_params.get("after")
        ids = sorted(self.batches, reverse=True)  # newest first, like OpenAI
        if after in self.batches:
            ids = ids[ids.index(after) + 1:]
        page = [self._advance(i) for i in ids[:limit]]
        return JSONResponse({"object": "list", "data": page,
                             "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None,
                             "has_more": len(ids) > limit})

    async def cancel(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.batches:
            return _error(404, "no such batch")
        batch = self._advance(batch_id)
        if batch["status"] in TERMINAL:
            return _error(409, f"the batch is {batch['status']}, it cannot be cancelled")
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        return JSONResponse(self._advance(batch_id))

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files/{file_id}", self.file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
        ]
