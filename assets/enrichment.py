"""The enrichment step: chunk_metadata, chunk_embeddings, graph_extraction and
document_themes for a range of documents, as ONE stream of LLM work.

Every call of every document of the step goes through one engine run under one
concurrency: the chunk metadata and embedding calls of each document first (its graph
extraction calls after the next document's: `items`), then, as soon as that document's
own metadata and embeddings are in and passed their gates, its theme extraction, then its
votes and theme embeddings (follow-ups the engine feeds ahead of new documents:
resources/llm/feed.py). No stage waits for another
stage of other documents, so the provider sees one steady stream and the step one tail.

Each document's asset is recorded the moment its last item is in: the frame stored, its
materialization and checks logged (assets/batch.py), by one recorder thread, so the
event loop keeps the provider busy meanwhile. A document that fails (no chunks, a stale
input, a gate that held its themes back, a bug) fails alone and is reported at the end.
"""

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from assets.batch import Takeovers, batch_step, check_outputs
from assets.batch_route import BatchRoute
from assets.embeddings import (
    CHUNK_EMBEDDINGS_CHECKS,
    CHUNK_EMBEDDINGS_SPEC,
    EmbedConfig,
    dimension_check,
    embedding_items,
    embeddings_description,
    embeddings_frame,
)
from assets.failures import PartitionError, gate_failure, per_document, raise_failures
from assets.graph_extraction import (
    GRAPH_EXTRACTION_CHECKS,
    GRAPH_EXTRACTION_SPEC,
    graph_description,
    graph_frame,
    graph_items,
)
from assets.interrupts import run_interruptible
from assets.keys import (
    CHUNK_EMBEDDINGS,
    CHUNK_METADATA,
    CHUNKS,
    DOCUMENT_THEMES,
    GRAPH_EXTRACTION,
    LLM_POOL,
)
from assets.llm_assets import (
    GateConfig,
    Route,
    document_metrics,
    record_llm_asset,
    success_rate,
)
from assets.metadata import (
    CHUNK_METADATA_CHECKS,
    CHUNK_METADATA_SPEC,
    metadata_description,
    metadata_frame,
    metadata_items,
)
from assets.themes import (
    DOCUMENT_THEMES_CHECKS,
    DOCUMENT_THEMES_SPEC,
    ThemeConfig,
    candidate_themes,
    evidence_check,
    extraction_item,
    judging_items,
    themes_description,
    themes_frame,
)
from assets.upstream import Upstream, read_upstream
from resources.llm import ChatItem, EmbedItem, ItemResult
from resources.llm.resource import LLMResource
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

Item = ChatItem | EmbedItem
THEME_INPUTS = (CHUNK_METADATA, CHUNK_EMBEDDINGS)
SPECS = {spec.key: spec for spec in (CHUNK_METADATA_SPEC, CHUNK_EMBEDDINGS_SPEC,
                                     GRAPH_EXTRACTION_SPEC, DOCUMENT_THEMES_SPEC)}


class EnrichmentConfig(dg.Config):
    """The step's one concurrency ceiling, and each asset's own settings (every one has a
    `success_threshold`)."""

    concurrency: int | None = None  # default: the engine's LLM_MAX_CONCURRENCY
    # every stage's route unless it sets its own; None: LLM_ROUTE (assets/batch_route.py)
    route: Route | None = None
    # wait for the step's batches (the CLI's foreground), rather than leave their
    # documents to batch_sensor
    batch_wait: bool = False
    chunk_metadata: GateConfig = GateConfig()
    chunk_embeddings: EmbedConfig = EmbedConfig()
    graph_extraction: GateConfig = GateConfig()
    document_themes: ThemeConfig = ThemeConfig()


