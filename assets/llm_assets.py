"""What the four LLM assets share: their spec, their success-rate gate and its check, a
document's share of the engine's accounting as metadata, and how one document's asset is
recorded with its checks."""

import enum
import warnings

import dagster as dg
import pandas as pd

from assets.automation import chained
from assets.batch import data_version, log_check, record
from assets.keys import success_rate_key
from assets.partitions import documents_partitions
from assets.upstream import Upstream
from resources.llm import ItemResult
from resources.llm.metrics import MetricsRecorder
from resources.llm.resource import metrics_metadata
from resources.storage import AssetStore

MAX_LISTED_FAILURES = 50

# Per-partition check specs are "preview" in Dagster 1.13; they are what makes a gate per
# document possible in a batched step, so we use them, without a warning on every load.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)


class Route(enum.StrEnum):
    """A stage's route to the provider (assets/batch_route.py). Lower-case names: run
    config names a Dagster enum's member by its name."""

    sync = "sync"
    batch = "batch"  # the Batch API, at half the price
    flex = "flex"  # synchronous calls with service_tier=flex: slower, half the price
    auto = "auto"  # batch from LLM_BATCH_MIN_ITEMS items, if the model's batch is cheaper


class GateConfig(dg.Config):
    success_threshold: float = 0.99  # below it the <asset>_success_rate check fails
    route: Route | None = None  # None: the step's route


def failed_items(frame: pd.DataFrame, id_column: str = "chunk_id") -> list[dict]:
    """The rows with an `error_class`, by id: {id, error_class, error}. Read as plain
    lists: a document has a handful of rows, and pandas' per-call cost on frames that
    small was ~3% of an enrichment step's CPU."""
    failed = [{"id": item, "error_class": error_class, "error": error}
              for item, error_class, error in zip(frame[id_column].tolist(),
                                                  frame["error_class"].tolist(),
                                                  frame["error"].tolist(), strict=True)
              if not pd.isna(error_class)]
    return sorted(failed, key=lambda row: row["id"])


def _rate(failed: int, attempted: int) -> float:
    return 1 - failed / attempted if attempted else 1.0


def success_rate(frame: pd.DataFrame) -> float:
    """Rows without an `error_class` over all rows (1.0 for none)."""
    return _rate(sum(not pd.isna(c) for c in frame["error_class"].tolist()), len(frame))


def success_rate_check(
    asset_key: dg.AssetKey, partition: str, frame: pd.DataFrame, threshold: float,
    id_column: str = "chunk_id",
) -> dg.AssetCheckEvaluation:
    """`<asset>_success_rate` for one partition: rows without an `error_class` over all
    rows (one row per item), with the failed item ids and classes in its metadata."""
    failed = failed_items(frame, id_column)
    rate = _rate(len(failed), len(frame))
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=success_rate_key(asset_key).name,
        passed=rate >= threshold,
        severity=dg.AssetCheckSeverity.ERROR,
        partition=partition,
        metadata={
            "success_rate": dg.MetadataValue.float(round(rate, 4)),
            "threshold": dg.MetadataValue.float(threshold),
            "attempted": dg.MetadataValue.int(len(frame)),
            "failed": dg.MetadataValue.int(len(failed)),
            "failed_items": dg.MetadataValue.json(failed[:MAX_LISTED_FAILURES]),
        },
    )


def document_metrics(results: list[ItemResult], provider: str, model: str,
                     seconds: float) -> dict[str, dg.MetadataValue]:
    """One document's share of the step's engine run: its own items' counts, and the time
    from its first call to its last (`llm_seconds`)."""
    recorder = MetricsRecorder()
    for result in results:
        recorder.add(result)
    snapshot = recorder.snapshot(provider=provider, model=model, peak=0, limit=0, wall=seconds)
    metadata = metrics_metadata(snapshot)
    for stream_wide in ("peak_concurrency", "budget_fallback_calls"):
        del metadata[stream_wide]  # properties of the step's stream, logged by the step
    return metadata


def record_llm_asset(
    context: dg.AssetExecutionContext, store: AssetStore, spec: dg.AssetSpec, partition: str,
    rows: pd.DataFrame, metadata: dict, inputs: tuple[Upstream, ...], threshold: float, *,
    extra: dg.AssetCheckEvaluation | None = None, id_column: str = "chunk_id",
    version_parts: tuple[str, ...] = (),
) -> Upstream:
    """Store one document's rows of an LLM asset, log its materialization (with the
    gate's counts) and its checks targeting it; returns the materialization."""
    check = success_rate_check(spec.key, partition, rows, threshold, id_column)
    gate = {"items": dg.MetadataValue.int(len(rows)),
            "failed_items_count": check.metadata["failed"]}
    logged = record(context, store, spec.key, partition, rows, {**metadata, **gate},
                    data_version(spec.code_version, *version_parts, rows.to_json()),
                    spec.code_version, inputs)
    for evaluation in filter(None, (check, extra)):
        log_check(context, evaluation, logged)
    return logged


def llm_spec(asset_key: dg.AssetKey, *, deps: list, code_version: str, description: str,
             with_inputs: bool = False) -> dg.AssetSpec:
    """An LLM enrichment asset: per-document partitions, recorded one by one from the
    enrichment step (assets/enrichment.py), requested by automation once its inputs are
    in and their gates passed (`with_inputs`: assets/automation.py)."""
    return dg.AssetSpec(
        asset_key,
        deps=deps,
        skippable=True,
        partitions_def=documents_partitions,
        group_name="enrichment",
        kinds={"openai", "pandas", "parquet"},
        code_version=code_version,
        description=description,
        automation_condition=chained(with_inputs=with_inputs),
    )


def success_rate_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        success_rate_key(asset_key).name,
        asset=asset_key,
        blocking=True,
        partitions_def=documents_partitions,
        description="succeeded / attempted items of the partition >= success_threshold "
        "(default 0.99); the failed item ids and error classes are in the metadata. "
        "Blocking: Dagster's automation does not request this document's downstream "
        "assets while it fails, and the steps refuse to read it.",
    )
