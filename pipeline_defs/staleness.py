"""Which documents need a run, and from which step, and whether the theme catalog needs
rebuilding: what the CLI, the schedules and the summary agree on. A document is stale
when its file changed, an asset of its chain is missing, was made by other code, or from
inputs that changed since, or when Dagster shows one of its success-rate gates as not
passed."""

import dagster as dg

from assets.catalog import ThemeCatalog
from assets.dagster_compat import CODE_VERSION_TAG, INPUT_VERSION_TAG, check_passed
from assets.enrichment import enrichment
from assets.graph import neo4j_graph
from assets.ingestion import ingestion
from assets.keys import (
    CHUNKS,
    DOCUMENT_THEMES,
    GATED,
    NEO4J_GRAPH,
    THEME_CATALOG,
    success_rate_key,
)
from assets.upstream import latest_upstream
from pipeline_defs.graph_removal import removed_since
from pipeline_defs.jobs import CHAIN_JOBS
from resources.neo4j.settings import graph_written
from resources.registry import DocumentRegistry
from resources.storage import UNPARTITIONED, AssetStore

SPECS = {spec.key: spec for step in (ingestion, enrichment, neo4j_graph) for spec in step.specs}


def chain_jobs(*, by_daemon: bool = False) -> list[str]:
    """The jobs that keep a document current, in order; the graph's only where it is
    written (`graph_written`: by the CLI, or by the daemon's sweep)."""
    return [job for job in CHAIN_JOBS
            if job != "graph_job" or graph_written(by_daemon=by_daemon)]


def chain_assets() -> list[dg.AssetKey]:
    return [key for job in chain_jobs() for key in CHAIN_JOBS[job]]


def stale_stage(instance: dg.DagsterInstance, registry: DocumentRegistry, key: str,
                *, by_daemon: bool = False) -> tuple[str, str] | None:
    """The first job `key` needs and why (None if every asset of the chain is current):
    its file changed, an asset is missing, its code version changed, an input it was
    computed from has a newer version, or its gate failed in Dagster's check state (a
    re-run retries only the failed items: the rest come from the response cache)."""
    entry = registry.lookup(key)
    if entry is None or not entry.path.exists():
        return "ingestion_job", "file missing"
    source_sha256 = registry.register([entry.path])[0].sha256  # re-hashed only if it changed
    versions: dict[dg.AssetKey, str] = {}
    for job in chain_jobs(by_daemon=by_daemon):
        for asset_key in CHAIN_JOBS[job]:
            if reason := _stale(instance, SPECS[asset_key], key, source_sha256, versions):
                return job, reason
    return None


def _stale(instance: dg.DagsterInstance, spec: dg.AssetSpec, key: str, source_sha256: str,
           versions: dict[dg.AssetKey, str]) -> str | None:
    name = spec.key.to_user_string()
    latest = latest_upstream(instance, spec.key, key)
    if latest is None or (spec.key == NEO4J_GRAPH
                          and removed_since(instance, key, latest.storage_id)):
        return f"{name} missing"
    if spec.key == CHUNKS and latest.metadata.get("source_sha256") != source_sha256:
        return "file changed"
    if latest.tags.get(CODE_VERSION_TAG) != spec.code_version:
        return f"{name} code changed"
    for dep in spec.deps:
        if latest.tags.get(INPUT_VERSION_TAG.format(dep.asset_key.to_user_string())) \
                != versions[dep.asset_key]:
            return f"{name} inputs changed"
    if spec.key in GATED and not check_passed(instance, success_rate_key(spec.key), key):
        return f"{name} gate failed"
    versions[spec.key] = latest.version
    return None


def catalog_outdated(instance: dg.DagsterInstance, store: AssetStore,
                     registry: DocumentRegistry) -> str | None:
    """Why theme_catalog needs rebuilding (None if it is current): it is missing, document
    themes were materialized since, or it still lists documents no longer registered."""
    catalog = instance.get_latest_materialization_event(THEME_CATALOG)
    if catalog is None or not store.exists(THEME_CATALOG, UNPARTITIONED, ThemeCatalog):
        return "theme_catalog missing"
    themes = instance.fetch_materializations(DOCUMENT_THEMES, limit=1).records
    if themes and themes[0].timestamp > catalog.timestamp:
        return "document themes changed since"
    registered = {d.key for d in registry.entries()}
    stored = store.read(THEME_CATALOG, UNPARTITIONED, ThemeCatalog)
    if any(not set(t.documents) <= registered for t in stored.themes):
        return "it lists removed documents"
    return None
