"""OpenAI-compatible ASGI app: /v1/chat/completions, /v1/embeddings, /v1/models, and the
Batch API (/v1/files, /v1/batches: batch_api.py, one service per process).

Used in-process (httpx ASGITransport, no port) as the embedded default provider, and
served over loopback by the simulator (simulator/, dev tooling). Chat answers fill the
requested JSON schema from the prompt's document text (answers.py), whether it comes as
response_format json_schema or described in a message between
structured.SCHEMA_BEGIN/SCHEMA_END (json_object and prompt-only requests); without a schema
they are an extractive summary.
"""

import hashlib
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.llm.offline import analytics as ta
from resources.llm.offline.answers import answer, request_parts
from resources.llm.offline.batch_api import BatchService
from resources.llm.structured import schema_in_messages
from resources.tokenizer import get_tokenizer

DEFAULT_DIMENSIONS = 256
MODELS = ("offline-heuristics", "offline-embeddings")


class Heuristics:
    """What the answers are made with: the text analytics, the token counter for `usage`,
    and a schema's answer as JSON. The simulator's cheap mode (simulator/memo.py) swaps
    in memoised ones; the provider always uses these."""

    analytics = ta

    def count(self, text: str) -> int:
        return get_tokenizer().count(text)

    def schema_answer(self, schema: dict, messages: list[dict]) -> str:
        return json.dumps(answer(schema, messages, self.analytics), ensure_ascii=False)


HEURISTICS = Heuristics()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}},
        status_code=status,
    )


def chat_completion(body: dict, heuristics: Heuristics = HEURISTICS) -> dict:
    """The response body for a chat request (raises ValueError on a bad request)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format.json_schema.schema must be an object")
    else:  # json mode or no format: the schema, if any, is described in a message
        schema = schema_in_messages(messages)
    summary = heuristics.analytics.summary
    if schema is not None:
        content = heuristics.schema_answer(schema, messages)
    elif response_format.get("type") == "json_object":
        content = json.dumps({"summary": summary(request_parts(messages)[0])})
    else:
        content = summary(request_parts(messages)[0], max_sentences=3)
    count = heuristics.count
    prompt_tokens = sum(4 + count(str(m.get("content") or "")) for m in messages)
    completion_tokens = count(content)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-offline-{digest}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model") or MODELS[0],
        "service_tier": body.get("service_tier") or "default",  # the tier that served it
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embeddings(body: dict, heuristics: Heuristics = HEURISTICS) -> dict:
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ValueError("'input' must be a string or a non-empty list of strings")
    dims = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
    if not 8 <= dims <= 4096:
        raise ValueError("'dimensions' must be between 8 and 4096")
    tokens = sum(heuristics.count(text) for text in inputs)
    embed = heuristics.analytics.embed
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embed(text, dims)}
                 for i, text in enumerate(inputs)],
        "model": body.get("model") or MODELS[1],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def answer_request(endpoint: str, body: dict, heuristics: Heuristics = HEURISTICS
                   ) -> tuple[int, dict]:
    """A batch line's (status, body): what the synchronous endpoint would answer."""
    build = chat_completion if endpoint.endswith("/chat/completions") else embeddings
    try:
        return 200, build(body, heuristics)
    except (ValueError, TypeError, KeyError) as exc:
        return 400, {"error": {"message": str(exc), "type": "invalid_request_error"}}


# The offline provider's batches live as long as its process (every client of the
# process sees them).
BATCHES = BatchService(answer_request)


def _endpoint(build):
    async def handler(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        try:
            return JSONResponse(build(body))
        except (ValueError, TypeError, KeyError) as exc:
            return _error(400, str(exc))

    return handler


async def models(_: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": "docgraph"} for m in MODELS
    ]})


def routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", _endpoint(chat_completion), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(embeddings), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        *BATCHES.routes(),
    ]


def create_app() -> Starlette:
    return Starlette(routes=routes())
