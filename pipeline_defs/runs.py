"""Running the jobs in-process for the CLI: what needs a run, batches like a backfill,
and what came of each document."""

import os
import time

import dagster as dg
import sqlalchemy.exc

from assets.batch import (
    CODE_VERSION_TAG,
    DOCUMENTS_PER_RUN,
    INPUT_VERSION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    latest_upstream,
    partition_batches,
)
from assets.catalog import THEME_CATALOG_KEY, ThemeCatalog
from assets.enrichment import GATE_METADATA
from assets.graph import NEO4J_GRAPH_SPEC, NEO4J_POOL
from assets.ingestion import CHUNKS_SPEC
from assets.partitions import documents_partitions
from assets.pipeline import LLM_POOL, PIPELINE_SPECS
from pipeline_defs.definitions import defs
from pipeline_defs.graph_removal import removed_since
from pipeline_defs.outcomes import (
    Outcome,
    StageOutcome,
    materialized_in,
    outcome,
    run_failures,
    stage_outcomes,
)
from pipeline_defs.run_launch import launch
from resources.registry import DocumentRegistry
from resources.storage import UNPARTITIONED, AssetStore


def graph_enabled() -> bool:
    """The CLI writes the Neo4j graph only when told where it is (`make demo` starts a
    loopback server and sets NEO4J_URI when Java is present)."""
    return bool(os.environ.get("NEO4J_URI"))


def registry() -> DocumentRegistry:
    return defs.resources["registry"]


def latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict | None:
    latest = latest_upstream(instance, dg.AssetKey(asset), key)
    return latest.metadata if latest else None


def chain_specs() -> list[dg.AssetSpec]:
    """The per-document assets the CLI keeps current, in the order they are computed."""
    return [*PIPELINE_SPECS, NEO4J_GRAPH_SPEC] if graph_enabled() else PIPELINE_SPECS


def stale_reason(instance: dg.DagsterInstance, registry: DocumentRegistry,
                 key: str) -> str | None:
    """Why `key` needs a run (None if every asset of the chain is current): its file
    changed, an asset is missing, its code version changed, an input it was computed from
    has a newer version, or its quality gate failed (a re-run retries only failed items)."""
    entry = registry.lookup(key)
    if entry is None or not entry.path.exists():
        return "file missing"
    source_sha256 = registry.register([entry.path])[0].sha256  # re-hashed only if it changed
    versions: dict[dg.AssetKey, str] = {}
    for spec in chain_specs():
        latest = latest_upstream(instance, spec.key, key)
        name = spec.key.to_user_string()
        if latest is None or (spec.key == NEO4J_GRAPH_SPEC.key
                              and removed_since(instance, key, latest.storage_id)):
            return f"{name} missing"
        if spec.key == CHUNKS_SPEC.key and latest.metadata.get("source_sha256") != source_sha256:
            return "file changed"
        if latest.tags.get(CODE_VERSION_TAG) != spec.code_version:
            return f"{name} code changed"
        for dep in spec.deps:
            if latest.tags.get(INPUT_VERSION_TAG.format(dep.asset_key.to_user_string())) \
                    != versions[dep.asset_key]:
                return f"{name} inputs changed"
        if latest.metadata.get(GATE_METADATA) == "failed":
            return f"{name} gate failed"
        versions[spec.key] = latest.version
    return None


POOLS = (LLM_POOL, NEO4J_POOL)
# What each job the CLI runs materializes (a crashed step fails all of them).
JOB_ASSETS = {"docgraph_job": [spec.key.to_user_string() for spec in PIPELINE_SPECS],
              "graph_job": [NEO4J_GRAPH_SPEC.key.to_user_string()]}


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
) -> list[Outcome]:
    """Run docgraph_job (and graph_job, if the graph is enabled) in-process over the `keys`
    that need it, batched into ranges like a backfill, then rebuild the theme catalog if
    anything changed."""
    todo = [k for k in keys if force or stale_reason(instance, registry(), k)]
    ensure_pools(instance)
    jobs = ["docgraph_job", "graph_job"] if graph_enabled() else ["docgraph_job"]
    chain = [spec.key.to_user_string() for spec in chain_specs()]
    ordered = instance.get_dynamic_partitions(documents_partitions.name)
    done: dict[str, set[str]] = {}
    failed: dict[str, dict[str, StageOutcome]] = {}
    for batch in partition_batches(ordered, todo, batch_size):
        for job in jobs:
            result = launch(
                instance, defs.resolve_job_def(job), raise_on_error=False,
                tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
                run_config=_quiet(log_level),
            )
            for key, assets in materialized_in(instance, result.run_id).items():
                done.setdefault(key, set()).update(assets)
            for key, stages in run_failures(result, batch, JOB_ASSETS[job]).items():
                for name, stage in stages.items():
                    failed.setdefault(key, {}).setdefault(name, stage)
    if todo or catalog_outdated(instance):
        rebuild_catalog(instance, log_level)
    wanted = set(todo)
    return [outcome(key, stage_outcomes(instance, key, chain, done.get(key, set()),
                                        failed.get(key, {})))
            if key in wanted else Outcome(key, "up-to-date", {}) for key in keys]


def catalog_outdated(instance: dg.DagsterInstance) -> bool:
    """Missing, or still listing documents that are no longer registered."""
    store: AssetStore = defs.resources["store"]
    if not instance.get_latest_materialization_event(THEME_CATALOG_KEY) or not store.exists(
            THEME_CATALOG_KEY, UNPARTITIONED, ThemeCatalog):
        return True
    catalog = store.read(THEME_CATALOG_KEY, UNPARTITIONED, ThemeCatalog)
    registered = {d.key for d in registry().entries()}
    return any(not set(t.documents) <= registered for t in catalog.themes)


def rebuild_catalog(instance: dg.DagsterInstance, log_level: str = "CRITICAL") -> None:
    result = launch(instance, defs.resolve_job_def("catalog_job"),
                    run_config=_quiet(log_level), raise_on_error=False)
    if not result.success:
        print(f"docgraph: rebuilding theme_catalog failed (run {result.run_id}); see its "
              "logs in the UI (make dev) or re-run with --log-level INFO")


def _quiet(log_level: str) -> dict:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}
