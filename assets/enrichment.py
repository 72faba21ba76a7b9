"""Running the LLM engine over a batch of document partitions, and judging the results.

A step over a range of documents sends every item of every document through one engine
run, so the provider sees one steady stream at its rate limit; the results are then split
back per document for storage, metadata and the success-rate gate.
"""

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from pydantic import BaseModel

from assets.batch import (
    PartitionError,
    Upstream,
    data_version,
    document_path,
    latest_upstream,
    log_check,
    not_materialized,
    per_document,
    record,
)
from assets.ingestion import CHUNKS
from assets.interrupts import run_interruptible
from assets.partitions import documents_partitions
from assets.prompts import Prompt
from resources.llm import ChatItem, EmbedItem, ItemResult
from resources.llm.metrics import BatchMetrics, MetricsRecorder
from resources.llm.resource import LLMResource, metrics_metadata
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

MAX_LISTED_FAILURES = 50

# Per-partition check specs are "preview" in Dagster 1.13; they are what makes a gate per
# document possible in a batched step, so we use them, without a warning on every load.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)


class EnrichConfig(dg.Config):
    concurrency: int | None = None  # this stage's ceiling; default: LLM_MAX_CONCURRENCY
    success_threshold: float = 0.99  # below it the <asset>_success_rate check fails


GATE_METADATA = "quality_gate"  # "passed" | "failed": the success-rate check's outcome


@dataclass(frozen=True)
class UpstreamData:
    """One document's inputs to an enrichment step: the stored frames and the
    materializations they came from (for provenance tags)."""

    frames: dict[dg.AssetKey, pd.DataFrame]
    provenance: tuple[Upstream, ...]


def read_upstream(
    context: dg.AssetExecutionContext, store: AssetStore, registry: DocumentRegistry,
    asset_keys: list[dg.AssetKey], keys: list[str],
) -> tuple[dict[str, UpstreamData], list[PartitionError]]:
    """The upstream frames of each partition of `keys`, and an error for each partition
    that has none, or whose upstream failed its quality gate: the gate is enforced here,
    per document, from the outcome recorded with the upstream materialization."""
    ready, errors = {}, []
    for key in keys:
        frames, provenance = {}, []
        for asset_key in asset_keys:
            name = asset_key.to_user_string()
            upstream = latest_upstream(context.instance, asset_key, key)
            if upstream is None or not store.exists(asset_key, key, pd.DataFrame):
                errors.append(not_materialized(registry, key, name))
                break
            if upstream.metadata.get(GATE_METADATA) == "failed":
                errors.append(gate_failure(registry, key, name, upstream.metadata))
                break
            frames[asset_key] = store.read(asset_key, key, pd.DataFrame)
            provenance.append(upstream)
        else:
            if stale := _out_of_step(frames):
                errors.append(PartitionError(
                    key, document_path(registry, key), "upstream_stale",
                    f"{stale} was computed from other chunks than the stored ones (the "
                    f"chunks were made again since): re-materialize {stale} for this document"))
            else:
                ready[key] = UpstreamData(frames, tuple(provenance))
    return ready, errors


def _out_of_step(frames: dict[dg.AssetKey, pd.DataFrame]) -> str | None:
    """The first per-chunk input whose chunk ids are not the stored chunks' ids."""
    if CHUNKS not in frames:
        return None
    chunk_ids = frames[CHUNKS]["chunk_id"].tolist()
    for asset_key, frame in frames.items():
        if "chunk_id" in frame.columns and frame["chunk_id"].tolist() != chunk_ids:
            return asset_key.to_user_string()
    return None



def gate_failure(registry: DocumentRegistry, key: str, name: str, meta: dict) -> PartitionError:
    return PartitionError(
        key, document_path(registry, key), "upstream_check_failed",
        f"{name}_success_rate failed ({meta.get('failed_items_count', '?')} of "
        f"{meta.get('items', '?')} items failed; see that check's metadata): "
        f"re-materialize {name} for this document first",
    )


def run_llm(
    context: dg.AssetExecutionContext,
    llm: LLMResource,
    work: dict[str, list[ChatItem | EmbedItem]],
    concurrency: int | None,
) -> tuple[dict[str, list[ItemResult]], BatchMetrics]:
    """Every item of every partition through one engine run; results per partition."""
    owner: dict[str, str] = {}
    by_partition: dict[str, list[ItemResult]] = defaultdict(list)

    def items() -> Iterable[ChatItem | EmbedItem]:
        for partition, partition_items in work.items():
            for item in partition_items:
                owner[item.key] = partition
                yield item

    async def go() -> BatchMetrics:
        async with llm.engine(context.log) as engine:
            return await engine.run(
                items(), lambda r: by_partition[owner[r.key]].append(r), concurrency
            )

    metrics = run_interruptible(go())  # SIGINT/SIGTERM to the CLI cancels it
    return by_partition, metrics


