"""Command line for docgraph without the UI.

    docgraph add FILES...            register documents as partitions
    docgraph remove KEYS...          drop partitions (the files stay)
    docgraph list                    registered documents and their latest status
    docgraph materialize [KEYS...]   run the chain's jobs in-process (all partitions by default;
                                     up-to-date ones are skipped unless --force)
    docgraph demo [FOLDER]           add every sample document, materialize, summarise
    docgraph ask "QUESTION"          the nearest chunks in the Neo4j graph, with their
                                     entities and one-hop neighbours

`python -m pipeline_defs.cli` is the same. Uses the instance in $DAGSTER_HOME.
"""

import argparse
import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import dagster as dg

from assets.keys import DOCUMENTS_PER_RUN
from assets.partitions import documents_partitions
from pipeline_defs import run_launch
from pipeline_defs.definitions import defs
from pipeline_defs.graph_removal import in_graph, remove_from_graph
from pipeline_defs.llm_usage import usage_line
from pipeline_defs.report import print_answers, print_summary
from pipeline_defs.runs import latest_metadata, materialize, rebuild_catalog, registry
from pipeline_defs.slot_wait import SlotWaitTimeout
from resources.llm import EmbedItem
from resources.llm.resource import LLMResource
from resources.neo4j.retrieve import RetrievedChunk, nearest_chunks
from resources.neo4j.schema import vector_dimensions
from resources.neo4j.settings import CONNECTION_ERRORS, Neo4jSettings
from resources.neo4j.store import GraphWriter
from resources.paths import dagster_home, project_root
from resources.registry import (
    SUPPORTED_SUFFIXES,
    RegisteredDocument,
    supported_files,
)

__all__ = ["add", "ask", "main", "materialize"]


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
    docs = registry().register(files)
    keys = [d.key for d in docs]
    known = set(instance.get_dynamic_partitions(documents_partitions.name))
    new = [k for k in keys if k not in known]
    # Dagster recommends adding dynamic partitions in chunks.
    for i in range(0, len(new), 1000):
        instance.add_dynamic_partitions(documents_partitions.name, new[i : i + 1000])
    return docs


def ask(question: str, k: int = 3) -> list[RetrievedChunk]:
    """Embed the question as the chunks were (same model, and the index's size), then the
    nearest chunks through Neo4j's vector index."""
    if k < 1:
        raise SystemExit("docgraph ask: -k must be at least 1")
    settings = Neo4jSettings.from_env()
    try:
        with settings.driver() as driver:
            driver.verify_connectivity()
            dimensions = vector_dimensions(driver, settings.database)
            if dimensions is None:
                raise SystemExit(f"docgraph ask: the graph at {settings.uri} has no chunks yet: "
                                 "run `docgraph materialize` with NEO4J_URI set")
            vector = _embed(question, dimensions)
            return nearest_chunks(driver, vector, k, database=settings.database)
    except CONNECTION_ERRORS as exc:
        raise SystemExit(f"docgraph ask: Neo4j at {settings.uri}: {exc} (start it with "
                         "`scripts/neo4j.sh start`, or set NEO4J_URI)") from exc


def _embed(text: str, dimensions: int) -> list[float]:
    llm: LLMResource = defs.resources["llm"]

    async def embed(size: int | None):
        async with llm.engine() as engine:
            [result], _ = await engine.run_all([EmbedItem("question", [text], size)])
            return result

    result = asyncio.run(embed(None))
    if result.ok and len(result.value[0]) != dimensions:  # chunks embedded at another size
        result = asyncio.run(embed(dimensions))
    if not result.ok:
        raise SystemExit(f"docgraph ask: embedding the question failed: {result.error_class}: "
                         f"{result.error}")
    return result.value[0]


