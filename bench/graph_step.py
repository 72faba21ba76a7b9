"""The graph step (`neo4j_graph`) end to end over a backfill (report only, no assertions).

    python bench/graph_step.py [--docs 200] [--relationships-per-doc 500]
                               [--entities 20000] [--json PATH]

Generated documents are ingested and chunked for real (`documents`, `chunks`) on a
throwaway SQLite instance; their `chunk_embeddings` and `graph_extraction` are generated
(random vectors; per document `--relationships-per-doc` relationships between names drawn
from one pool of `--entities`, so documents share entities) and stored and recorded as
materializations, so the graph step reads them as it reads the LLM's. Then `neo4j_graph`
runs over all documents in runs of 100 partitions, as a backfill batches them: once into an
empty database ("first write"), once more with nothing changed ("rewrite"), and once more
into the emptied database ("warm write": the server's JIT has compiled the write path by
then, as on a long-running server; on a server started by the benchmark the first row
includes that warm-up). Rows: relationships/s and documents/s over the runs' wall time (run
start, reading inputs, resolution, writes, read-back checks, materialization events), Neo4j
transactions (batches, retries included), the seconds spent inside GraphWriter's writes
(reading what the documents held, the writes, the clean-up; not the read-back check), the
benchmark process's CPU seconds and, when the benchmark started the server, the server's.
Uses NEO4J_URI if set, else starts the server with scripts/neo4j.sh (and stops it
afterwards if it started it): the Makefile gives it the benchmarks' own server, never the
demo's.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chunking import make_document, project_storage  # noqa: E402
from bench.simulator_process import process_cpu_seconds  # noqa: E402

DOCUMENTS_PER_RUN = 100
# The runs' event logs are the subject; their console lines (thousands) are not.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DIMENSIONS = 64
TYPES = ["Person", "Organization", "Product", "Location", "Event", "Concept"]
RELATIONS = ["WORKS_FOR", "USES", "REPORTED", "FIXED", "LOCATED_IN", "PART_OF", "RELATED_TO"]


def extraction_frames(chunks, rng: random.Random, relationships: int, entities: int):
    """Generated `chunk_embeddings` and `graph_extraction` frames for one document's
    stored chunks, in their order (the graph step checks they match the chunks)."""
    import pandas as pd

    from assets.embeddings import EMBEDDING_COLUMNS
    from assets.graph_extraction import GRAPH_COLUMNS

    ids = chunks["chunk_id"].tolist()
    per_chunk: dict[str, list[dict]] = {cid: [] for cid in ids}
    for i in range(relationships):
        source, target = rng.sample(range(entities), 2)
        per_chunk[ids[i % len(ids)]].append(
            {"source": f"Entity {source}", "target": f"Entity {target}",
             "type": rng.choice(RELATIONS), "description": ""})
    embedding_rows, graph_rows = [], []
    for chunk in chunks.itertuples():
        rels = per_chunk[chunk.chunk_id]
        names = sorted({r["source"] for r in rels} | {r["target"] for r in rels})
        found = [{"name": n, "type": TYPES[int(n.split()[1]) % len(TYPES)], "aliases": []}
                 for n in names]
        embedding_rows.append({
            "chunk_id": chunk.chunk_id, "document_key": chunk.document_key,
            "chunk_index": chunk.chunk_index,
            "embedding": [rng.uniform(-1, 1) for _ in range(DIMENSIONS)], "model": "bench",
            "dimensions": DIMENSIONS, "error_class": None, "error": None})
        graph_rows.append({
            "chunk_id": chunk.chunk_id, "document_key": chunk.document_key,
            "chunk_index": chunk.chunk_index, "entities": json.dumps(found),
            "relationships": json.dumps(rels), "n_entities": len(found),
            "n_relationships": len(rels), "error_class": None, "error": None})
    return (pd.DataFrame(embedding_rows, columns=EMBEDDING_COLUMNS),
            pd.DataFrame(graph_rows, columns=GRAPH_COLUMNS))


def prepare(instance, folder: Path, args: argparse.Namespace) -> list[str]:
    """Register, ingest and chunk the documents; store and record their generated
    embeddings and extraction, each with a passed success-rate check (the graph step
    refuses documents whose gates Dagster does not show as passed)."""
    import dagster as dg
    import pandas as pd

    from assets.dagster_compat import (
        DATA_VERSION_TAG,
        RANGE_END_TAG,
        RANGE_START_TAG,
        TargetMaterialization,
    )
    from assets.keys import CHUNK_EMBEDDINGS, CHUNKS, GRAPH_EXTRACTION, success_rate_key
    from pipeline_defs import cli
    from pipeline_defs.definitions import defs

    keys = [d.key for d in cli.add(instance, [folder])]
    for i in range(0, len(keys), DOCUMENTS_PER_RUN):
        batch = keys[i:i + DOCUMENTS_PER_RUN]
        result = defs.resolve_job_def("ingestion_job").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False,
            tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]})
        assert result.success, f"ingestion run {result.run_id} failed"
    store = defs.resources["store"]
    rng = random.Random(11)
    for key in keys:
        frames = extraction_frames(store.read(CHUNKS, key, pd.DataFrame), rng,
                                   args.relationships_per_doc, args.entities)
        for asset_key, frame in zip((CHUNK_EMBEDDINGS, GRAPH_EXTRACTION), frames,
                                    strict=True):
            store.write(asset_key, key, frame)
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key, partition=key, tags={DATA_VERSION_TAG: f"bench-{key}"}))
            [latest] = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=asset_key, asset_partitions=[key]), limit=1).records
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=asset_key, check_name=success_rate_key(asset_key).name,
                partition=key, passed=True,
                target_materialization_data=TargetMaterialization(
                    storage_id=latest.storage_id, run_id=latest.run_id,
                    timestamp=latest.timestamp)))
    return keys


def graph_runs(instance, keys: list[str], neo4j_db, run: str, server_pid: int | None) -> dict:
    """`neo4j_graph` over `keys` in runs of DOCUMENTS_PER_RUN; what the runs recorded, and
    the Neo4j server's CPU seconds meanwhile when it runs here."""
    import dagster as dg

    from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
    from assets.graph import neo4j_graph
    from assets.keys import NEO4J_GRAPH
    from pipeline_defs.definitions import defs

    server_cpu = process_cpu_seconds(server_pid) if server_pid else None
    started, client_cpu = time.perf_counter(), time.process_time()
    run_ids = []
    for i in range(0, len(keys), DOCUMENTS_PER_RUN):
        batch = keys[i:i + DOCUMENTS_PER_RUN]
        result = dg.materialize([neo4j_graph], instance=instance,
                                resources={**defs.resources, "neo4j_db": neo4j_db},
                                run_config=QUIET,
                                tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
                                raise_on_error=False)
        assert result.success, f"graph run {result.run_id} failed"
        run_ids.append(result.run_id)
    seconds = time.perf_counter() - started
    client_cpu = round(time.process_time() - client_cpu, 1)
    if server_cpu is not None:
        server_cpu = round(process_cpu_seconds(server_pid) - server_cpu, 1)
    relationships = transactions = retries = write_seconds = 0.0
    for run_id in run_ids:
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            mat = event.asset_materialization
            if mat.asset_key != NEO4J_GRAPH:
                continue
            meta = {k: v.value for k, v in mat.metadata.items()}
            # Documents written together share one write's stats: each carries its share.
            share = meta.get("write_documents", 1)
            relationships += meta["relationships"]
            transactions += (meta["batches"] + meta["retries"]) / share
            retries += meta["retries"] / share
            write_seconds += meta["seconds"] / share
    print(f"  {run}: {len(keys)} documents, {seconds:.1f} s", file=sys.stderr)
    return {"run": run, "documents": len(keys), "relationships": int(relationships),
            "seconds": round(seconds, 2),
            "relationships_per_s": round(relationships / seconds),
            "documents_per_s": round(len(keys) / seconds, 1),
            "transactions": round(transactions), "retries": round(retries),
            "neo4j_write_seconds": round(write_seconds, 2), "server_cpu_seconds": server_cpu,
            "client_cpu_seconds": client_cpu}


