"""The enrichment step's routes: which stages take the Batch API or Flex processing, and
what the UI is told about the documents that wait for a batch.

A stage's route is its own `route` in the step's run config, else the step's `route`,
else `LLM_ROUTE` (default sync): sync, batch, flex (synchronous calls with
service_tier=flex: resources/llm/calls.py), or auto. `auto` takes the batch lane for a
chunk stage when the step has at least `LLM_BATCH_MIN_ITEMS` of its items (one per chunk;
one per `inputs_per_request` chunks for embeddings) and the model's batch price is below
its sync price; document_themes on auto follows chunk_metadata (its calls come after the
metadata's).

The step's stream holds a batch stage's items that are not answered yet and sends them
together when nothing else is left (resources/llm/engine.py): the chunk stages in a first
round, the themes, which follow from their answers, in the next ones. With `batch_wait`
(`docgraph materialize --route batch`) the step waits for each round's batches, printing
their progress. Otherwise it finishes without them: a document whose items are in an open
batch is not recorded for that stage (an observation says which batch it waits for, and
its status), the step holds no pool slot meanwhile, and `batch_sensor`
(pipeline_defs/batch_sensor.py) requests the document's run when the batch is over; that
run collects the answers into the response cache and records the document from them.
"""

import math
import sys

import dagster as dg

from assets.keys import (
    CHUNK_EMBEDDINGS,
    CHUNK_METADATA,
    CHUNKS,
    DOCUMENT_THEMES,
    GRAPH_EXTRACTION,
)
from assets.upstream import latest_upstreams
from resources.llm import ChatItem, EmbedItem, LLMEngine

STAGES = {"chunk_metadata": CHUNK_METADATA, "chunk_embeddings": CHUNK_EMBEDDINGS,
          "graph_extraction": GRAPH_EXTRACTION, "document_themes": DOCUMENT_THEMES}
# the stream's phases, by the stage (asset) they are calls of
PHASE_STAGE = {"chunk_metadata": "chunk_metadata", "chunk_embeddings": "chunk_embeddings",
               "graph_extraction": "graph_extraction", "themes_extraction": "document_themes",
               "themes_judging": "document_themes"}


class BatchRoute:
    """One step's routes and its documents waiting for batches (module docstring)."""

    def __init__(self, stream, keys: list[str]):
        self.stream, self.keys = stream, keys
        self.context, self.config = stream.context, stream.config
        settings = stream.settings
        step = self.config.route or settings.route
        self.routes = {stage: getattr(self.config, stage).route or step
                       for stage, asset_key in STAGES.items() if asset_key in stream.selected}
        if any(route == "auto" for route in self.routes.values()):
            self._resolve_auto()
        self.batched = {stage for stage, route in self.routes.items() if route == "batch"}
        # the offline provider's batches live in the process that made them (and answer at
        # once): a run that did not wait for them would leave them to no one
        self.wait = self.config.batch_wait or settings.offline
        self.routed = {stage: route for stage, route in self.routes.items()
                       if route in ("batch", "flex")}

    def _resolve_auto(self) -> None:
        settings = self.stream.settings
        latest = latest_upstreams(self.context.instance, CHUNKS, self.keys)
        chunks = [int(up.metadata.get("chunks", 0)) for up in latest.values()]
        per_request = self.config.chunk_embeddings.inputs_per_request
        counts = {"chunk_metadata": sum(chunks), "graph_extraction": sum(chunks),
                  "chunk_embeddings": sum(math.ceil(n / per_request) for n in chunks)}
        for stage in ("chunk_metadata", "chunk_embeddings", "graph_extraction"):
            if self.routes.get(stage) == "auto":
                model = settings.embed_model if stage == "chunk_embeddings" \
                    else settings.chat_model
                self.routes[stage] = "batch" if counts[stage] >= settings.batch_min_items \
                    and settings.has_cheaper_route(model) else "sync"
        if self.routes.get("document_themes") == "auto":
            self.routes["document_themes"] = self.routes.get("chunk_metadata", "sync")
            if self.routes["document_themes"] == "auto":  # metadata not in this step
                self.routes["document_themes"] = "sync"

    def route_of(self, item: ChatItem | EmbedItem) -> tuple[str, str] | None:
        """(route, stage) of an item not on the sync route (the engine's `route_of`)."""
        stage = PHASE_STAGE[self.stream.owner[item.key][1]]
        route = self.routed.get(stage)
        return (route, stage) if route else None

    def start(self, engine: LLMEngine) -> None:
        if self.routed:
            self.context.log.info("enrichment: routes " + ", ".join(
                f"{stage} {route}" for stage, route in sorted(self.routed.items())))
        if not self.batched:
            return
        lane = engine.batch_lane()  # no response cache: the step fails here, saying so
        lane.partitions = self.keys
        lane.partition_of = lambda item: self.stream.owner[item.key][0].key
        if self.wait:
            lane.progress = lambda line: print(f"docgraph: {line}", file=sys.stderr,
                                               flush=True)

    def observe_waiting(self, engine: LLMEngine) -> dict[str, dict[str, list[str]]]:
        """{document: {stage: batch ids}} of the items left in open batches; one
        observation per document and stage, with the batches and their status."""
        if not engine.waiting:
            return {}
        lane = engine.batch_lane()
        keys: dict[tuple[str, str], list[str]] = {}
        for item in engine.waiting:
            doc, phase = self.stream.owner[item.key]
            keys.setdefault((doc.key, PHASE_STAGE[phase]), []).append(engine.cache_key_of(item))
        waiting: dict[str, dict[str, list[str]]] = {}
        for (key, stage), item_keys in sorted(keys.items()):
            rows = [lane.store.get(s) for s in set(lane.store.open_for(item_keys).values())]
            batch_ids = sorted(r.batch_id or r.submission for r in rows)
            waiting.setdefault(key, {})[stage] = batch_ids
            self.context.log_event(dg.AssetObservation(
                asset_key=STAGES[stage], partition=key,
                description="waiting for its batch: batch_sensor requests the run that "
                "records it once the batch is over",
                metadata={
                    "llm_route": "batch",
                    "batch_ids": dg.MetadataValue.json(batch_ids),
                    "batch_status": ", ".join(sorted({r.status for r in rows})),
                    "batch_requests": dg.MetadataValue.int(len(item_keys)),
                    "batch_completed_requests": dg.MetadataValue.int(
                        sum(r.completed for r in rows)),
                    "batch_failed_requests": dg.MetadataValue.int(sum(r.failed for r in rows)),
                }))
        return waiting