def remove(instance: dg.DagsterInstance, keys: list[str]) -> int:
    """Drop partitions: first their contribution to the graph, if they were ever written
    there (wherever NEO4J_URI points, by default the local server; if it cannot be reached,
    nothing changes), then the partitions, then the theme catalog is rebuilt without them."""
    in_graph_now = [k for k in keys if in_graph(instance, k)]
    if in_graph_now:
        settings = Neo4jSettings.from_env()
        with settings.driver() as driver:
            try:
                driver.verify_connectivity()
            except CONNECTION_ERRORS as exc:
                raise SystemExit(
                    f"docgraph remove: {len(in_graph_now)} of these documents are in the graph "
                    f"at {settings.uri}, which cannot be reached ({exc}); nothing was removed: "
                    "start it (scripts/neo4j.sh start) or set NEO4J_URI") from exc
            remove_from_graph(instance, GraphWriter(driver, database=settings.database),
                              in_graph_now)
    registry().remove(keys)
    for key in keys:
        instance.delete_dynamic_partition(documents_partitions.name, key)
    rebuild_catalog(instance)
    graph = f", {len(in_graph_now)} of them from the graph" if in_graph_now else ""
    print(f"removed {len(keys)} partition(s){graph}; their files are untouched")
    return 0


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


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="also re-run up-to-date documents")
    parser.add_argument("--batch-size", type=int, default=DOCUMENTS_PER_RUN,
                        help=f"documents per run (default {DOCUMENTS_PER_RUN})")
    parser.add_argument("--log-level", default="CRITICAL",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        help="run logs to show (default: none; the summary reports failures)")
    parser.add_argument("--no-ingest-ahead", dest="ingest_ahead", action="store_false",
                        help="ingest every batch in this process, not the later ones in a "
                        "helper process while this one enriches")
    parser.add_argument("--processes", type=_positive, default=1,
                        help="run the chain in N processes at once, each with 1/N of the "
                        "LLM concurrency and rates (default 1; 2 uses a second core at "
                        "high LLM_MAX_CONCURRENCY)")
    parser.add_argument("--route", choices=["sync", "batch", "flex", "auto"],
                        help="the enrichment's route (default LLM_ROUTE, else sync): batch "
                        "sends its calls through the provider's Batch API at half the price "
                        "and waits for them here, printing progress (interrupted, a second "
                        "run picks the same batches up); flex asks with service_tier=flex")
    _slot_wait_option(parser)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text}")
    return int(text)


def _slot_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slot-wait-seconds", type=float, default=600.0,
                        help="how long to wait for a free pool slot before giving up "
                        "(default 600; 0 waits as long as it takes)")


def main(argv: list[str] | None = None) -> int:
    """The command line. The signal dispositions it sets are put back on return, so that
    calling it in-process (tests, a notebook) leaves the caller's own handling alone."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGPIPE, signal.SIGINT,
                                                    signal.SIGTERM)}
    try:
        # `docgraph list | head` should end quietly, like any Unix tool.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return _main(argv)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="docgraph", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_add = sub.add_parser("add", help="register files or folders as document partitions")
    p_add.add_argument("paths", nargs="+", type=Path)
    p_add.add_argument("--materialize", action="store_true", help="also run the chain's jobs")
    _run_options(p_add)
    p_rm = sub.add_parser("remove", help="remove document partitions (files are kept)")
    p_rm.add_argument("keys", nargs="+")
    _slot_wait_option(p_rm)
    sub.add_parser("list", help="registered documents")
    p_mat = sub.add_parser("materialize", help="run the chain's jobs (ingestion, enrichment, "
                           "graph) in-process, then the theme catalog")
    p_mat.add_argument("keys", nargs="*", help="partition keys (default: all)")
    _run_options(p_mat)
    p_demo = sub.add_parser("demo", help="add a folder of documents, materialize, summarise")
    p_demo.add_argument("folder", nargs="?", type=Path,
                        help="default: the project's data/sample")
    _run_options(p_demo)
    p_ask = sub.add_parser("ask", help="the chunks nearest a question, from the Neo4j graph")
    p_ask.add_argument("question")
    p_ask.add_argument("-k", type=int, default=3, help="chunks to show (default 3)")
    args = parser.parse_args(argv)
    if args.command == "ask":
        print_answers(args.question, ask(args.question, args.k))
        return 0
    if hasattr(args, "slot_wait_seconds"):  # the commands that launch runs
        run_launch.install_stop_handlers()
        run_launch.settings.slot_wait_seconds = args.slot_wait_seconds
        run_launch.settings.actor = f"docgraph {args.command}"
    try:
        return _command(args)
    except run_launch.Interrupted as stop:
        print(f"docgraph: stopped by {stop}", file=sys.stderr)
        return stop.exit_code
    except SlotWaitTimeout as timeout:
        print(timeout, file=sys.stderr)
        return timeout.exit_code


def _command(args: argparse.Namespace) -> int:
    with _instance() as instance:
        known = instance.get_dynamic_partitions(documents_partitions.name)
        if args.command == "remove":
            unknown = sorted(set(args.keys) - set(known))
            if unknown:
                raise SystemExit(f"docgraph: no such document partition: {', '.join(unknown)}")
            return remove(instance, args.keys)
        if args.command == "list":
            for doc in registry().entries():
                meta = latest_metadata(instance, "chunks", doc.key)
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
        outcomes = materialize(instance, keys, args.force, args.batch_size, args.log_level,
                               args.ingest_ahead, args.processes, args.route)
        print_summary(instance, outcomes)
        if line := usage_line(instance, run_launch.launched):
            print(line)
        return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
