"""Command line for docgraph without the UI.

    docgraph add FILES...            register documents as partitions
    docgraph remove KEYS...          drop partitions (the files stay)
    docgraph list                    registered documents and their latest status
    docgraph materialize [KEYS...]   run docgraph_job in-process (all partitions by default;
                                     up-to-date ones are skipped unless --force)
    docgraph demo [FOLDER]           add every sample document, materialize, summarise

`python -m pipeline_defs.cli` is the same. Uses the instance in $DAGSTER_HOME.
"""

import argparse
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

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
from assets.partitions import documents_partitions
from assets.pipeline import PIPELINE_SPECS
from pipeline_defs.definitions import defs
from resources.paths import dagster_home, project_root
from resources.registry import (
    SUPPORTED_SUFFIXES,
    DocumentRegistry,
    RegisteredDocument,
    supported_files,
)
from resources.storage import UNPARTITIONED, AssetStore


@dataclass
class Outcome:
    key: str
    status: str  # ok | up-to-date | failed
    detail: dict


def _registry() -> DocumentRegistry:
    return defs.resources["registry"]


def _latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def add(instance: dg.DagsterInstance, paths: list[Path]) -> list[RegisteredDocument]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(supported_files(path))
        elif not path.exists():
            raise SystemExit(f"docgraph: {path}: no such file")
        elif not path.is_file():
            raise SystemExit(f"docgraph: {path}: not a regular file")
        elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise SystemExit(
                f"docgraph: {path}: unsupported type; expected {', '.join(SUPPORTED_SUFFIXES)}"
            )
        else:
            files.append(path)
    docs = _registry().register(files)
    keys = [d.key for d in docs]
    known = set(instance.get_dynamic_partitions(documents_partitions.name))
    new = [k for k in keys if k not in known]
    # Dagster recommends adding dynamic partitions in chunks.
    for i in range(0, len(new), 1000):
        instance.add_dynamic_partitions(documents_partitions.name, new[i : i + 1000])
    return docs


def _stale_reason(instance: dg.DagsterInstance, registry: DocumentRegistry,
                  key: str) -> str | None:
    """Why `key` needs a run (None if every asset of the chain is current): its file
    changed, an asset is missing, its code version changed, an input it was computed from
    has a newer version, or its quality gate failed (a re-run retries only failed items)."""
    entry = registry.lookup(key)
    if entry is None or not entry.path.exists():
        return "file missing"
    chunks = _latest_metadata(instance, "chunks", key)
    if chunks is None or chunks.get("source_sha256") != registry.register([entry.path])[0].sha256:
        return "file changed"  # register() re-hashes only if the size or mtime changed
    versions: dict[dg.AssetKey, str] = {}
    for spec in PIPELINE_SPECS:
        latest = latest_upstream(instance, spec.key, key)
        name = spec.key.to_user_string()
        if latest is None:
            return f"{name} missing"
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


def materialize(
    instance: dg.DagsterInstance, keys: list[str], force: bool = False,
    batch_size: int = DOCUMENTS_PER_RUN, log_level: str = "CRITICAL",
) -> list[Outcome]:
    """Run docgraph_job in-process over `keys` that need it, batched into ranges like a
    backfill, then rebuild the theme catalog if anything changed."""
    registry = _registry()
    job = defs.resolve_job_def("docgraph_job")
    todo = [k for k in keys if force or _stale_reason(instance, registry, k)]
    ordered = instance.get_dynamic_partitions(documents_partitions.name)
    done: set[str] = set()
    failed: dict[str, dict] = {}
    for batch in partition_batches(ordered, todo, batch_size):
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
            run_config=_quiet(log_level),
        )
        # Batch steps log their materializations one by one; read them back from the run.
        done.update(
            entry.dagster_event.partition
            for entry in instance.all_logs(
                result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            )
            if entry.dagster_event.asset_key == PIPELINE_SPECS[-1].key
        )
        failed.update(_failures(result, batch))
    if todo or not instance.get_latest_materialization_event(THEME_CATALOG_KEY):
        defs.resolve_job_def("catalog_job").execute_in_process(
            instance=instance, run_config=_quiet(log_level))
    return [Outcome(key, "up-to-date" if key not in todo else "ok" if key in done else
                    "failed", failed.get(key, {})) for key in keys]


def _quiet(log_level: str) -> dict:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def _failures(result: dg.ExecuteInProcessResult, keys: list[str]) -> dict[str, dict]:
    """{document key: {error_class, reason}} for the documents of a run that failed: from
    the step's Failure metadata, or the error itself when the step crashed."""
    if result.success:
        return {}
    failures = {}
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and "failures" in user.metadata:
            for item in user.metadata["failures"].value:
                failures[item["document"]] = {
                    "error_class": item["error_class"],
                    "reason": f"{item['path']}: {item['reason']}",
                }
        else:
            message = user.description if user else data.error.message if data.error else "?"
            for key in keys:
                failures.setdefault(key, {"error_class": "step_error",
                                          "reason": message.strip().splitlines()[0]})
    for key in keys:  # a run that failed before the step started
        failures.setdefault(key, {"error_class": "run_error",
                                  "reason": f"run {result.run_id} failed; see its logs"})
    return failures


def _instance() -> dg.DagsterInstance:
    """The instance in $DAGSTER_HOME, by default the project's .dagster/, created with the
    project's dagster.yaml."""
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)  # Dagster insists on an absolute path
    home.mkdir(parents=True, exist_ok=True)
    settings = project_root() / "dagster.yaml"
    if not (home / "dagster.yaml").exists() and settings.exists():
        shutil.copy(settings, home / "dagster.yaml")
    return dg.DagsterInstance.get()


