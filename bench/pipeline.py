"""The whole per-document chain against a slow provider (report only, no assertions).

    python bench/pipeline.py [--docs 100] [--kb 4] [--latency-ms 200] [--json PATH]

Generated documents go through `docgraph_job` (ingest, chunk, chunk metadata, embeddings,
themes with 3 votes, graph extraction) on a throwaway SQLite instance, against the
fault-free simulator on loopback with a fixed latency per call and no response cache, once
per stage concurrency. Rows: documents/s, LLM calls/s, and efficiency = calls/s ÷ the
ideal (concurrency ÷ latency) — how much of the provider's capacity the chain uses, run
overhead and the stages' sequencing included.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chunking import make_document  # noqa: E402


def run_chain(folder: Path, concurrency: int, latency_ms: float) -> dict:
    import dagster as dg

    from assets.batch import RANGE_END_TAG, RANGE_START_TAG
    from assets.pipeline import document_pipeline
    from pipeline_defs import cli
    from pipeline_defs.definitions import defs
    from resources.llm.offline.server import SimulatorServer
    from resources.llm.offline.simulator import SimConfig
    from resources.llm.resource import LLMResource

    stages = {s: {"concurrency": concurrency} for s in
              ("chunk_metadata", "chunk_embeddings", "document_themes", "graph_extraction")}
    assets = ["documents", "chunks", *stages]
    home = tempfile.mkdtemp(prefix="docgraph-bench-")
    os.environ.update(DOCGRAPH_HOME=home, OPENAI_API_KEY="bench")
    with dg.instance_for_test() as instance, SimulatorServer(
        SimConfig(latency_ms=latency_ms, latency_jitter_ms=latency_ms / 4)
    ) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path="off",
                          max_concurrency=concurrency)
        keys = [d.key for d in cli.add(instance, [folder])]
        started = time.perf_counter()
        for i in range(0, len(keys), 100):  # runs of 100 documents, as backfills make them
            batch = keys[i : i + 100]
            result = dg.materialize(
                [document_pipeline], selection=assets, instance=instance,
                resources={**defs.resources, "llm": llm},
                run_config={"ops": {"document_pipeline": {"config": stages}}},
                tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1]},
                raise_on_error=False)
            assert result.success, f"bench run {result.run_id} failed"
        seconds = time.perf_counter() - started
        calls = sim.stats()["requests"]
    ideal = concurrency / (latency_ms / 1000)
    return {"concurrency": concurrency, "docs": len(keys), "seconds": round(seconds, 1),
            "docs_per_s": round(len(keys) / seconds, 2), "llm_calls": calls,
            "calls_per_s": round(calls / seconds, 1),
            "efficiency": round(calls / seconds / ideal, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--kb", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated, per stage")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rng = random.Random(7)
    folder = Path(tempfile.mkdtemp(prefix="docgraph-bench-docs-"))
    for i in range(args.docs):
        (folder / f"report-{i:04d}.md").write_text(make_document(rng, args.kb * 1000))
    rows = [run_chain(folder, int(c), args.latency_ms) for c in args.concurrency.split(",")]

    print(f"{'concurrency':>11} {'docs':>5} {'seconds':>8} {'docs/s':>7} {'LLM calls':>10} "
          f"{'calls/s':>8} {'efficiency':>10}")
    for row in rows:
        print(f"{row['concurrency']:>11} {row['docs']:>5} {row['seconds']:>8} "
              f"{row['docs_per_s']:>7} {row['llm_calls']:>10} {row['calls_per_s']:>8} "
              f"{row['efficiency']:>10}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "pipeline", "latency_ms": args.latency_ms, "doc_kb": args.kb,
            "cpu_count": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