@dataclass
class DocumentWork:
    """One document's progress through the stream."""

    key: str
    chunks: pd.DataFrame
    upstream: dict[dg.AssetKey, Upstream]  # what each asset was computed from, as logged
    started: float = field(default_factory=time.monotonic)
    waiting: Counter[str] = field(default_factory=Counter)  # phase -> items still out
    results: dict[str, list[ItemResult]] = field(default_factory=dict)  # phase -> results
    theme_inputs: dict[dg.AssetKey, pd.DataFrame] = field(default_factory=dict)
    themes_held: bool = False  # an input of its themes is missing or failed its gate
    themes: tuple = ()  # (candidates, citations) once extracted
    left: set[dg.AssetKey] = field(default_factory=set)  # to a newer run (Takeovers)


class EnrichmentStream:
    """The step's documents as one engine run; see the module docstring."""

    def __init__(self, context: dg.AssetExecutionContext, config: EnrichmentConfig,
                 llm: LLMResource, store: AssetStore, registry: DocumentRegistry):
        self.context, self.config, self.store, self.registry = context, config, store, registry
        self.llm = llm
        self.settings = llm.settings()
        self.selected = context.selected_asset_keys
        self.owner: dict[str, tuple[DocumentWork, str]] = {}  # item key -> its document, phase
        self.failures: list[PartitionError] = []
        self.recorder = ThreadPoolExecutor(1, thread_name_prefix="docgraph-recorder")
        self.recordings: list[Future] = []
        self.takeovers = Takeovers(context)
        self.waiting: dict[str, dict[str, list[str]]] = {}  # document -> stage -> batch ids

    def run(self, keys: list[str]) -> list[PartitionError]:
        route = BatchRoute(self, keys)

        async def go():
            async with self.llm.engine(self.context.log) as engine:
                route.start(engine)
                metrics = await engine.run(
                    self.items(keys), self.on_result, self.config.concurrency,
                    route_of=route.route_of if route.routed else None,
                    wait_for_batches=route.wait)
                self.waiting = route.observe_waiting(engine)
                return metrics

        try:
            metrics = run_interruptible(go())  # SIGINT/SIGTERM to the CLI cancels it
        finally:
            self.recorder.shutdown(wait=True)  # what is done stays recorded, even if stopped
        for recording in self.recordings:
            recording.result()  # re-raise what per_document did not catch (none expected)
        self.context.log.info(
            f"enrichment: {metrics.attempted} LLM items of {len(keys)} documents: "
            f"{metrics.succeeded} ok, {metrics.failed} failed {metrics.failed_by_class}, "
            f"{metrics.cache_hits} cached, {metrics.http_calls} HTTP calls, peak concurrency "
            f"{metrics.peak_concurrency}, {metrics.wall_seconds:.1f} s")
        if self.waiting:
            batches = sorted({b for stages in self.waiting.values() for ids in stages.values()
                              for b in ids})
            self.context.log.info(
                f"enrichment: {len(self.waiting)} documents wait for batches "
                f"{', '.join(batches)}; batch_sensor requests their run when those are over")
        if metrics.budget_fallback_calls:
            self.context.log.warning(
                f"enrichment: {metrics.budget_fallback_calls} LLM calls were paced on an equal "
                "share of the budget: the shared budget (LLM_BUDGET_URL) could not be reached")
        return self.failures

    # -- the stream ------------------------------------------------------------------------
    def items(self, keys: list[str]) -> Iterator[Item]:
        """Each document's first calls, read and started one document at a time. A
        document's graph extraction is sent after the next document's theme inputs: it
        has no follow-ups, so at the end of the stream the last documents' extraction
        calls fill the slots while their theme calls wait for the metadata."""
        deferred: Iterator[Item] = iter(())
        for key in keys:
            doc = self._start(key)
            if doc is None:
                continue
            if CHUNK_METADATA in self.selected:
                yield from self._phase(doc, "chunk_metadata", metadata_items(doc.chunks))
            if CHUNK_EMBEDDINGS in self.selected:
                embed = self.config.chunk_embeddings
                yield from self._phase(doc, "chunk_embeddings", embedding_items(
                    key, doc.chunks, embed.inputs_per_request, embed.dimensions))
            yield from deferred
            deferred = iter(())
            if GRAPH_EXTRACTION in self.selected:
                deferred = self._phase(doc, "graph_extraction", graph_items(doc.chunks))
            yield from self._themes_if_ready(doc)
        yield from deferred

    def on_result(self, result: ItemResult) -> list[Item]:
        doc, phase = self.owner.pop(result.key)
        doc.results.setdefault(phase, []).append(result)
        doc.waiting[phase] -= 1
        if doc.waiting[phase]:
            return []
        with per_document(self.context, self.registry, doc.key, self.failures):
            return list(self._phase_done(doc, phase))
        return []  # a bug in this document's rows: it failed alone (per_document)

    def _phase(self, doc: DocumentWork, phase: str, items: list[Item]) -> Iterator[Item]:
        """Send a phase's items; a phase with none is done at once."""
        doc.results[phase] = []
        doc.waiting[phase] = len(items)
        for item in items:
            self.owner[item.key] = (doc, phase)
        yield from items
        if not items:
            yield from self._phase_done(doc, phase)

    def _phase_done(self, doc: DocumentWork, phase: str) -> Iterator[Item]:
        results = doc.results[phase]
        if phase == "chunk_metadata":
            rows = metadata_frame(doc.chunks, results)
            self._record(doc, CHUNK_METADATA, rows, results, metadata_description(rows))
            yield from self._themes_input(doc, CHUNK_METADATA, rows)
        elif phase == "chunk_embeddings":
            model = self.settings.embed_model
            embed = self.config.chunk_embeddings
            rows = embeddings_frame(doc.chunks, results, embed.inputs_per_request, model)
            self._record(doc, CHUNK_EMBEDDINGS, rows, results,
                         embeddings_description(rows, model),
                         extra=dimension_check(doc.key, rows, embed.dimensions),
                         version_parts=(model,))
            yield from self._themes_input(doc, CHUNK_EMBEDDINGS, rows)
        elif phase == "graph_extraction":
            rows = graph_frame(doc.chunks, results)
            self._record(doc, GRAPH_EXTRACTION, rows, results, graph_description(rows))
        elif phase == "themes_extraction":
            [extraction] = results
            doc.themes = candidate_themes(extraction, doc.chunks)
            yield from self._phase(doc, "themes_judging", judging_items(
                doc.key, *doc.themes, doc.chunks, self.config.document_themes))
        elif phase == "themes_judging":
            config = self.config.document_themes
            results = [*doc.results["themes_extraction"], *results]
            rows = themes_frame(doc.key, *doc.themes, {r.key: r for r in results}, config)
            self._record(doc, DOCUMENT_THEMES, rows, results, themes_description(rows, config),
                         extra=evidence_check(doc.key, rows), id_column="theme_id")

    # -- documents -------------------------------------------------------------------------
    def _start(self, key: str) -> DocumentWork | None:
        """The document's chunks and, for themes whose inputs this step does not compute,
        the stored inputs; None (and the failure noted) if its chunks are not there."""
        ready, errors = read_upstream(self.context, self.store, self.registry, [CHUNKS], [key])
        if errors:
            self._fail(errors[0], tuple(k.to_user_string()
                                        for k in sorted(self.selected, key=str)))
            return None
        chunks = ready[key]
        doc = DocumentWork(key, chunks.frames[CHUNKS], {CHUNKS: chunks.provenance[0]})
        stored = [k for k in THEME_INPUTS if k not in self.selected]
        if DOCUMENT_THEMES in self.selected and stored:
            # read as any step reads its inputs: stored, gate passed, from these chunks
            ready, errors = read_upstream(self.context, self.store, self.registry,
                                          [CHUNKS, *stored], [key])
            if errors:
                doc.themes_held = True
                self._fail(errors[0])
            else:
                for upstream in ready[key].provenance[1:]:
                    doc.upstream[upstream.asset_key] = upstream
                    doc.theme_inputs[upstream.asset_key] = ready[key].frames[upstream.asset_key]
        return doc

    def _themes_input(self, doc: DocumentWork, asset_key: dg.AssetKey, rows: pd.DataFrame
                      ) -> Iterator[Item]:
        """A theme input computed here: its gate decides whether the themes go on."""
        if DOCUMENT_THEMES not in self.selected or doc.themes_held:
            return
        threshold = getattr(self.config, asset_key.to_user_string()).success_threshold
        if success_rate(rows) < threshold:
            doc.themes_held = True
            self._fail(gate_failure(self.registry, doc.key, asset_key.to_user_string()))
            return
        doc.theme_inputs[asset_key] = rows
        yield from self._themes_if_ready(doc)

    def _themes_if_ready(self, doc: DocumentWork) -> Iterator[Item]:
        if (DOCUMENT_THEMES in self.selected and not doc.themes_held
                and "themes_extraction" not in doc.results
                and all(k in doc.theme_inputs for k in THEME_INPUTS)):
            yield from self._phase(doc, "themes_extraction", [extraction_item(
                doc.key, doc.chunks, doc.theme_inputs[CHUNK_METADATA],
                self.config.document_themes)])

    def _fail(self, error: PartitionError, assets: tuple[str, ...] = ("document_themes",)
              ) -> None:
        self.failures.append(PartitionError(error.partition, error.path, error.error_class,
                                            error.reason, assets))

    # -- recording ---------------------------------------------------------------------------
    def _record(self, doc: DocumentWork, asset_key: dg.AssetKey, rows: pd.DataFrame,
                results: list[ItemResult], description: dict, **checks) -> None:
        """Store and record one document's asset with its checks (record_llm_asset), on
        the recorder thread (in order: an asset's inputs are recorded before it), unless a
        newer run has taken it over, or an input computed here (its themes then wait for
        automation to request them from the newer run's inputs)."""
        metadata = {**document_metrics(results, self.settings.provider,
                                       self.settings.chat_model,
                                       time.monotonic() - doc.started), **description}
        threshold = getattr(self.config, asset_key.to_user_string()).success_threshold
        inputs = (CHUNKS, *THEME_INPUTS) if asset_key == DOCUMENT_THEMES else (CHUNKS,)

        def write() -> None:
            with per_document(self.context, self.registry, doc.key, self.failures):
                if left := sorted(k.to_user_string() for k in doc.left & set(inputs)):
                    self.context.log.info(
                        f"{asset_key.to_user_string()} {doc.key}: not recorded, it was computed "
                        f"from the {', '.join(left)} that a newer run records")
                if left or self.takeovers.leave(asset_key, doc.key):
                    doc.left.add(asset_key)
                    return
                doc.upstream[asset_key] = record_llm_asset(
                    self.context, self.store, SPECS[asset_key], doc.key, rows, metadata,
                    tuple(doc.upstream[k] for k in inputs), threshold, **checks)

        self.recordings.append(self.recorder.submit(write))


@batch_step(
    name="enrichment",
    specs=list(SPECS.values()),
    check_specs=[*CHUNK_METADATA_CHECKS, *CHUNK_EMBEDDINGS_CHECKS, *GRAPH_EXTRACTION_CHECKS,
                 *DOCUMENT_THEMES_CHECKS],
    pool=LLM_POOL,
    op_tags={"docgraph/stage": "enrichment"},
)
def enrichment(context: dg.AssetExecutionContext, config: EnrichmentConfig,
               llm: LLMResource, store: AssetStore, registry: DocumentRegistry):
    keys = list(context.partition_keys)
    failures = EnrichmentStream(context, config, llm, store, registry).run(keys)
    yield from check_outputs(context)  # every partition was recorded on its own
    raise_failures(failures, len(keys))