def run(uri: str, password: str, folder: Path, args: argparse.Namespace,
        server_pid: int | None) -> list[dict]:
    import dagster as dg

    from resources.neo4j import Neo4jSettings, delete_all, drop_schema
    from resources.neo4j.resource import Neo4jResource

    with Neo4jSettings.from_env(uri=uri, password=password).driver() as driver:
        delete_all(driver)
        drop_schema(driver)  # another benchmark's vector index has another size
    neo4j_db = Neo4jResource(uri=uri, password=password, batch_size=args.batch_size)
    dagster_home = Path(tempfile.mkdtemp(prefix="docgraph-bench-graph-dagster-"))
    # the project's dagster.yaml storage, as `make demo` and `make dev` run on
    with dg.instance_for_test(temp_dir=str(dagster_home),
                              overrides=project_storage(dagster_home)) as instance:
        keys = prepare(instance, folder, args)
        rows = [graph_runs(instance, keys, neo4j_db, name, server_pid)
                for name in ("first write", "rewrite")]
        # Once more into an emptied database, on a server whose JIT has compiled the
        # write path: what a long-running server does (the first row includes its warm-up).
        with Neo4jSettings.from_env(uri=uri, password=password).driver() as driver:
            delete_all(driver)
        rows.append(graph_runs(instance, keys, neo4j_db, "warm write", server_pid))
    with Neo4jSettings.from_env(uri=uri, password=password).driver() as driver:
        delete_all(driver)  # leave the server as small as we found it,
        drop_schema(driver)  # and with no vector index of this benchmark's size
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--relationships-per-doc", type=int, default=500)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--kb", type=int, default=4, help="text per document")
    parser.add_argument("--batch-size", type=int, default=5_000, help="rows per transaction")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from resources.neo4j.exclusive import exclusive_use

    home = tempfile.mkdtemp(prefix="docgraph-bench-graph-")
    os.environ["DOCGRAPH_HOME"] = home
    folder = Path(home) / "docs"
    folder.mkdir()
    rng = random.Random(7)
    for i in range(args.docs):
        (folder / f"report-{i:04d}.md").write_text(make_document(rng, args.kb * 1000))

    script = REPO / "scripts" / "neo4j.sh"
    uri = os.environ.get("NEO4J_URI")
    password = os.environ.get("NEO4J_PASSWORD", "docgraph-local")
    # The benchmark empties the database: never while tests (or another run) use it.
    server_dir = os.environ.get("DOCGRAPH_NEO4J_DIR", "/tmp/docgraph-neo4j")
    with exclusive_use(uri or server_dir):
        started_here, server_pid = False, None
        if not uri:
            was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
            uri = subprocess.run([script, "start"], capture_output=True, text=True,
                                 check=True).stdout.strip()
            started_here = not was_running
            pid_file = Path(server_dir, "neo4j.pid")  # scripts/neo4j.sh writes it
            server_pid = int(pid_file.read_text()) if pid_file.exists() else None
        try:
            rows = run(uri, password, folder, args, server_pid)
        finally:
            if started_here:
                subprocess.run([script, "stop"], check=True)

    print(f"neo4j_graph over {args.docs} documents ({args.relationships_per_doc} "
          f"relationships each, {args.entities:,} shared entity names), runs of "
          f"{DOCUMENTS_PER_RUN}, batch {args.batch_size}")
    print(f"{'run':<12} {'docs':>5} {'rels':>8} {'seconds':>8} {'rels/s':>8} {'docs/s':>7} "
          f"{'transactions':>13} {'retries':>8} {'write s':>8} {'client CPU s':>13} "
          f"{'server CPU s':>13}")
    for r in rows:
        server_cpu = "-" if r["server_cpu_seconds"] is None else r["server_cpu_seconds"]
        print(f"{r['run']:<12} {r['documents']:>5} {r['relationships']:>8} {r['seconds']:>8} "
              f"{r['relationships_per_s']:>8} {r['documents_per_s']:>7} "
              f"{r['transactions']:>13} {r['retries']:>8} {r['neo4j_write_seconds']:>8} "
              f"{r['client_cpu_seconds']:>13} {server_cpu:>13}")
    report = {"benchmark": "graph_step", "documents": args.docs,
              "relationships_per_document": args.relationships_per_doc,
              "entities": args.entities, "batch_size": args.batch_size,
              "cpu_count": os.cpu_count(), "server": uri, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
