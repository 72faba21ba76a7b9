"""The batch lane: a step's items through the provider's Batch API, at half the price.

    lane = engine.batch_lane()
    report = await lane.run(items, stage="chunk_metadata", partitions=keys)
    metrics = await engine.run(items, on_result)  # answered items come from the cache

or, inside one run, `engine.run(items, on_result, route_of=...)`, which holds the batch
route's unanswered items and sends them in rounds through `submit` and `settle`
(resources/llm/engine.py).

`submit` writes each item not yet answered (not in the response cache) and not already
on its way (in an uncollected submission: batch_store.py) as one JSONL line, custom_id =
the item's cache key and body = the request the synchronous route would send, into one
file per endpoint and response schema, split at `batch_max_requests` lines or
`batch_max_bytes`; uploads it (`POST /v1/files`, purpose=batch), records it, and creates the
batch (`POST /v1/batches`, 24h, the submission id and stage in its metadata). `wait` polls
until every batch is over, logging progress. `collect` streams the output and error files
line by line: an answer is validated exactly like a synchronous one (tolerant
normalisation included) and written to the response cache with the batch's id and usage;
one that is not valid, a failed line, an expired one, one a cancelled batch never reached is
recorded with its reason. The engine's run then serves the answered items from the cache
(accounted on the batch route, at the batch price) and the others as `LLM_BATCH_FALLBACK`
says: asked synchronously (an invalid answer goes straight to its repair turn) or failed
with `batch_failed`, `batch_expired` or `invalid_output`.

Memory is O(one batch file on disk, 500 items in hand): items are read from the iterator
and written out in chunks, and answers are read back a line at a time (an engine's rounds
hold their items themselves, as a step holds its documents).
"""

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import openai
from pydantic import BaseModel

from resources.llm.batch_answers import line_outcome, schema_name, schema_named
from resources.llm.batch_store import CHUNK, BatchStore, Submission
from resources.llm.cache import Cache
from resources.llm.items import ChatItem, EmbedItem

TERMINAL = ("completed", "failed", "expired", "cancelled")
ENDPOINTS = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
STALE_SUBMITTING_SECONDS = 120  # a submission without a batch id this old: its process died


@dataclass
class LaneReport:
    """What the lane did for one call of `run`; the engine's metrics carry the rest."""

    submitted: int = 0  # lines sent in new batches
    already_answered: int = 0  # items in the response cache: nothing to send
    already_open: int = 0  # items on their way in an earlier submission: not sent again
    batches: list[str] = field(default_factory=list)  # provider batch ids waited for
    uploads: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # answered, invalid, failed, ...
    lane_errors: int = 0  # rounds the provider's Batch API failed (their items went sync)


class _File:
    """One input file being written: the lines of one stage, endpoint and schema."""

    def __init__(self, stage: str, endpoint: str, schema: str):
        self.stage, self.endpoint, self.schema = stage, endpoint, schema
        fd, self.path = tempfile.mkstemp(prefix="docgraph-batch-", suffix=".jsonl")
        self.handle = os.fdopen(fd, "wb")
        self.lines = 0
        self.bytes = 0
        self.digest = hashlib.sha256(f"{stage}\n{endpoint}\n{schema}\n".encode())
        self.documents: set[str] = set()

    def add(self, line: bytes, document: str | None) -> None:
        if document is not None:
            self.documents.add(document)
        self.handle.write(line)
        self.digest.update(line)
        self.lines += 1
        self.bytes += len(line)

    def keys(self) -> Iterator[str]:
        with open(self.path, "rb") as lines:
            for line in lines:
                yield json.loads(line)["custom_id"]

    def discard(self) -> None:
        self.handle.close()
        os.unlink(self.path)


