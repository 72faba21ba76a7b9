"""The simulator's cheap answer mode (SimConfig.cheap_answers, `CHEAP`): the same answers
for less CPU, so that on a small machine a benchmark measures the client, not the simulator.

The text analytics (resources/llm/offline/analytics.py) are pure functions of the text,
and one chunk's text comes back in several requests (its metadata, its graph extraction,
its embedding, the document's themes and votes) and several times within one answer.
`MemoAnalytics` computes each (function, arguments) once, keeping the most recent
`maxsize`; a finished answer is kept per (schema, text, judged subject) too. The answers
are exactly those of the full mode. What differs: `usage` token counts are estimated from
length (4 characters a token) instead of counted with the tokenizer.
"""

import functools
import hashlib
import json
from collections import OrderedDict
from types import ModuleType

from resources.llm.offline import analytics as ta
from resources.llm.offline.answers import request_parts
from resources.llm.offline.app import Heuristics

# Functions of hashable arguments only (signature and cooccurrences take lists).
PURE = frozenset({"words", "sentences", "keywords", "summary", "title", "language",
                  "entities", "key_phrases", "has_personal_data", "embed"})


class MemoAnalytics:
    """The analytics module with its pure functions memoised; everything else passes
    through. Lists come back as copies, so a caller that changes one changes only its own."""

    def __init__(self, module: ModuleType, maxsize: int = 4096):
        self._module = module
        self._maxsize = maxsize

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if name not in PURE:
            return value
        cached = functools.lru_cache(self._maxsize)(value)

        @functools.wraps(value)
        def call(*args, **kwargs):
            result = cached(*args, **kwargs)
            return list(result) if isinstance(result, list) else result

        setattr(self, name, call)  # found directly from now on
        return call


def estimated_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class CheapHeuristics(Heuristics):
    """The offline app's heuristics (resources/llm/offline/app.py), memoised, with every
    finished answer kept per (schema, text, judged subject): all an answer depends on."""

    def __init__(self, maxsize: int = 4096):
        self.analytics = MemoAnalytics(ta, maxsize)
        self._answers: OrderedDict[bytes, str] = OrderedDict()
        self._maxsize = maxsize

    def count(self, text: str) -> int:
        return estimated_tokens(text)

    def schema_answer(self, schema: dict, messages: list[dict]) -> str:
        text, subject = request_parts(messages)
        key = hashlib.sha256(json.dumps([schema, text, subject], sort_keys=True).encode()
                             ).digest()
        content = self._answers.get(key)
        if content is None:
            content = super().schema_answer(schema, messages)
            self._answers[key] = content
            if len(self._answers) > self._maxsize:
                self._answers.popitem(last=False)
        else:
            self._answers.move_to_end(key)
        return content


CHEAP = CheapHeuristics()