def partition_metrics(results: list[ItemResult], run: BatchMetrics) -> BatchMetrics:
    """One partition's share of a run: its own counts, the run's concurrency and time."""
    recorder = MetricsRecorder()
    for result in results:
        recorder.add(result)
    return recorder.snapshot(provider=run.provider, model=run.model, peak=run.peak_concurrency,
                             limit=run.final_concurrency_limit, wall=run.wall_seconds)


def success_rate_check(
    asset_key: dg.AssetKey, partition: str, frame: pd.DataFrame, threshold: float,
    id_column: str = "chunk_id",
) -> dg.AssetCheckEvaluation:
    """`<asset>_success_rate` for one partition: rows without an `error_class` over all
    rows (one row per item), with the failed item ids and classes in its metadata."""
    failed = frame[frame["error_class"].notna()].sort_values(id_column)
    rate = 1 - len(failed) / len(frame) if len(frame) else 1.0
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=f"{asset_key.to_user_string()}_success_rate",
        passed=rate >= threshold,
        severity=dg.AssetCheckSeverity.ERROR,
        partition=partition,
        metadata={
            "success_rate": dg.MetadataValue.float(round(rate, 4)),
            "threshold": dg.MetadataValue.float(threshold),
            "attempted": dg.MetadataValue.int(len(frame)),
            "failed": dg.MetadataValue.int(len(failed)),
            "failed_items": dg.MetadataValue.json([
                {"id": getattr(r, id_column), "error_class": r.error_class, "error": r.error}
                for r in failed.head(MAX_LISTED_FAILURES).itertuples()
            ]),
        },
    )


def chat_per_chunk_stage(
    context: dg.AssetExecutionContext, config: EnrichConfig, llm: LLMResource,
    store: AssetStore, registry: DocumentRegistry, keys: list[str], *,
    asset_key: dg.AssetKey, prompt: Prompt, schema: type[BaseModel],
    to_frame: Callable[[pd.DataFrame, list[ItemResult]], pd.DataFrame],
    describe: Callable[[pd.DataFrame], dict],
) -> list[PartitionError]:
    """A stage that asks the LLM one structured question per chunk: every chunk of every
    document in one engine run, then one frame (`to_frame`), record and gate per document,
    with the engine's metrics and `describe(frame)` as metadata."""
    inputs, failures = read_upstream(context, store, registry, [CHUNKS], keys)
    work = {
        key: [ChatItem(c.chunk_id, prompt.messages(c.text), schema, prompt.version)
              for c in data.frames[CHUNKS].itertuples()]
        for key, data in inputs.items()
    }
    results, run = run_llm(context, llm, work, config.concurrency)
    context.log.info(f"{asset_key.to_user_string()}: {run.attempted} chunks of {len(work)} "
                     f"documents: {run.succeeded} ok, {run.failed} failed "
                     f"{run.failed_by_class}, {run.cache_hits} cached, {run.http_calls} HTTP "
                     f"calls")
    for key, data in inputs.items():
        with per_document(context, registry, key, failures):
            partition_results = results.get(key, [])
            rows = to_frame(data.frames[CHUNKS], partition_results)
            record_judged(
                context, store, asset_key, key, rows,
                {**metrics_metadata(partition_metrics(partition_results, run)),
                 **describe(rows)},
                data_version(prompt.version, rows.to_json()), prompt.version,
                data.provenance, config.success_threshold,
            )
    return failures


def record_judged(
    context: dg.AssetExecutionContext, store: AssetStore, asset_key: dg.AssetKey,
    partition: str, rows: pd.DataFrame, metadata: dict, version: str, code_version: str,
    upstream: tuple[Upstream, ...], threshold: float, id_column: str = "chunk_id",
) -> bool:
    """Store and record one partition of an LLM asset with its success-rate check; the
    check's outcome goes into the materialization's metadata too, where downstream steps
    read it (read_upstream). Returns whether the gate passed."""
    check = success_rate_check(asset_key, partition, rows, threshold, id_column)
    gate = {GATE_METADATA: dg.MetadataValue.text("passed" if check.passed else "failed"),
            "items": dg.MetadataValue.int(len(rows)),
            "failed_items_count": check.metadata["failed"]}
    record(context, store, asset_key, partition, rows, {**metadata, **gate}, version,
           code_version, upstream)
    log_check(context, check)
    return check.passed


def llm_spec(asset_key: dg.AssetKey, *, deps: list, code_version: str, description: str
             ) -> dg.AssetSpec:
    """An LLM enrichment asset: per-document partitions, recorded one by one from the
    batched pipeline step (assets/pipeline.py)."""
    return dg.AssetSpec(
        asset_key,
        deps=deps,
        skippable=True,
        partitions_def=documents_partitions,
        group_name="enrichment",
        kinds={"openai", "pandas", "parquet"},
        code_version=code_version,
        description=description,
    )


def success_rate_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        f"{asset_key.to_user_string()}_success_rate",
        asset=asset_key,
        blocking=True,
        partitions_def=documents_partitions,
        description="succeeded / attempted items of the partition >= success_threshold "
        "(default 0.99); the failed item ids and error classes are in the metadata. "
        "Downstream enrichment skips a partition whose check failed.",
    )
