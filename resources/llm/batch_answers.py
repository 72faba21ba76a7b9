"""Reading a batch's answers back: one output or error line's outcome, validated exactly
like a synchronous answer (the same tolerant normalisation), and the response schema a
submission names (resources/llm/batch_lane.py collects with these)."""

import importlib
import json
from types import SimpleNamespace

from pydantic import BaseModel

from resources.errors import ErrorClass
from resources.llm.calls import usage_of
from resources.llm.structured import answer_text, parse, short


def schema_name(schema: type[BaseModel] | None) -> str:
    return f"{schema.__module__}:{schema.__qualname__}" if schema else ""


def schema_named(name: str) -> type[BaseModel] | None:
    if not name:
        return None
    module, qualname = name.split(":")
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def line_outcome(raw: str, chat: bool, schema: type[BaseModel] | None
                 ) -> tuple[str, str, str | None, dict | None]:
    """(key, state, detail, cache entry) of one line: state `answered` with the entry to
    cache (its `usage` included), else `failed`, `expired` or `invalid` with why (for
    `invalid`, the answer too: the sync route's repair turn starts from it)."""
    line = json.loads(raw, object_hook=lambda d: SimpleNamespace(**d))
    key = getattr(line, "custom_id", None) or ""
    response = getattr(line, "response", None)
    if not response:
        error = getattr(line, "error", None)
        # OpenAI's error code for it is our error class's word
        expired = getattr(error, "code", None) == ErrorClass.BATCH_EXPIRED
        message = getattr(error, "message", None) or "no answer"
        return key, "expired" if expired else "failed", message, None
    body = getattr(response, "body", None)
    if getattr(response, "status_code", None) != 200:
        error = getattr(body, "error", None)
        return key, "failed", f"HTTP {response.status_code}: " \
                              f"{getattr(error, 'message', None) or 'no message'}", None
    if chat:
        content = answer_text(body)
        try:
            value, normalised = parse(content, schema)
        except ValueError as invalid:
            return key, "invalid", json.dumps({"content": content, "error": short(invalid)}), \
                None
        stored = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        entry = {"value": stored, "normalised": dict(normalised)}
    else:
        vectors = [d.embedding for d in sorted(getattr(body, "data", None) or [],
                                               key=lambda d: d.index)]
        if not vectors or len({len(v) for v in vectors}) != 1:
            return key, "invalid", json.dumps({"content": None,
                                               "error": "no vectors of one size"}), None
        entry = {"value": vectors}
    return key, "answered", None, {**entry, "usage": usage_of(body)}
