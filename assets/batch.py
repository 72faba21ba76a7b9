"""Materializing a batch of partitions in one step, each partition on its own.

A run per document costs more than the work: in-process ~0.3 s, a launched run seconds
(bench/chunking.py), while reading and chunking a 20 KB document takes ~2 ms. So steps
take a range of partitions (`BackfillPolicy.multi_run`). Dagster's step outputs cover the
whole range at once, which would mark a bad document materialized along with the good
ones; batch steps therefore declare their assets skippable, write each partition through
the `AssetStore` and log one `AssetMaterialization` per partition that succeeded, with its
own metadata and data version, and its checks tied to that materialization. Partitions
that failed are reported together in one `Failure` raised after the batch
(assets/failures.py): the run fails, they show as failed in the UI, and every other
partition of the batch keeps its materialization. A partition that a run launched after
this one has taken over is left to it (`Takeovers`). What a step reads is in
assets/upstream.py.
"""

import contextlib
import functools
import gc
import hashlib
import time
from collections.abc import Callable, Iterator

import dagster as dg

from assets.dagster_compat import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    INPUT_POINTER_TAG,
    INPUT_VERSION_TAG,
    USER_VERSION_TAG,
    CheckStatus,
    TargetMaterialization,
    checks_planned_after,
    latest_materialization_row,
)
from assets.keys import DOCUMENTS_PER_RUN
from assets.upstream import Upstream, upstream_of
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


class Takeovers:
    """The partitions of a step's assets that a run planned after this one has taken over.

    Dagster judges a partition's check by the check execution of the run that planned it
    last. A run that records a partition after a newer run planned the same check (a step
    run again once its dead worker's task came back, a run still going when automation or
    a user launched another for the same document) logs an evaluation Dagster does not
    count: the UI and the gates would read the partition as never checked, for good. So
    the last planner records a partition and an older run leaves it to that run, if it
    has evaluated it already or is still going to (not finished). Read at most once a
    second: launching a run takes seconds.
    """

    REFRESH_SECONDS = 1.0

    def __init__(self, context: dg.AssetExecutionContext):
        self.context = context
        self.read_at = -self.REFRESH_SECONDS
        self.taken: dict[tuple[dg.AssetKey, str], str] = {}

    def leave(self, asset_key: dg.AssetKey, partition: str) -> bool:
        """Whether this run leaves the partition to a newer run (and says so)."""
        if time.monotonic() - self.read_at >= self.REFRESH_SECONDS:
            self._read()
        newer = self.taken.get((asset_key, partition))
        if newer:
            self.context.log.info(
                f"{asset_key.to_user_string()} {partition}: left to run {newer}, launched "
                "after this one for the same document (Dagster counts the checks of the "
                "run that planned them last)")
        return newer is not None

    def _read(self) -> None:
        instance, run_id = self.context.instance, self.context.run.run_id
        rows = checks_planned_after(instance, run_id,
                                    list(self.context.selected_asset_check_keys),
                                    list(self.context.partition_keys))
        planned = [run for *_, run, status in rows if status == CheckStatus.PLANNED]
        going = {run.run_id for run in instance.get_runs(dg.RunsFilter(run_ids=planned))
                 if not run.is_finished} if planned else set()
        self.taken = {(asset_key, partition): run for asset_key, partition, run, status in rows
                      if status != CheckStatus.PLANNED or run in going}
        self.read_at = time.monotonic()


def data_version(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


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
    the materialization as logged (log_event writes it at once; its storage id read back
    from the event log's index), for the checks that judge it and the assets computed
    from it."""
    path = store.write(asset_key, partition, value)
    tags = {DATA_VERSION_TAG: version, CODE_VERSION_TAG: code_version, USER_VERSION_TAG: "true"}
    for up in filter(None, upstream):
        name = up.asset_key.to_user_string()
        tags[INPUT_VERSION_TAG.format(name)] = up.version
        tags[INPUT_POINTER_TAG.format(name)] = str(up.storage_id)
    event = dg.AssetMaterialization(
        asset_key=asset_key,
        partition=partition,
        metadata={**metadata, "path": dg.MetadataValue.path(str(path))},
        tags=tags,
    )
    context.log_event(event)
    run_id = context.run.run_id
    logged = latest_materialization_row(context.instance, asset_key, partition, run_id)
    if logged is None:
        raise RuntimeError(f"the materialization of {asset_key.to_user_string()} "
                           f"{partition} was not written to the instance")
    storage_id, timestamp = logged
    return upstream_of(event, storage_id, run_id, timestamp)


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
