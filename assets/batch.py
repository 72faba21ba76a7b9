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
import functools
import gc
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from assets.dagster_compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    INPUT_POINTER_TAG,
    INPUT_VERSION_TAG,
    USER_VERSION_TAG,
    TargetMaterialization,
    check_states,
    latest_materialization_ids,
)
from assets.keys import (
    CHUNKS,
    DOCUMENTS_PER_RUN,
    GATED,
    success_rate_key,
)
from resources.errors import DocgraphError, ErrorClass
from resources.storage import AssetStore


def batch_step(**definition) -> Callable[[Callable], dg.AssetsDefinition]:
    """A step over ranges of documents: any subset of its assets can be selected, and
    backfills give it DOCUMENTS_PER_RUN documents per run. The step's body (a generator)
    runs with the heap it started with frozen (`heap_frozen`)."""
    def decorate(body: Callable[..., Iterator]) -> dg.AssetsDefinition:
        @functools.wraps(body)  # Dagster reads the parameters through __wrapped__
        def step(*args, **kwargs) -> Iterator:
            with heap_frozen():
                yield from body(*args, **kwargs)

        return dg.multi_asset(
            can_subset=True,
            backfill_policy=dg.BackfillPolicy.multi_run(
                max_partitions_per_run=DOCUMENTS_PER_RUN),
            **definition)(step)
    return decorate


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Python's cyclic garbage collector leaves alone what exists when the block starts.

    A step allocates rows by the hundred thousand (the graph step's mentions, the
    enrichment's results), and each full collection walked them and the whole of Dagster's
    heap again: a third of the graph step's Python time (bench/graph_step.py). Garbage
    that exists at the start is collected first, and the frozen objects are handed back
    to the collector at the end, so nothing is kept alive for longer than the step.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass(frozen=True)
class PartitionError(DocgraphError):
    """One document failed a step: which, its file, why (error class and reason)."""

    partition: str
    path: str
    error_class: ErrorClass
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
    return PartitionError(key, document_path(registry, key), ErrorClass.NOT_MATERIALIZED,
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
        failures.append(PartitionError(key, document_path(registry, key),
                                       ErrorClass.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))


def gate_failure(registry, key: str, name: str) -> PartitionError:
    return PartitionError(
        key, document_path(registry, key), ErrorClass.UPSTREAM_CHECK_FAILED,
        f"{name}_success_rate did not pass for this document (its failed items are in that "
        f"check's metadata): re-materialize {name} for this document first")


def data_version(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Upstream:
    """The materialization of an upstream partition that a value was computed from."""

    asset_key: dg.AssetKey
    version: str
    storage_id: int
    run_id: str
    timestamp: float
    metadata: dict  # its metadata values
    tags: dict  # its provenance tags: code version, input data versions


def latest_upstream(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> Upstream | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return _upstream(asset_key, records[0]) if records else None


def latest_upstreams(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                     partitions: list[str]) -> dict[str, Upstream]:
    """`latest_upstream` of many partitions in two queries, of one in one (those never
    materialized are left out)."""
    if len(partitions) == 1:  # the enrichment reads each document's inputs as it is ready
        [partition] = partitions
        upstream = latest_upstream(instance, asset_key, partition)
        return {partition: upstream} if upstream else {}
    ids = latest_materialization_ids(instance, asset_key, partitions)
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(ids.values())),
        limit=len(ids)).records
    return {record.partition_key: _upstream(asset_key, record) for record in records}


def _upstream(asset_key: dg.AssetKey, record: dg.EventLogRecord) -> Upstream:
    event = record.asset_materialization
    return Upstream(asset_key, event.tags[DATA_VERSION_TAG], record.storage_id, record.run_id,
                    record.timestamp, {k: v.value for k, v in event.metadata.items()},
                    dict(event.tags))


@dataclass(frozen=True)
class UpstreamData:
    """One document's inputs to a step: the stored frames and the materializations they
    came from (for provenance tags)."""

    frames: dict[dg.AssetKey, pd.DataFrame]
    provenance: tuple[Upstream, ...]


def read_upstream(
    context: dg.AssetExecutionContext, store: AssetStore, registry,
    asset_keys: list[dg.AssetKey], keys: list[str],
) -> tuple[dict[str, UpstreamData], list[PartitionError]]:
    """The upstream frames of each partition of `keys`, and an error for each partition
    that has none, or whose upstream's success-rate gate Dagster does not show as passed
    (automation holds such documents back; this refuses them in a run launched by hand)."""
    ready, errors = {}, []
    latest = {asset_key: latest_upstreams(context.instance, asset_key, keys)
              for asset_key in asset_keys}
    gates = {asset_key: check_states(context.instance, success_rate_key(asset_key), keys)
             for asset_key in asset_keys if asset_key in GATED}
    for key in keys:
        frames, provenance = {}, []
        for asset_key in asset_keys:
            name = asset_key.to_user_string()
            upstream = latest[asset_key].get(key)
            if upstream is None or not store.exists(asset_key, key, pd.DataFrame):
                errors.append(not_materialized(registry, key, name))
                break
            if asset_key in gates and not gates[asset_key][key]:
                errors.append(gate_failure(registry, key, name))
                break
            frames[asset_key] = store.read(asset_key, key, pd.DataFrame)
            provenance.append(upstream)
        else:
            if stale := _out_of_step(frames):
                errors.append(PartitionError(
                    key, document_path(registry, key), ErrorClass.UPSTREAM_STALE,
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
) -> Upstream:
    """Store one partition's value and log its materialization with the provenance tags
    Dagster writes for an output (code version, data version, the upstream versions it was
    computed from), so staleness in the UI works per partition as for any asset. Returns
    the materialization as logged (log_event writes it at once), for the checks that
    judge it and the assets computed from it."""
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
    logged = latest_upstream(context.instance, asset_key, partition)
    if logged is None or logged.run_id != context.run.run_id:
        raise RuntimeError(f"the materialization of {asset_key.to_user_string()} "
                           f"{partition} was not written to the instance")
    return logged


def log_check(context: dg.AssetExecutionContext, evaluation: dg.AssetCheckEvaluation,
              target: Upstream | None) -> None:
    """Log one partition's check evaluation tied to the materialization it judges (what
    `record` returned). Without that target Dagster never counts a partition's evaluation
    as current: the check's Partitions tab reads "Missing" and
    `all_deps_blocking_checks_passed` never lets the partition through. An evaluation with
    nothing stored to judge is logged without one. Checks not selected are not logged."""
    check_key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
    if check_key not in context.selected_asset_check_keys:
        return
    if target is not None:
        # @record classes have no _replace: rebuilt through the public constructor
        evaluation = dg.AssetCheckEvaluation(
            asset_key=evaluation.asset_key, check_name=evaluation.check_name,
            passed=evaluation.passed, metadata=evaluation.metadata,
            severity=evaluation.severity, description=evaluation.description,
            blocking=evaluation.blocking, partition=evaluation.partition,
            target_materialization_data=TargetMaterialization(
                storage_id=target.storage_id, run_id=target.run_id,
                timestamp=target.timestamp))
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
        # str(): Dagster's metadata takes plain words, not our enum (resources/errors.py)
        metadata = {"document": only.partition, "path": only.path,
                    "error_class": str(only.error_class), "reason": only.reason}
    else:
        description = f"{documents} of {attempted} documents failed:\n" + "\n".join(
            f"- {', '.join(f.assets) + ': ' if f.assets else ''}{f}" for f in failures
        )
        metadata = {"error_classes": dg.MetadataValue.json(
            dict(Counter(str(f.error_class) for f in failures)))}
    metadata["failures"] = dg.MetadataValue.json([
        {"document": f.partition, "path": f.path, "error_class": str(f.error_class),
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
