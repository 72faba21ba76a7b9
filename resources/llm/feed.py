"""The engine's work queue: items pulled from a source, and follow-ups that results add.

A step's LLM work is one stream: a document's theme extraction can only be asked once its
chunk metadata is in, and its votes once the extraction is. Those follow-ups come from
`on_result` and go to the front, ahead of new documents from the source, so a document
that has started finishes soon and memory stays O(documents in flight). The feed ends
when the source is exhausted, no follow-up is waiting and no item is in flight (an item in
flight may still add follow-ups).
"""

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Feed(Generic[T]):
    def __init__(self, source: Iterable[T]):
        self._source = iter(source)
        self._followups: deque[T] = deque()
        self._in_flight = 0
        self._exhausted = False
        self._changed = asyncio.Event()

    async def take(self) -> T | None:
        """The next item, or None once there will be no more."""
        while True:
            if self._followups:
                item = self._followups.popleft()
            elif not self._exhausted:
                item = next(self._source, None)  # workers share it: items are pulled
                self._exhausted = item is None
            else:
                item = None
            if item is not None:
                self._in_flight += 1
                return item
            if self._in_flight == 0:
                self._changed.set()  # wake the other idle workers: they end too
                return None
            self._changed.clear()
            await self._changed.wait()

    def done(self, followups: Iterable[T] = ()) -> None:
        """An item taken is finished; its follow-ups (if any) are fed next."""
        self._followups.extend(followups)
        self._in_flight -= 1
        self._changed.set()
