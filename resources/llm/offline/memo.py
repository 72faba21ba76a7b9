"""The simulator's cheap answer mode (SimConfig.cheap_answers): the same answers for less
CPU, so that on a small machine a benchmark measures the client, not the simulator.

The text analytics (resources/llm/offline/analytics.py) are pure functions of the text,
and one chunk's text comes back in several requests (its metadata, its graph extraction,
its embedding, the document's themes and votes) and several times within one answer.
`MemoAnalytics` computes each (function, arguments) once, keeping the most recent
`maxsize`; a finished answer is kept per (schema, text, judged subject) too. The answers
are exactly those of the full mode. What differs: `usage` token counts are estimated from
length (4 characters a token) instead of counted with the tokenizer.
"""

import functools
from types import ModuleType

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
