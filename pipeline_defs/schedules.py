"""The schedules, both on by default (`make dev` runs them with the daemon):

- `sweep_schedule`, daily at 03:00 UTC: every document that is missing an asset, failed,
  was held back by a gate, or is stale (pipeline_defs/staleness.py) gets a run of the
  first step it needs; automation takes it on from there. Cheap: answers already paid for
  come from the response cache, so a re-run asks the provider only for what failed.
- `catalog_schedule`, hourly: rebuilds theme_catalog when it is missing, document themes
  changed since its last build, or it lists removed documents (automation rebuilds it too
  while the sensor runs; this catches the rest).

Change the cron strings here, or stop either in the UI (Automation tab); a stopped
schedule stays stopped across restarts.
"""

from collections import defaultdict

import dagster as dg

from assets.batch import partition_batches
from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
from assets.keys import DOCUMENTS_PER_RUN
from assets.partitions import documents_partitions
from pipeline_defs.jobs import CHAIN_JOBS, catalog_job
from pipeline_defs.staleness import catalog_outdated, stale_stage
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

SWEEP_CRON = "0 3 * * *"
CATALOG_CRON = "0 * * * *"


@dg.schedule(
    cron_schedule=SWEEP_CRON,
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(*(k for keys in CHAIN_JOBS.values() for k in keys)),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: re-runs, from the first step they need, the documents that are "
    "missing an asset, failed, were held back by a gate, or are stale.",
)
def sweep_schedule(context: dg.ScheduleEvaluationContext, registry: DocumentRegistry):
    ordered = context.instance.get_dynamic_partitions(documents_partitions.name)
    by_job: dict[str, list[str]] = defaultdict(list)
    reasons: dict[str, int] = defaultdict(int)
    for key in ordered:
        if stale := stale_stage(context.instance, registry, key, by_daemon=True):
            by_job[stale[0]].append(key)
            reasons[stale[1]] += 1
    if not by_job:
        return dg.SkipReason(f"all {len(ordered)} documents are current")
    context.log.info(f"sweep: {sum(reasons.values())} of {len(ordered)} documents need a run: "
                     f"{dict(reasons)}")
    return [
        dg.RunRequest(
            asset_selection=CHAIN_JOBS[job],
            tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1],
                  "docgraph/trigger": "sweep"},
        )
        for job, keys in by_job.items()
        for batch in partition_batches(ordered, keys, DOCUMENTS_PER_RUN)
    ]


@dg.schedule(
    cron_schedule=CATALOG_CRON,
    execution_timezone="UTC",
    job=catalog_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: rebuilds theme_catalog if it is missing, document themes changed "
    "since its last build, or it lists removed documents.",
)
def catalog_schedule(context: dg.ScheduleEvaluationContext, store: AssetStore,
                     registry: DocumentRegistry):
    if reason := catalog_outdated(context.instance, store, registry):
        context.log.info(f"rebuilding theme_catalog: {reason}")
        return dg.RunRequest()
    return dg.SkipReason("theme_catalog is current")
