"""What the CLI prints: one line per document, the recurring themes, retrieval results."""

from collections import Counter

import dagster as dg

from assets.catalog import ThemeCatalog
from assets.keys import THEME_CATALOG
from pipeline_defs.definitions import defs
from pipeline_defs.graph_removal import in_graph
from pipeline_defs.outcomes import Outcome
from pipeline_defs.runs import latest_metadata
from resources.neo4j.retrieve import RetrievedChunk
from resources.neo4j.settings import GRAPH_VARIABLE, graph_setting, graph_written
from resources.storage import UNPARTITIONED, AssetStore


def _ok_of(meta: dict | None) -> str:
    """"ok/items" of an LLM asset's partition, from its quality-gate metadata."""
    if not meta:
        return "-"
    items = meta.get("items", 0)
    return f"{items - meta.get('failed_items_count', 0)}/{items}"


# The summary's columns: (header, asset, the cell of a stage that came through).
COLUMNS = [
    ("chunks", "chunks", lambda m, _: str(m.get("chunks", 0))),
    ("metadata", "chunk_metadata", lambda m, _: _ok_of(m)),
    ("embedded", "chunk_embeddings", lambda m, _: _ok_of(m)),
    ("themes", "document_themes", lambda m, _: str(m.get("themes_kept", "-"))),
    ("extracted", "graph_extraction", lambda m, _: _ok_of(m)),
    ("graph E/R", "neo4j_graph",
     lambda m, written: f"{m['entities']}/{m['relationships']}" if m and written else "-"),
]
# How a stage that did not come through shows in its column.
MARKS = {"gate_failed": " gate✗", "failed": "failed", "not_run": "-"}


def _cell(outcome: Outcome, asset: str, meta: dict, show, written: bool) -> str:
    stage = outcome.stages.get(asset)
    if stage is None or stage.state == "ok":
        return show(meta, written)
    if stage.state == "gate_failed":
        return show(meta, written) + MARKS["gate_failed"]
    return MARKS[stage.state]


def print_summary(instance: dg.DagsterInstance, outcomes: list[Outcome]) -> None:
    """One line per document with each stage's result, the reason for every stage that
    did not come through, a total line per stage, and where the graph stands."""
    graph = graph_written(by_daemon=False)
    columns = [c for c in COLUMNS if graph or c[1] != "neo4j_graph"]
    width = max([len("document"), *(len(o.key) for o in outcomes)])
    header = f"{'document':<{width}}  {'status':<10} {'format':<6} " + " ".join(
        f"{title:>10}" for title, _, _ in columns)
    print(header)
    print("-" * len(header))
    in_graph_now: set[str] = set()
    for outcome in outcomes:
        ingestion = outcome.stages.get("chunks")
        if ingestion is not None and ingestion.state == "failed":
            print(f"{outcome.key:<{width}}  {'FAILED':<10} {ingestion.error_class}: "
                  f"{ingestion.reason}")
            continue
        written = graph and in_graph(instance, outcome.key)
        if written:
            in_graph_now.add(outcome.key)
        meta = {asset: latest_metadata(instance, asset, outcome.key) or {}
                for asset in ("documents", *(asset for _, asset, _ in columns))}
        status = outcome.status
        if status == "failed":  # some stages came through, some did not
            status = "partial"
        cells = " ".join(f"{_cell(outcome, asset, meta[asset], show, written):>10}"
                         for _, asset, show in columns)
        print(f"{outcome.key:<{width}}  {status:<10} {meta['documents'].get('format', '?'):<6} "
              f"{cells}")
    _print_reasons(outcomes)
    _print_stage_totals(outcomes, [asset for _, asset, _ in columns])
    failed = sum(o.status == "failed" for o in outcomes)
    done = sum(o.status == "ok" for o in outcomes)
    fresh = sum(o.status == "up-to-date" for o in outcomes)
    print(f"\n{len(outcomes)} documents: {done} materialized through every stage, {fresh} up "
          f"to date, {failed} failed or held back by a gate")
    if failed:
        print("Failed runs are in the Dagster UI (make dev) with their logs; "
              "re-run with --log-level INFO to see them here.")
    print_top_themes()
    if not graph:
        print(f"\ngraph: not written ({GRAPH_VARIABLE}=off)" if graph_setting() else
              "\ngraph: not written (NEO4J_URI is not set): `scripts/neo4j.sh start` runs a "
              "local Neo4j and prints its URI; export NEO4J_URI=<it> and run this again")
        return
    missing = len(outcomes) - len(in_graph_now)
    print(f"\ngraph: {len(in_graph_now)} of {len(outcomes)} documents are in Neo4j"
          + (f"; {missing} are not (see neo4j_graph above)" if missing else "")
          + "; ask it with `docgraph ask \"a question\"`")


def _print_reasons(outcomes: list[Outcome]) -> None:
    """Why each stage that did not come through did not (ingestion failures are on the
    document's own line)."""
    lines = [f"  {o.key}: {asset}: {stage.error_class}: {stage.reason}"
             for o in outcomes for asset, stage in o.stages.items()
             if stage.state in ("failed", "gate_failed") and asset not in ("documents", "chunks")]
    if lines:
        print("\nstages that did not come through:")
        print("\n".join(lines))


def _print_stage_totals(outcomes: list[Outcome], assets: list[str]) -> None:
    print(f"\n{'stage':<18} {'ok':>5} {'gate failed':>12} {'failed':>7} {'not run':>8} "
          f"{'up to date':>11}")
    for asset in assets:
        counts = Counter(o.stages[asset].state if asset in o.stages else "up_to_date"
                         for o in outcomes)
        name = "ingestion" if asset == "chunks" else asset
        print(f"{name:<18} {counts['ok']:>5} {counts['gate_failed']:>12} {counts['failed']:>7} "
              f"{counts['not_run']:>8} {counts['up_to_date']:>11}")


def print_top_themes(top: int = 8) -> None:
    store: AssetStore = defs.resources["store"]
    if not store.exists(THEME_CATALOG, UNPARTITIONED, ThemeCatalog):
        return
    catalog = store.read(THEME_CATALOG, UNPARTITIONED, ThemeCatalog)
    recurring = [t for t in catalog.themes if t.document_count > 1]
    print(f"\ntheme_catalog: {len(catalog.themes)} canonical themes from {catalog.mentions} "
          f"document themes; {len(recurring)} recur across documents"
          + (":" if recurring else "."))
    for theme in recurring[:top]:
        merged = [s for s in theme.signatures if s != theme.theme_id]
        also = f"  (also: {', '.join(merged)})" if merged else ""
        print(f"  {theme.theme_id:<28} {theme.document_count:>3} documents{also}")




def print_answers(question: str, chunks: list[RetrievedChunk]) -> None:
    """The chunks nearest a question, each with its document, entities and neighbours."""
    print(f"question: {question}\n")
    for rank, chunk in enumerate(chunks, 1):
        title = chunk.document_title or chunk.document_path
        print(f"{rank}. {chunk.document_key}  (chunk {chunk.index}, score {chunk.score:.3f})"
              f"\n   {title}")
        text = " ".join(chunk.text.split())
        print(f"   {text[:300]}{'…' if len(text) > 300 else ''}")
        for entity in chunk.entities[:8]:
            hops = ", ".join(f"-{n.relationship}->{n.name}" if n.outgoing
                             else f"<-{n.relationship}-{n.name}" for n in entity.neighbours[:5])
            print(f"   • {entity.name} ({entity.type}){': ' + hops if hops else ''}")
        print()
