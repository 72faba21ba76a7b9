"""What the CLI prints: one line per document, the recurring themes, retrieval results."""

import dagster as dg

from assets.catalog import THEME_CATALOG_KEY, ThemeCatalog
from pipeline_defs.definitions import defs
from pipeline_defs.graph_removal import in_graph
from pipeline_defs.runs import Outcome, graph_enabled, latest_metadata
from resources.neo4j.retrieve import RetrievedChunk
from resources.storage import UNPARTITIONED, AssetStore


def _ok_of(meta: dict | None) -> str:
    """"ok/items" of an LLM asset's partition, from its quality-gate metadata."""
    if not meta:
        return "-"
    items = meta.get("items", 0)
    return f"{items - meta.get('failed_items_count', 0)}/{items}"


def print_summary(instance: dg.DagsterInstance, outcomes: list[Outcome]) -> None:
    width = max([len("document"), *(len(o.key) for o in outcomes)])
    header = (f"{'document':<{width}}  {'status':<10} {'format':<6} {'chunks':>6} "
              f"{'metadata':>9} {'embedded':>9} {'themes':>6} {'extracted':>9} "
              f"{'graph E/R':>9}")
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        if outcome.status == "failed":
            detail = outcome.detail
            print(f"{outcome.key:<{width}}  {'FAILED':<10} {detail['error_class']}: "
                  f"{detail['reason']}")
            continue
        meta = {name: latest_metadata(instance, name, outcome.key) or {}
                for name in ("documents", "chunks", "chunk_metadata", "chunk_embeddings",
                             "document_themes", "graph_extraction", "neo4j_graph")}
        graph = meta["neo4j_graph"]
        written = f"{graph['entities']}/{graph['relationships']}" if graph and \
            in_graph(instance, outcome.key) else "-"
        print(
            f"{outcome.key:<{width}}  {outcome.status:<10} "
            f"{meta['documents'].get('format', '?'):<6} {meta['chunks'].get('chunks', 0):>6} "
            f"{_ok_of(meta['chunk_metadata']):>9} {_ok_of(meta['chunk_embeddings']):>9} "
            f"{meta['document_themes'].get('themes_kept', '-'):>6} "
            f"{_ok_of(meta['graph_extraction']):>9} {written:>9}"
        )
    failed = sum(o.status == "failed" for o in outcomes)
    done = sum(o.status == "ok" for o in outcomes)
    fresh = sum(o.status == "up-to-date" for o in outcomes)
    print(f"\n{len(outcomes)} documents: {done} materialized, {fresh} up to date, {failed} failed")
    if failed:
        print("Failed runs are in the Dagster UI (make dev) with their logs; "
              "re-run with --log-level INFO to see them here.")
    print_top_themes()
    if graph_enabled() and not failed:
        print("\ngraph: written to Neo4j; ask it with `docgraph ask \"a question\"`")
    elif graph_enabled():
        print("\ngraph: written for the documents that did not fail")
    else:
        print("\ngraph: not written (NEO4J_URI is not set): `scripts/neo4j.sh start` runs a "
              "local Neo4j and prints its URI; export NEO4J_URI=<it> and run this again")


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