def _ok_of(meta: dict | None) -> str:
    """"ok/items" of an LLM asset's partition, from its quality-gate metadata."""
    if not meta:
        return "-"
    items = meta.get("items", 0)
    return f"{items - meta.get('failed_items_count', 0)}/{items}"


def print_summary(instance: dg.DagsterInstance, outcomes: list[Outcome]) -> None:
    width = max([len("document"), *(len(o.key) for o in outcomes)])
    header = (f"{'document':<{width}}  {'status':<10} {'format':<6} {'chunks':>6} "
              f"{'metadata':>9} {'embedded':>9} {'themes':>6}")
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        if outcome.status == "failed":
            detail = outcome.detail
            print(f"{outcome.key:<{width}}  {'FAILED':<10} {detail['error_class']}: "
                  f"{detail['reason']}")
            continue
        meta = {name: _latest_metadata(instance, name, outcome.key) or {}
                for name in ("documents", "chunks", "chunk_metadata", "chunk_embeddings",
                             "document_themes")}
        print(
            f"{outcome.key:<{width}}  {outcome.status:<10} "
            f"{meta['documents'].get('format', '?'):<6} {meta['chunks'].get('chunks', 0):>6} "
            f"{_ok_of(meta['chunk_metadata']):>9} {_ok_of(meta['chunk_embeddings']):>9} "
            f"{meta['document_themes'].get('themes_kept', '-'):>6}"
        )
    failed = sum(o.status == "failed" for o in outcomes)
    done = sum(o.status == "ok" for o in outcomes)
    fresh = sum(o.status == "up-to-date" for o in outcomes)
    print(f"\n{len(outcomes)} documents: {done} materialized, {fresh} up to date, {failed} failed")
    if failed:
        print("Failed runs are in the Dagster UI (make dev) with their logs; "
              "re-run with --log-level INFO to see them here.")
    print_top_themes()


def print_top_themes(top: int = 8) -> None:
    store: AssetStore = defs.resources["store"]
    if not store.exists(THEME_CATALOG_KEY, UNPARTITIONED, ThemeCatalog):
        return
    catalog = store.read(THEME_CATALOG_KEY, UNPARTITIONED, ThemeCatalog)
    recurring = [t for t in catalog.themes if t.document_count > 1]
    print(f"\ntheme_catalog: {len(catalog.themes)} canonical themes from {catalog.mentions} "
          f"document themes; {len(recurring)} recur across documents"
          + (":" if recurring else "."))
    for theme in recurring[:top]:
        merged = [s for s in theme.signatures if s != theme.theme_id]
        also = f"  (also: {', '.join(merged)})" if merged else ""
        print(f"  {theme.theme_id:<28} {theme.document_count:>3} documents{also}")


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="also re-run up-to-date documents")
    parser.add_argument("--batch-size", type=int, default=DOCUMENTS_PER_RUN,
                        help=f"documents per run (default {DOCUMENTS_PER_RUN})")
    parser.add_argument("--log-level", default="CRITICAL",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        help="run logs to show (default: none; the summary reports failures)")


def main(argv: list[str] | None = None) -> int:
    # `docgraph list | head` should end quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="docgraph", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_add = sub.add_parser("add", help="register files or folders as document partitions")
    p_add.add_argument("paths", nargs="+", type=Path)
    p_add.add_argument("--materialize", action="store_true", help="also run docgraph_job")
    _run_options(p_add)
    p_rm = sub.add_parser("remove", help="remove document partitions (files are kept)")
    p_rm.add_argument("keys", nargs="+")
    sub.add_parser("list", help="registered documents")
    p_mat = sub.add_parser("materialize", help="run docgraph_job (ingest, enrich, themes) "
                           "in-process, then the theme catalog")
    p_mat.add_argument("keys", nargs="*", help="partition keys (default: all)")
    _run_options(p_mat)
    p_demo = sub.add_parser("demo", help="add a folder of documents, materialize, summarise")
    p_demo.add_argument("folder", nargs="?", type=Path,
                        help="default: the project's data/sample")
    _run_options(p_demo)
    args = parser.parse_args(argv)

    with _instance() as instance:
        known = instance.get_dynamic_partitions(documents_partitions.name)
        if args.command == "remove":
            unknown = sorted(set(args.keys) - set(known))
            if unknown:
                raise SystemExit(f"docgraph: no such document partition: {', '.join(unknown)}")
            _registry().remove(args.keys)
            for key in args.keys:
                instance.delete_dynamic_partition(documents_partitions.name, key)
            print(f"removed {len(args.keys)} partition(s); their files are untouched")
            return 0
        if args.command == "list":
            for doc in _registry().entries():
                meta = _latest_metadata(instance, "chunks", doc.key)
                state = f"{meta['chunks']} chunks" if meta else "not materialized"
                print(f"{doc.key:<50} {state:<18} {doc.path}")
            return 0
        if args.command == "add":
            docs = add(instance, args.paths)
            for doc in docs:
                print(f"{doc.key}\t{doc.path}")
            if not args.materialize:
                return 0
            keys = [d.key for d in docs]
        elif args.command == "demo":
            folder = args.folder or project_root() / "data" / "sample"
            keys = [d.key for d in add(instance, [folder])]
        else:
            unknown = sorted(set(args.keys) - set(known))
            if unknown:
                raise SystemExit(f"docgraph: no such document partition: {', '.join(unknown)}")
            keys = args.keys or known
        outcomes = materialize(instance, keys, args.force, args.batch_size, args.log_level)
        print_summary(instance, outcomes)
        return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
