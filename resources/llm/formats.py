"""The response_format ladder for servers that reject json_schema.

    json_schema  (OpenAI's strict structured outputs; the request as the cache knows it)
    json_object  (JSON mode; the schema in a system message)
    prompt       (no response_format; the schema in a system message, tolerant parsing)

A 400 that names the response format moves a model one rung down; what worked is kept in
`learned` (the LLM resource passes one dict to every engine of a run step, so later stages
start on the rung that works). The first request for a model goes alone (the others wait
for it), so a server that takes no json_schema sees one rejected call per model and step,
not one per item.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from resources.llm.structured import schema_message

MODES = ("json_schema", "json_object", "prompt")
# Words of a 400 that is about the response format, not about the prompt: a context-length
# or content 400 must fail the item, not change how every later item is asked.
# Only the error's own message is read: some servers echo the request (which holds
# "json_schema") in the body of any 400.
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "json schema",
                 "response format", "structured output", "grammar", "strict mode",
                 "'strict'", '"strict"')


def is_format_rejection(error: BaseException, request: dict) -> bool:
    if not request.get("response_format") or getattr(error, "status_code", None) != 400:
        return False
    body = getattr(error, "body", None)
    if isinstance(body, dict) and body.get("param") == "response_format":
        return True
    text = str(getattr(error, "message", "")).lower()
    return any(word in text for word in _FORMAT_WORDS)


def as_mode(request: dict, schema: type[BaseModel], mode: str) -> dict:
    """The request to send in `mode` (the json_schema request itself is the first rung)."""
    if mode == MODES[0]:
        return request
    sent = {k: v for k, v in request.items() if k != "response_format"}
    sent["messages"] = [schema_message(schema), *request["messages"]]
    if mode == "json_object":
        sent["response_format"] = {"type": "json_object"}
    return sent


class FormatModes:
    """Per model: which rung works, whether it is known yet, and one warning per model."""

    def __init__(self, log: logging.Logger, learned: dict[str, str] | None = None):
        self.log = log
        self._learned = {} if learned is None else learned  # model -> the rung that worked
        self._mode = dict(self._learned)
        self._known: set[str] = set(self._mode)
        self._locks: dict[str, asyncio.Lock] = {}
        self._refused: dict[str, list[str]] = {}  # model -> the modes it rejected

    def mode(self, model: str) -> str:
        return self._mode.get(model, MODES[0])

    @contextlib.asynccontextmanager
    async def probing(self, model: str) -> AsyncIterator[None]:
        """Until a model's mode is known, one request at a time finds it out."""
        if model in self._known:
            yield
            return
        lock = self._locks.setdefault(model, asyncio.Lock())
        await lock.acquire()
        if model in self._known:  # found out while this request waited: go alongside
            lock.release()
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def worked(self, model: str, mode: str) -> None:
        """A request in `mode` was answered: that is the model's mode, if it still is."""
        if model in self._known or mode != self.mode(model):
            return
        self._known.add(model)
        self._learned[model] = mode
        if mode != MODES[0]:
            self.log.warning(
                "model %s rejected response_format %s with HTTP 400; using %s for the rest "
                "of this step (the schema goes in a system message; answers are "
                "normalised and validated)", model, " and ".join(self._refused.get(model, [])),
                mode)

    def rejected(self, model: str, mode: str) -> bool:
        """`mode` was refused for `model`: step down once. False when no rung is left."""
        if self.mode(model) != mode:
            return True  # another request already stepped down
        rung = MODES.index(mode) + 1
        if rung >= len(MODES):
            return False
        self._mode[model] = MODES[rung]
        self._known.discard(model)
        self._refused.setdefault(model, []).append(mode)
        return True
