"""Running the LLM engine over a batch of document partitions, and judging the results.

A step over a range of documents sends every item of every document through one engine
run, so the provider sees one steady stream at its rate limit; the results are then split
back per document for storage, metadata and the success-rate gate.
"""

import asyncio
import warnings
from collections import defaultdict
from collections.abc import Iterable

import dagster as dg
import pandas as pd

from assets.batch import PartitionError, not_materialized
from assets.partitions import documents_partitions
from resources.llm import ChatItem, EmbedItem, ItemResult
from resources.llm.metrics import BatchMetrics, MetricsRecorder
from resources.llm.resource import LLMResource
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


def read_partitions(
    store: AssetStore, registry: DocumentRegistry, asset_key: dg.AssetKey, keys: list[str]
) -> tuple[dict[str, pd.DataFrame], list[PartitionError]]:
    """The stored frames of `asset_key` for `keys`, and a not_materialized error for each
    key that has none."""
    frames, missing = {}, []
    for key in keys:
        if store.exists(asset_key, key, pd.DataFrame):
            frames[key] = store.read(asset_key, key, pd.DataFrame)
        else:
            missing.append(not_materialized(registry, key, asset_key.to_user_string()))
    return frames, missing


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

    metrics = asyncio.run(go())
    return by_partition, metrics


def partition_metrics(results: list[ItemResult], run: BatchMetrics) -> BatchMetrics:
    """One partition's share of a run: its own counts, the run's concurrency and time."""
    recorder = MetricsRecorder()
    for result in results:
        recorder.add(result)
    return recorder.snapshot(provider=run.provider, model=run.model, peak=run.peak_concurrency,
                             limit=run.final_concurrency_limit, wall=run.wall_seconds)


def success_rate_check(
    asset_key: dg.AssetKey, partition: str, frame: pd.DataFrame, threshold: float
) -> dg.AssetCheckEvaluation:
    """`<asset>_success_rate` for one partition: rows without an `error_class` over all
    rows (one row per chunk), with the failed chunk ids and classes in its metadata."""
    failed = frame[frame["error_class"].notna()].sort_values("chunk_id")
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
                {"id": r.chunk_id, "error_class": r.error_class, "error": r.error}
                for r in failed.head(MAX_LISTED_FAILURES).itertuples()
            ]),
        },
    )


# Documents per run: each brings ~10 chunks, so a run keeps the engine busy at its ceiling.
ENRICH_BATCH_SIZE = 50


def llm_asset(asset_key: dg.AssetKey, *, deps: list, code_version: str, description: str,
              extra_checks: tuple[dg.AssetCheckSpec, ...] = ()):
    """The multi_asset every LLM enrichment asset is: per-document partitions recorded one
    by one from a batched step, in the `llm` pool, with its success-rate gate."""
    return dg.multi_asset(
        specs=[dg.AssetSpec(
            asset_key,
            deps=deps,
            skippable=True,
            partitions_def=documents_partitions,
            group_name="enrichment",
            kinds={"openai", "pandas", "parquet"},
            code_version=code_version,
            description=description,
        )],
        check_specs=[success_rate_spec(asset_key, documents_partitions), *extra_checks],
        can_subset=True,  # outputs are optional: results are logged per partition instead
        pool="llm",
        op_tags={"docgraph/stage": "llm"},
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=ENRICH_BATCH_SIZE),
    )


def success_rate_spec(asset_key: dg.AssetKey, partitions_def) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        f"{asset_key.to_user_string()}_success_rate",
        asset=asset_key,
        blocking=True,
        partitions_def=partitions_def,
        description="succeeded / attempted items of the partition >= success_threshold "
        "(default 0.99); the failed item ids and error classes are in the metadata. "
        "Downstream enrichment skips a partition whose check failed.",
    )
