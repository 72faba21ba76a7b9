"""Running the jobs in-process for the CLI: what needs a run, batches like a backfill,
and what came of each document."""

import time

import dagster as dg
import sqlalchemy.exc

from assets.batch import partition_batches
from assets.dagster_compat import (
    RANGE_END_TAG,
    RANGE_START_TAG,
)
from assets.keys import (
    DOCUMENTS_PER_RUN,
    LLM_POOL,
    NEO4J_POOL,
)
from assets.partitions import documents_partitions
from assets.upstream import latest_upstream
from pipeline_defs import run_launch
from pipeline_defs.chain_processes import ChainHelpers, deal, llm_share, outcome_from_json
from pipeline_defs.definitions import defs
from pipeline_defs.ingest_ahead import IngestAhead
from pipeline_defs.jobs import CHAIN_JOBS
from pipeline_defs.outcomes import (
    Outcome,
    StageOutcome,
    gate_states,
    materialized_in,
    outcome,
    run_failures,
    stage_outcomes,
)
from pipeline_defs.run_launch import launch
from pipeline_defs.staleness import (
    SPECS,
    catalog_outdated,
    chain_assets,
    chain_jobs,
    stale_stage,
)
from resources.llm.resource import LLMResource
from resources.registry import DocumentRegistry


def registry() -> DocumentRegistry:
    return defs.resources["registry"]


def latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict | None:
    latest = latest_upstream(instance, dg.AssetKey(asset), key)
    return latest.metadata if latest else None


POOLS = (LLM_POOL, NEO4J_POOL)


