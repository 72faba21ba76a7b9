"""Neo4j write throughput of GraphWriter by batch size (report only, no assertions).

    python bench/neo4j_write.py [--entities 20000] [--relationships 100000]
                                [--batch-sizes 1000,5000,10000] [--json PATH]

For each batch size, on an emptied database: one document whose chunks mention every
entity once and assert the relationships (random endpoints and types, a fixed seed), written
with `replace_document`; then the same document written again (every row already there).
Rows: relationships per second in the relationship step and over the whole call (checking
the rows, reading what the document held before, chunks, entities with their mentions,
relationships, clean-up), and the mean time of a relationship batch in the first and last
tenth of the batches, which shows whether batches slow down as the graph grows. Last, the
same relationships as --docs documents written one after another with the default batch
size (the pipeline's shape; the decile columns are then per-document times). Uses
NEO4J_URI if set, else starts the server with scripts/neo4j.sh (and stops it afterwards if
it started it).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resources.neo4j import (  # noqa: E402
    RELATION_TYPES,
    ChunkRow,
    DocumentRow,
    EntityRow,
    GraphWriter,
    Mention,
    Neo4jSettings,
    RelationRow,
    WriteStats,
    delete_all,
    drop_schema,
)
from resources.neo4j.exclusive import exclusive_use  # noqa: E402

TYPES = ["Person", "Organization", "Product", "Location", "Event", "Concept"]
DOC = DocumentRow(key="bench", path="bench/generated.md", title="Generated benchmark document")
CHUNKS = 1_000


def workload(entities: int, relationships: int, seed: int = 42) -> tuple:
    rng = random.Random(seed)
    chunks = [ChunkRow(f"bench#{i}", DOC.key, i, f"generated chunk {i}") for i in range(CHUNKS)]
    entity_rows = [EntityRow(f"{TYPES[i % len(TYPES)]}:entity {i}", f"Entity {i}",
                             TYPES[i % len(TYPES)]) for i in range(entities)]
    mentions = [Mention(chunks[i % CHUNKS].id, e.key) for i, e in enumerate(entity_rows)]
    rels: dict[tuple, RelationRow] = {}
    while len(rels) < relationships:
        source, target = rng.sample(entity_rows, 2)
        row = RelationRow(source.key, target.key, rng.choice(RELATION_TYPES), DOC.key,
                          chunks[rng.randrange(CHUNKS)].id)
        rels[(row.source_key, row.target_key, row.type, row.chunk_id)] = row
    return chunks, entity_rows, mentions, list(rels.values())


def split_into_documents(entity_rows: list[EntityRow], rels: list[RelationRow],
                         docs: int) -> list[tuple]:
    """The same relationships as `docs` documents of 100 relationships per chunk; each
    document mentions the entities its relationships use, so documents share entities."""
    by_key = {e.key: e for e in entity_rows}
    result = []
    for d in range(docs):
        document = DocumentRow(key=f"bench-{d:04d}", path=f"bench/{d:04d}.md", title=None)
        mine = rels[d::docs]
        chunks = [ChunkRow(f"{document.key}#{i}", document.key, i, f"chunk {i}")
                  for i in range(max(1, len(mine) // 100))]
        doc_rels, mentions = [], set()
        for j, r in enumerate(mine):
            chunk = chunks[j % len(chunks)].id
            doc_rels.append(RelationRow(r.source_key, r.target_key, r.type, document.key, chunk))
            mentions |= {Mention(chunk, r.source_key), Mention(chunk, r.target_key)}
        used = sorted({m.entity_key for m in mentions})
        result.append((document, chunks, [by_key[k] for k in used], sorted(
            mentions, key=lambda m: (m.chunk_id, m.entity_key)), doc_rels))
    return result


def decile_means(batch_seconds: list[float]) -> tuple[float, float]:
    tenth = max(1, len(batch_seconds) // 10)
    return (statistics.mean(batch_seconds[:tenth]) * 1000,
            statistics.mean(batch_seconds[-tenth:]) * 1000)


def row_for(batch_size: int, run: str, stats: WriteStats, relationships: int) -> dict:
    step = stats.steps.get("relationships")
    first, last = decile_means(step.batch_seconds) if step else (0.0, 0.0)
    rel_seconds = step.seconds if step else 0.0
    return {
        "batch_size": batch_size, "run": run, "relationships": relationships,
        "batches": stats.batches, "retries": stats.retries,
        "relationship_seconds": round(rel_seconds, 3),
        "total_seconds": round(stats.seconds, 3),
        "relationships_per_s": round(relationships / rel_seconds) if rel_seconds else None,
        "end_to_end_per_s": round(relationships / stats.seconds),
        "first_decile_batch_ms": round(first, 1), "last_decile_batch_ms": round(last, 1),
        "nodes_created": stats.nodes_created,
        "relationships_created": stats.relationships_created,
        "entity_seconds": round(stats.steps["entities"].seconds, 3),
        "read_current_seconds": round(stats.steps["read_current"].seconds, 3),
    }


def run(settings: Neo4jSettings, args: argparse.Namespace) -> list[dict]:
    chunks, entities, mentions, rels = workload(args.entities, args.relationships)
    rows = []
    with settings.driver() as driver:
        delete_all(driver)
        drop_schema(driver)
        writer = GraphWriter(driver)
        writer.ensure_schema(args.dimensions)
        for batch_size in args.batch_sizes:
            delete_all(driver)
            for run_name in ("first write", "rewrite"):
                stats = writer.replace_document(DOC, chunks, entities, mentions, rels,
                                                batch_size=batch_size)
                rows.append(row_for(batch_size, run_name, stats, len(rels)))
                print(f"  batch {batch_size:>6}, {run_name}: {stats.seconds:.1f} s",
                      file=sys.stderr)
        if args.docs:
            rows.append(run_documents(writer, split_into_documents(entities, rels, args.docs)))
        delete_all(driver)  # leave the server as small as we found it,
        drop_schema(driver)  # and with no vector index of this benchmark's size
    return rows


def run_documents(writer: GraphWriter, documents: list[tuple]) -> dict:
    """The pipeline's shape: one replace_document per document, one after another."""
    delete_all(writer.driver)
    seconds, relationships, retries = [], 0, 0
    started = time.perf_counter()
    for document in documents:
        stats = writer.replace_document(*document)
        seconds.append(stats.seconds)
        relationships += len(document[4])
        retries += stats.retries
    total = time.perf_counter() - started
    first, last = decile_means(seconds)
    print(f"  {len(documents)} documents: {total:.1f} s", file=sys.stderr)
    return {"batch_size": writer.batch_size, "run": f"{len(documents)} docs",
            "relationships": relationships, "batches": None, "retries": retries,
            "relationship_seconds": None, "total_seconds": round(total, 3),
            "relationships_per_s": None, "end_to_end_per_s": round(relationships / total),
            "first_decile_batch_ms": round(first, 1), "last_decile_batch_ms": round(last, 1),
            "entity_seconds": None, "read_current_seconds": None,
            "document_p50_ms": round(statistics.median(seconds) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--relationships", type=int, default=100_000)
    parser.add_argument("--batch-sizes", default="1000,5000,10000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--docs", type=int, default=100,
                        help="also write the relationships as this many documents (0: skip)")
    parser.add_argument("--dimensions", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    script = REPO / "scripts" / "neo4j.sh"
    uri = os.environ.get("NEO4J_URI")
    # The benchmark empties the database: never while tests (or another run) use it.
    with exclusive_use(uri or os.environ.get("DOCGRAPH_NEO4J_DIR", "/tmp/docgraph-neo4j")):
        started_here = False
        if uri:
            settings = Neo4jSettings.from_env()
        else:
            was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
            t0 = time.perf_counter()
            started = subprocess.run([script, "start"], capture_output=True, text=True,
                                     check=True)
            print(f"scripts/neo4j.sh start: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            started_here = not was_running
            settings = Neo4jSettings.from_env(uri=started.stdout.strip())
        try:
            rows = run(settings, args)
        finally:
            if started_here:
                subprocess.run([script, "stop"], check=True)

    print(f"{args.relationships:,} relationships among {args.entities:,} entities, "
          f"one document, {CHUNKS:,} chunks")
    print(f"{'batch':>6} {'run':<12} {'rels/s':>8} {'end-to-end/s':>13} {'rel s':>6} "
          f"{'ent s':>6} {'read s':>7} {'total s':>8} {'1st 10% ms':>11} {'last 10% ms':>12} "
          f"{'retries':>8}")
    for r in rows:
        print(f"{r['batch_size']:>6} {r['run']:<12} {r['relationships_per_s'] or '-':>8} "
              f"{r['end_to_end_per_s']:>13} {r['relationship_seconds'] or '-':>6} "
              f"{r['entity_seconds'] or '-':>6} {r['read_current_seconds'] or '-':>7} "
              f"{r['total_seconds']:>8} {r['first_decile_batch_ms']:>11} "
              f"{r['last_decile_batch_ms']:>12} {r['retries']:>8}")
    report = {"benchmark": "neo4j_write", "entities": args.entities,
              "relationships": args.relationships, "chunks": CHUNKS,
              "cpu_count": os.cpu_count(), "server": settings.uri, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