class BatchLane:
    """Submits, waits for and collects batches for one engine (see the module docstring)."""

    def __init__(self, engine, store: BatchStore, cache: Cache, log: logging.Logger):
        self.engine, self.store, self.cache, self.log = engine, store, cache, log
        self.settings = engine.settings
        self.collected: set[str] = set()  # batch ids collected by this lane: their answers
        # are this run's, accounted on the batch route
        self.progress: Callable[[str], None] | None = None  # also told what is logged
        self.partitions: list[str] = []  # the documents the engine's items are of
        # an item's document (each submission records those of its items), else all
        self.partition_of: Callable[[ChatItem | EmbedItem], str] | None = None
        self.report = LaneReport()  # what the engine's rounds did (engine.run)

    def say(self, message: str) -> None:
        self.log.info(message)
        if self.progress:
            self.progress(message)

    # -- one call -------------------------------------------------------------------------
    async def run(self, items: Iterable[ChatItem | EmbedItem], stage: str,
                  partitions: list[str], wait: bool = True) -> LaneReport:
        """Submit what needs submitting; with `wait`, wait for every batch that holds
        these items and collect it."""
        report = LaneReport()
        await self.resume_submitting(report)
        holding = await self.submit(((stage, item) for item in items), partitions, report)
        await self.settle(holding, wait, report)
        return report

    async def settle(self, submissions: list[str], wait: bool, report: LaneReport
                     ) -> list[str]:
        """With `wait`, wait until every batch is over; collect those that are. The
        submissions still open."""
        if wait:
            await self.wait(submissions, report)
        still_open = []
        for submission in submissions:
            row = await self.refresh(submission)
            if row.batch_id and row.batch_id not in report.batches:
                report.batches.append(row.batch_id)
            if row.status in TERMINAL:
                await self.collect(submission, report)
            elif not row.collected:  # (a lost one is collected: nothing came back)
                still_open.append(submission)
        return still_open

    # -- submitting ------------------------------------------------------------------------
    async def submit(self, items: Iterable[tuple[str, ChatItem | EmbedItem]],
                     partitions: list[str], report: LaneReport) -> list[str]:
        """Send (stage, item)s; the submissions (new, and earlier ones still open) that
        hold them."""
        files: dict[tuple[str, str, str], _File] = {}
        holding: dict[str, None] = {}  # submission ids, in order

        async def flush(out: _File) -> None:
            documents = [p for p in partitions if p in out.documents] if self.partition_of \
                else partitions
            holding[await self._send(out, documents, report)] = None
            del files[(out.stage, out.endpoint, out.schema)]

        chunk: list[tuple[str, str, str, str, bytes, str | None]] = []
        for staged in self._with_sentinel(items):
            if staged is not None:
                stage, item = staged
                document = self.partition_of(item) if self.partition_of else None
                chunk.append((stage, *self._line(item), document))
                if len(chunk) < CHUNK:
                    continue
            for stage, endpoint, schema, _, line, document in await self._new_lines(
                    chunk, holding, report):
                out = files.get((stage, endpoint, schema))
                if out and (out.lines >= self.settings.batch_max_requests
                            or out.bytes + len(line) > self.settings.batch_max_bytes):
                    await flush(out)
                    out = None
                if out is None:
                    out = files[(stage, endpoint, schema)] = _File(stage, endpoint, schema)
                out.add(line, document)
            chunk = []
        for out in list(files.values()):
            await flush(out)
        return list(holding)

    @staticmethod
    def _with_sentinel(items: Iterable) -> Iterator:
        yield from items
        yield None

    def _line(self, item: ChatItem | EmbedItem) -> tuple[str, str, str, bytes]:
        if isinstance(item, ChatItem):
            request, key = self.engine.chat_request(item)
            body = self.engine.sendable(request, item.schema)
            endpoint, schema = ENDPOINTS["chat"], schema_name(item.schema)
        else:
            body, key = self.engine.embed_request(item)
            endpoint, schema = ENDPOINTS["embeddings"], ""
        line = json.dumps({"custom_id": key, "method": "POST", "url": endpoint, "body": body},
                          ensure_ascii=False).encode() + b"\n"
        return endpoint, schema, key, line

    async def _new_lines(self, chunk: list, holding: dict, report: LaneReport) -> list:
        """The chunk's lines to send: not answered, not on their way, not twice."""
        unique = list({entry[3]: entry for entry in chunk}.values())
        keys = [entry[3] for entry in unique]
        answered = set(await asyncio.to_thread(self._cached, keys))
        on_the_way = await asyncio.to_thread(self.store.open_for, keys)
        report.already_answered += len(answered)
        report.already_open += len(set(on_the_way) - answered)
        for submission in on_the_way.values():
            holding[submission] = None
        return [entry for entry in unique if entry[3] not in answered
                and entry[3] not in on_the_way]

    def _cached(self, keys: list[str]) -> list[str]:
        return [key for key in keys if self.cache.get(key) is not None]

    async def _send(self, out: _File, partitions: list[str], report: LaneReport) -> str:
        """Upload the file, record it, create its batch; the submission id."""
        out.handle.close()
        client = self.engine.client()
        try:
            with open(out.path, "rb") as handle:
                uploaded = await client.files.create(
                    file=(f"docgraph-{out.stage}.jsonl", handle), purpose="batch")
            report.uploads += 1
            now = time.time()
            submission = Submission(
                submission=await asyncio.to_thread(self.store.fresh_id,
                                                   out.digest.hexdigest()[:32]),
                batch_id=None, endpoint=out.endpoint,
                schema_name=out.schema, stage=out.stage, requests=out.lines,
                input_file_id=uploaded.id, status="submitting", completed=0, failed=0,
                partitions=tuple(partitions), created_at=now, updated_at=now,
                collected_at=None)
            await asyncio.to_thread(self.store.record, submission, out.keys())
        finally:
            out.discard()
        await self._create(submission)
        report.submitted += out.lines
        return submission.submission

    async def _create(self, submission: Submission) -> None:
        batch = await self.engine.client().batches.create(
            input_file_id=submission.input_file_id, endpoint=submission.endpoint,
            completion_window="24h",
            metadata={"docgraph_submission": submission.submission,
                      "docgraph_stage": submission.stage})
        await asyncio.to_thread(self.store.update, submission.submission, batch_id=batch.id,
                                status=batch.status)
        self.say(f"batch lane: {submission.stage}: {submission.requests} requests of "
                 f"{submission.endpoint} in batch {batch.id}")

    async def resume_submitting(self, report: LaneReport) -> None:
        """Finish submissions whose process died after recording them: adopt the batch
        the provider made for one (found by its submission id), or create it now."""
        for stale in await asyncio.to_thread(self.store.open_submissions,
                                             STALE_SUBMITTING_SECONDS):
            await self._finish_submitting(stale, create=True)
            report.already_open += stale.requests

    async def _finish_submitting(self, row: Submission, create: bool) -> None:
        """A recorded submission without a batch id: adopt the provider's batch made for
        it (its process died before recording the id), or, with `create` (no one has
        touched it for STALE_SUBMITTING_SECONDS), create it."""
        found = await self._provider_batch(row.submission)
        if found is not None:
            await asyncio.to_thread(self.store.update, row.submission, batch_id=found.id,
                                    status=found.status)
            self.say(f"batch lane: adopted batch {found.id} of an interrupted submission")
        elif create:
            await self._create(row)

    async def _provider_batch(self, submission: str):
        async for batch in self.engine.client().batches.list(limit=100):
            if (batch.metadata or {}).get("docgraph_submission") == submission:
                return batch
            if batch.created_at < time.time() - 2 * 86_400:  # past any 24h window
                return None
        return None

    # -- waiting -----------------------------------------------------------------------------
    async def wait(self, submissions: list[str], report: LaneReport) -> None:
        """Poll until every submission's batch is over (completed, failed, expired or
        cancelled); progress is logged when it changes. Cancelling the wait leaves the
        batches running: the next run finds and collects them."""
        pending = list(submissions)
        seen: dict[str, tuple] = {}
        while pending:
            for submission in list(pending):
                batch = await self.refresh(submission)
                progress = (batch.status, batch.completed, batch.failed)
                if seen.get(submission) != progress:
                    seen[submission] = progress
                    self.say(f"batch lane: {batch.stage} batch {batch.batch_id}: "
                             f"{batch.status}, {batch.completed} of {batch.requests} done, "
                             f"{batch.failed} failed")
                if batch.status in TERMINAL or batch.collected:
                    pending.remove(submission)
            if pending:
                await asyncio.sleep(self.settings.batch_poll_seconds)

    async def refresh(self, submission: str) -> Submission:
        """The submission with its batch's status as the provider has it now."""
        row = await asyncio.to_thread(self.store.get, submission)
        if row.batch_id is None and not row.collected:  # cut between recording and creating
            stale = time.time() - row.updated_at > STALE_SUBMITTING_SECONDS
            await self._finish_submitting(row, create=stale)
            row = await asyncio.to_thread(self.store.get, submission)
        if row.collected or row.batch_id is None or row.status in TERMINAL:
            return row
        try:
            batch = await self.engine.client().batches.retrieve(row.batch_id)
        except openai.NotFoundError:
            # the provider no longer knows it (the offline provider's process ended, a
            # deleted project): its items are not on their way any more, a run sends them
            self.log.warning("batch lane: the provider has no batch %s (%s): its %s items "
                             "will be asked again", row.batch_id, row.stage, row.requests)
            await asyncio.to_thread(self.store.mark_missing, submission)
            await asyncio.to_thread(self.store.update, submission, status="lost",
                                    collected_at=time.time())
            return await asyncio.to_thread(self.store.get, submission)
        counts = batch.request_counts
        values = {"status": batch.status, "completed": counts.completed if counts else 0,
                  "failed": counts.failed if counts else 0}
        await asyncio.to_thread(self.store.update, submission, **values)
        return await asyncio.to_thread(self.store.get, submission)

    # -- collecting -------------------------------------------------------------------------
    async def collect(self, submission: str, report: LaneReport) -> None:
        """Read an ended batch's output and error files into the cache and the store."""
        row = await asyncio.to_thread(self.store.get, submission)
        if row.collected or row.status not in TERMINAL:
            return
        batch = await self.engine.client().batches.retrieve(row.batch_id)
        schema = schema_named(row.schema_name)
        outcomes: Counter[str] = Counter()
        unanswered: list[tuple[str, str, str | None]] = []
        answered: list[tuple[str, str, str | None]] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            async for line in self._lines(file_id):
                key, state, detail = await self._take(line, row, batch.id, schema)
                outcomes[state] += 1
                (answered if state == "answered" else unanswered).append((key, state, detail))
                if len(answered) >= CHUNK:
                    await asyncio.to_thread(self.store.mark_items, submission, answered)
                    answered = []
        await asyncio.to_thread(self.store.mark_items, submission, answered + unanswered)
        if missing := await asyncio.to_thread(self.store.mark_missing, submission):
            outcomes["missing"] += missing
        if batch.status == "failed" and batch.errors and batch.errors.data:
            first = batch.errors.data[0]
            self.log.warning("batch lane: batch %s failed validation: %s (line %s)", batch.id,
                             first.message, first.line)
        await asyncio.to_thread(self.store.update, submission, status=batch.status,
                                collected_at=time.time())
        self.collected.add(batch.id)
        report.outcomes.update(outcomes)
        self.say(f"batch lane: {row.stage} batch {batch.id} {batch.status}: "
                 + ", ".join(f"{n} {state}" for state, n in sorted(outcomes.items())))

    async def _lines(self, file_id: str):
        client = self.engine.client()
        async with client.files.with_streaming_response.content(file_id) as response:
            async for line in response.iter_lines():
                if line.strip():
                    yield line

    async def _take(self, raw: str, row: Submission, batch_id: str,
                    schema: type[BaseModel] | None) -> tuple[str, str, str | None]:
        """(key, state, detail) of one output or error line; an answer is cached."""
        key, state, detail, entry = line_outcome(raw, row.endpoint == ENDPOINTS["chat"],
                                                 schema)
        if entry is not None:
            entry["batch"] = {"id": batch_id, **entry.pop("usage")}
            await asyncio.to_thread(self.cache.put, key, entry)
        return key, state, detail