def ensure_pools(instance: dg.DagsterInstance) -> None:
    """Create our pools' rows before any run needs them. A run creates a pool's row when it
    first claims a slot, and two runs doing that at the same moment on Postgres make one of
    them fail inside Dagster (a unique-key race); several `docgraph` processes started
    together hit exactly that. Creating it here, retried, leaves the runs nothing to race on."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    for pool in POOLS:
        for attempt in range(5):
            if pool in storage.get_concurrency_keys():
                break
            try:
                storage.initialize_concurrency_limit_to_default(pool)
            except sqlalchemy.exc.DBAPIError:  # another process created it meanwhile
                time.sleep(0.05 * (attempt + 1))


def materialize(
    instance: dg.DagsterInstance, keys: list[str], force: bool = False,
    batch_size: int = DOCUMENTS_PER_RUN, log_level: str = "CRITICAL",
    ingest_ahead: bool = True, processes: int = 1, route: str | None = None,
) -> list[Outcome]:
    """The chain over `keys` (`chain`), then the theme catalog if anything changed. With
    `processes` > 1 the documents' batches are dealt to that many processes at once
    (pipeline_defs/chain_processes.py)."""
    ensure_pools(instance)
    options = dict(force=force, batch_size=batch_size, log_level=log_level,
                   ingest_ahead=ingest_ahead, route=route)
    first = first_stale_jobs(instance, keys, force)
    shares = []
    if processes > 1 and not instance.is_ephemeral:  # deal only what needs a run
        shares = deal([k for k in instance.get_dynamic_partitions(documents_partitions.name)
                       if k in first], batch_size, processes)
    if len(shares) < 2:
        outcomes = chain(instance, keys, first, **options)
    else:
        dealt = {k for share in shares for k in share}
        helpers = ChainHelpers(instance, shares[1:], first, processes, options,
                               run_launch.settings.actor)
        try:
            # this process also reports the documents that needed nothing
            outcomes = chain(instance, [*shares[0], *(k for k in keys if k not in dealt)],
                             first, llm=llm_share(processes), **options)
            results = helpers.results()
        finally:
            helpers.close()
        for share, answer in results:
            if answer is None:  # its helper died: run them here
                outcomes += chain(instance, share, first, **options)
            else:
                outcomes += [outcome_from_json(o) for o in answer["outcomes"]]
                run_launch.launched.extend(answer["runs"])
    if (any(o.status != "up-to-date" for o in outcomes)
            or catalog_outdated(instance, defs.resources["store"], registry())):
        rebuild_catalog(instance, log_level)
    by_key = {o.key: o for o in outcomes}
    return [by_key[key] for key in keys]


def first_stale_jobs(instance: dg.DagsterInstance, keys: list[str], force: bool
                     ) -> dict[str, int]:
    """{document: the index in chain_jobs() of its first stale job}, for the documents
    that need a run (all of them, from the first job, with `force`)."""
    jobs = chain_jobs()
    first = {}
    for key in keys:
        stale = ("ingestion_job", "forced") if force else stale_stage(instance, registry(), key)
        if stale:
            first[key] = jobs.index(stale[0])
    return first


def chain(
    instance: dg.DagsterInstance, keys: list[str], first: dict[str, int] | None = None,
    force: bool = False, batch_size: int = DOCUMENTS_PER_RUN, log_level: str = "CRITICAL",
    ingest_ahead: bool = True, llm: LLMResource | None = None, route: str | None = None,
) -> list[Outcome]:
    """Run the chain's jobs in-process, in order, over the `keys` that need them, from
    each document's first stale step (`first`: as first_stale_jobs gives it, computed if
    not given), batched into ranges like a backfill (a document is not given to a job that
    needs what failed for it); each document's outcome. With `ingest_ahead`, the first batch
    is split into a small opening batch and the rest (`opening_batch`), and batches after
    the opening one are ingested by a helper process while this one enriches
    (pipeline_defs/ingest_ahead.py). `llm`: this process's share of the LLM limits, if it
    has one. `route`: the enrichment's route (sync, batch, auto), its batches waited for
    here (assets/batch_route.py)."""
    jobs = chain_jobs()
    if first is None:
        first = first_stale_jobs(instance, keys, force)
    first = {key: first[key] for key in keys if key in first}
    todo = list(first)
    chain_names = [k.to_user_string() for k in chain_assets()]
    ordered = instance.get_dynamic_partitions(documents_partitions.name)
    # the steps before a document's first stale one are current: they count as done
    done: dict[str, set[str]] = {key: {a.to_user_string() for job in jobs[:index]
                                       for a in CHAIN_JOBS[job]} for key, index in first.items()}
    failed: dict[str, dict[str, StageOutcome]] = {}
    needs = {job: {d.asset_key.to_user_string() for k in CHAIN_JOBS[job] for d in SPECS[k].deps}
             for job in jobs}
    run_config = _quiet(log_level)
    resources = {"llm": llm} if llm else {}
    ingest_ahead = ingest_ahead and not instance.is_ephemeral
    outer_batches = partition_batches(ordered, todo, batch_size)
    if ingest_ahead:
        outer_batches = opening_batch(outer_batches, first, (llm or defs.resources["llm"])
                                      .settings().max_concurrency)
    # ingestion is the first job and needs nothing another job makes: known up front
    later = [batch for outer in outer_batches[1:] for batch in partition_batches(
        ordered, [k for k in outer if first[k] == 0], batch_size)]
    ahead = (IngestAhead(instance, later, run_config, run_launch.settings.actor)
             if ingest_ahead and later else None)
    try:
        for number, outer in enumerate(outer_batches):
            for index, job in enumerate(jobs):
                wanted = [k for k in outer
                          if first[k] <= index and not needs[job] & set(failed.get(k, {}))]
                for batch in partition_batches(ordered, wanted, batch_size):
                    run_id = ahead.next_run_id() if ahead and number and not index else None
                    run_id = run_id or launch_batch(instance, job, batch,
                                                    job_config(job, run_config, route),
                                                    resources).run_id
                    for key, assets in materialized_in(instance, run_id).items():
                        done.setdefault(key, set()).update(assets)
                    assets = [k.to_user_string() for k in CHAIN_JOBS[job]]
                    for key, stages in run_failures(instance, run_id, batch, assets).items():
                        for name, stage in stages.items():
                            failed.setdefault(key, {}).setdefault(name, stage)
    finally:
        if ahead:
            ahead.close()
    gates = gate_states(instance, chain_names, todo)
    return [outcome(key, stage_outcomes(instance, key, chain_names, done.get(key, set()),
                                        failed.get(key, {}), gates[key]))
            if key in gates else Outcome(key, "up-to-date", {}) for key in keys]


# The opening batch's size: at least this many documents, and at least the concurrency.
MIN_OPENING_BATCH = 16


def opening_batch(outer_batches: list[list[str]], first: dict[str, int], concurrency: int
                  ) -> list[list[str]]:
    """The first batch split so that its head is small: the provider waits for the first
    batch's ingestion (~33 ms a document) before the first call, and the ingest-ahead
    helper ingests the rest of it meanwhile. The head is max(16, concurrency) documents:
    enough to fill the provider's slots, and at ~22 calls a document it keeps them busy
    for longer than the helper takes to start and ingest the next batch (~6 s at 200 ms a
    call). Only when the whole head starts from ingestion, and the tail is no smaller."""
    size = max(MIN_OPENING_BATCH, concurrency)
    if not outer_batches or len(outer_batches[0]) < 2 * size:
        return outer_batches
    head, tail = outer_batches[0][:size], outer_batches[0][size:]
    if any(first[key] for key in head):
        return outer_batches
    return [head, tail, *outer_batches[1:]]


def launch_batch(instance: dg.DagsterInstance, job: str, batch: list[str], run_config: dict,
                 resources: dict | None = None) -> dg.ExecuteInProcessResult:
    """One run of `job` over the range batch[0]..batch[-1] (`resources` replace the
    definitions' own)."""
    return launch(instance, defs.resolve_job_def(job), raise_on_error=False,
                  tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
                  run_config=run_config, resources=resources or None)


def job_config(job: str, run_config: dict, route: str | None) -> dict:
    """`run_config`, with the enrichment step's route if one is given; the CLI runs in
    the foreground, so the step waits for its batches (LLM_ROUTE=batch too)."""
    if job != "enrichment_job":
        return run_config
    step = {"batch_wait": True, **({"route": route} if route else {})}
    return {**run_config, "ops": {"enrichment": {"config": step}}}


def rebuild_catalog(instance: dg.DagsterInstance, log_level: str = "CRITICAL") -> None:
    result = launch(instance, defs.resolve_job_def("catalog_job"),
                    run_config=_quiet(log_level), raise_on_error=False)
    if not result.success:
        print(f"docgraph: rebuilding theme_catalog failed (run {result.run_id}); see its "
              "logs in the UI (make dev) or re-run with --log-level INFO")


def _quiet(log_level: str) -> dict:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}
