"""Materializing a batch of partitions in one step, each partition on its own.

A run per document costs more than the work: in-process ~0.3 s, a launched run seconds
(bench/chunking.py), while reading and chunking a 20 KB document takes ~2 ms. So steps
take a range of partitions (`BackfillPolicy.multi_run`). Dagster's step outputs cover the
whole range at once, which would mark a bad document materialized along with the good
ones; batch steps therefore declare their assets skippable, write each partition through
the `AssetStore` and log one `AssetMaterialization` per partition that succeeded, with its
own metadata and data version. Partitions that failed are reported together in one
`Failure` raised after the batch: the run fails, they show as failed in the UI, and every
other partition of the batch keeps its materialization.
"""

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

# Not exported by `dagster`; the type of AssetCheckEvaluation.target_materialization_data.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,
)

from resources.storage import AssetStore

# Documents per run, for every batched asset (one backfill policy for the whole job): a
# run costs ~0.3 s in-process and seconds when launched, a document ~2 ms to chunk, and 100
# documents bring ~1,000 chunks: enough to keep the LLM engine at its ceiling.
DOCUMENTS_PER_RUN = 100

# Tag names Dagster reads for ranges and versions (not exported as public constants).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
USER_VERSION_TAG = "dagster/data_version_is_user_provided"
INPUT_VERSION_TAG = "dagster/input_data_version/{}"
INPUT_POINTER_TAG = "dagster/input_event_pointer/{}"


@dataclass(frozen=True)
class PartitionError(Exception):
    partition: str
    path: str
    error_class: str
    reason: str
    assets: tuple[str, ...] = ()  # the assets this failure left unmaterialized (the stage)

    def __str__(self) -> str:
        return f"document {self.partition} ({self.path}): {self.reason}"


def document_path(registry, key: str) -> str:
    """The registered file of a partition, for error messages ("?" if unregistered)."""
    entry = registry.lookup(key)
    return str(entry.path) if entry else "?"


def not_materialized(registry, key: str, what: str) -> PartitionError:
    """The error for a partition whose upstream was never materialized."""
    return PartitionError(key, document_path(registry, key), "not_materialized",
                          f"{what} not materialized for this document yet")


@contextlib.contextmanager
def per_document(context: dg.AssetExecutionContext, registry, key: str,
                 failures: list[PartitionError]) -> Iterator[None]:
    """One document's share of a batch step: a PartitionError, or any unexpected exception
    (a bug: `internal_error`, traceback in the run's logs), fails that document only."""
    try:
        yield
    except PartitionError as error:
        failures.append(error)
    except Exception as exc:  # noqa: BLE001 - one document's surprise must not stop the rest
        context.log.exception(f"document {key}: unexpected {type(exc).__name__}")
        failures.append(PartitionError(key, document_path(registry, key), "internal_error",
                                       f"{type(exc).__name__}: {exc}"))


