"""The engine's work queue: items pulled from a source, and follow-ups that results add.

A step's LLM work is one stream: a document's theme extraction can only be asked once its
chunk metadata is in, and its votes once the extraction is. Those follow-ups come from
`on_result` and go to the front, ahead of new documents from the source, so a document
that has started finishes soon and memory stays O(documents in flight). The feed ends
when the source is exhausted, no follow-up is waiting and no item is in flight (an item in
flight may still add follow-ups).

Items for the batch lane are `hold`-en instead of processed. When nothing else is left (no
follow-up, the source exhausted, none in flight) one worker's `take` returns `ROUND`: it
sends the held items as batches (`held`), and `requeue`s those answered (they are served
from the cache) or left to the sync route; the rest stay held and, once a round requeued
nothing, the feed ends with them (they wait for their batches: `held`).
"""

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
ROUND = object()  # what `take` returns when only held items are left


class Feed(Generic[T]):
    def __init__(self, source: Iterable[T]):
        self._source = iter(source)
        self._followups: deque[T] = deque()
        self._in_flight = 0
        self._exhausted = False
        self._changed = asyncio.Event()
        self.held: list = []  # items for the batch lane, not yet answered
        self._round = False  # a worker is sending the held items
        self._stalled = False  # the last round requeued nothing: the held items wait

    def hold(self, item) -> None:
        """An item taken goes to the batch lane's next round instead."""
        self.held.append(item)
        self._stalled = False
        self.done()

    def requeue(self, ready: list[T], still_held: list) -> None:
        """After a round: `ready` items are fed again, the others stay held."""
        self._followups.extend(ready)
        self.held = still_held
        self._round = False
        self._stalled = not ready
        self._changed.set()

    async def take(self) -> T | None:
        """The next item, ROUND, or None once there will be no more."""
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
            if self._in_flight == 0 and not self._round:
                if self.held and not self._stalled:
                    self._round = True
                    return ROUND
                self._changed.set()  # wake the other idle workers: they end too
                return None
            self._changed.clear()
            await self._changed.wait()

    def done(self, followups: Iterable[T] = ()) -> None:
        """An item taken is finished; its follow-ups (if any) are fed next."""
        self._followups.extend(followups)
        self._in_flight -= 1
        self._changed.set()