def data_version(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Upstream:
    """The materialization of an upstream partition that a value was computed from."""

    asset_key: dg.AssetKey
    version: str
    storage_id: int
    metadata: dict  # its metadata values, e.g. the quality gate's outcome
    tags: dict  # its provenance tags: code version, input data versions


def latest_upstream(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> Upstream | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    event = records[0].asset_materialization
    return Upstream(asset_key, event.tags[DATA_VERSION_TAG], records[0].storage_id,
                    {k: v.value for k, v in event.metadata.items()}, dict(event.tags))


def record(
    context: dg.AssetExecutionContext,
    store: AssetStore,
    asset_key: dg.AssetKey,
    partition: str,
    value: object,
    metadata: dict,
    version: str,
    code_version: str,
    upstream: tuple[Upstream | None, ...] = (),
) -> None:
    """Store one partition's value and log its materialization with the provenance tags
    Dagster writes for an output (code version, data version, the upstream versions it was
    computed from), so staleness in the UI works per partition as for any asset."""
    path = store.write(asset_key, partition, value)
    tags = {DATA_VERSION_TAG: version, CODE_VERSION_TAG: code_version, USER_VERSION_TAG: "true"}
    for up in filter(None, upstream):
        name = up.asset_key.to_user_string()
        tags[INPUT_VERSION_TAG.format(name)] = up.version
        tags[INPUT_POINTER_TAG.format(name)] = str(up.storage_id)
    context.log_event(
        dg.AssetMaterialization(
            asset_key=asset_key,
            partition=partition,
            metadata={**metadata, "path": dg.MetadataValue.path(str(path))},
            tags=tags,
        )
    )


def log_check(context: dg.AssetExecutionContext, evaluation: dg.AssetCheckEvaluation) -> None:
    """Log one partition's check evaluation tied to the materialization it judges: the
    partition's latest, which this step has just logged (log_event writes it at once).
    Without that target Dagster never counts a partition's evaluation as current: the
    check's Partitions tab reads "Missing" and `all_deps_blocking_checks_passed` never
    lets a partition through. An evaluation with no materialization of this run to judge
    (the asset was not stored) is logged as it is. Checks not selected are not logged."""
    check_key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
    if check_key not in context.selected_asset_check_keys:
        return
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=evaluation.asset_key,
                              asset_partitions=[evaluation.partition]), limit=1).records
    if records and records[0].run_id == context.run.run_id:
        latest = records[0]
        evaluation = dg.AssetCheckEvaluation(
            asset_key=evaluation.asset_key, check_name=evaluation.check_name,
            passed=evaluation.passed, metadata=evaluation.metadata,
            severity=evaluation.severity, description=evaluation.description,
            blocking=evaluation.blocking, partition=evaluation.partition,
            target_materialization_data=TargetMaterialization(
                storage_id=latest.storage_id, run_id=latest.run_id,
                timestamp=latest.timestamp))
    context.log_event(evaluation)


def check_outputs(context: dg.AssetExecutionContext) -> Iterator[dg.Output]:
    """One empty output per selected check: the evaluations were logged per partition
    (log_check), and without these Dagster logs that the step "did not yield expected
    outputs" for every check on every run."""
    for check_key in context.selected_asset_check_keys:
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
            check_key))


def raise_failures(failures: list[PartitionError], attempted: int) -> None:
    if not failures:
        return
    documents = len({f.partition for f in failures})
    if len(failures) == 1:
        [only] = failures
        description = str(only)
        metadata = {"document": only.partition, "path": only.path,
                    "error_class": only.error_class, "reason": only.reason}
    else:
        description = f"{documents} of {attempted} documents failed:\n" + "\n".join(
            f"- {', '.join(f.assets) + ': ' if f.assets else ''}{f}" for f in failures
        )
        metadata = {"error_classes": dg.MetadataValue.json(
            dict(Counter(f.error_class for f in failures)))}
    metadata["failures"] = dg.MetadataValue.json([
        {"document": f.partition, "path": f.path, "error_class": f.error_class,
         "reason": f.reason, "assets": list(f.assets)} for f in failures
    ])
    metadata["attempted"] = attempted
    metadata["failed"] = documents
    # Bad input stays bad: retrying the step would only repeat these errors.
    raise dg.Failure(description=description, metadata=metadata, allow_retries=False)


def partition_batches(
    ordered_keys: list[str], selected: list[str], max_per_run: int
) -> list[list[str]]:
    """Contiguous stretches of `selected` in partition order, at most `max_per_run` long:
    each is one run over the range batch[0]..batch[-1]."""
    wanted = set(selected)
    batches: list[list[str]] = []
    run: list[str] = []
    for key in ordered_keys:
        if key in wanted and len(run) < max_per_run:
            run.append(key)
            continue
        if run:
            batches.append(run)
        run = [key] if key in wanted else []
    if run:
        batches.append(run)
    return batches
