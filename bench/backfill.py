"""A backfill through the production topology (issue 11's benchmark; report only).

    python bench/backfill.py [--docs 1000] [--workers 2] [--rpm 6000] [--max-runs 4]
                             [--latency-ms 200] [--kb 2] [--no-graph] [--json PATH]

Brings `scripts/prod.sh` up in a throwaway directory (PostgreSQL database
docgraph_bench_backfill, emptied first; the daemon with `--max-runs` runs at once; the
webserver; Redis and `--workers` Celery workers), generates `--docs` documents (~`--kb` KB
each), registers them with `docgraph add`, and launches one backfill of the ingestion
assets over all of them through the webserver's GraphQL, as the UI's "Materialize" does;
automation takes each document on through enrichment, the graph and the catalog. The LLM is
our simulator in its own process, enforcing `--rpm` (its cheap answer mode, `--latency-ms`
± a quarter), with LLM_RPM = `--rpm` shared by every run through LLM_BUDGET_URL, unless
OPENAI_BASE_URL is set (then that endpoint, with LLM_RPM as given). The graph goes to
NEO4J_URI, else to the benchmarks' own Neo4j (scripts/neo4j.sh, emptied first), unless
`--no-graph` (DOCGRAPH_GRAPH=off for the topology: no graph runs are requested).

Reported: documents, materialized (every stage; with the graph, neo4j_graph too), seconds
from the launch to the last materialization, documents/s, LLM calls/s over the whole
backfill and sustained over the middle of the simulator's arrivals, calls per document,
429s, Dagster overhead per document (from each run's start to its end, the time outside
its steps, summed, ÷ documents: planning, handing steps to workers, reading their results
back, finishing the run; the run process's launch is in the run launch latency, and the
time a step of a started run waited for a slot of its pool is reported apart as pool wait:
both are queueing for limits the deployment sets) and the part of the
overhead spent waiting for a free worker (a step handed to Celery, not yet started), run launch
latency (queued -> started, median and max), lost documents (registered, never
materialized nor failed) and the Celery workers that ran steps; and where the time went:
step seconds per step, the share of the time 0, 1, 2... of each step (and runs) were
running at once, and CPU seconds by role over the backfill (bench/process_cpu.py).
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chunking import make_document  # noqa: E402
from bench.process_cpu import ProcessCpu  # noqa: E402
from bench.simulator_process import SimulatorProcess  # noqa: E402
from resources.neo4j.settings import GRAPH_VARIABLE  # noqa: E402

DATABASE = "docgraph_bench_backfill"
STAGES = ("chunks", "chunk_metadata", "chunk_embeddings", "graph_extraction", "document_themes")
QUIET_SECONDS = 120  # longer than the automation sensor's interval
BENCH_NEO4J = {"DOCGRAPH_NEO4J_DIR": "/tmp/docgraph-neo4j-bench", "DOCGRAPH_NEO4J_PORT": "17689",
               "DOCGRAPH_NEO4J_HTTP_PORT": "17476"}

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def launch_backfill(port: int, partitions: list[str]) -> str:
    """A backfill of the ingestion assets, as the UI's "Materialize selected" launches it."""
    import requests

    answer = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=60, json={
        "query": LAUNCH_BACKFILL, "variables": {"params": {
            "assetSelection": [{"path": ["documents"]}, {"path": ["chunks"]}],
            "partitionNames": partitions}}}).json()
    launched = answer["data"]["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the backfill was not launched: {launched}")
    return launched["backfillId"]


def celery_worker(event) -> str | None:
    """The worker an event log entry says took its step (dagster-celery's engine event)."""
    data = event.dagster_event.event_specific_data if event.dagster_event else None
    worker = data.metadata.get("Celery worker") if getattr(data, "metadata", None) else None
    return worker.value if worker is not None else None


def celery_workers(instance) -> dict[str, set[str]]:
    """{step key: the Celery workers that ran it}, from the runs' engine events."""
    import dagster as dg

    ran: dict[str, set[str]] = {}
    for run in instance.get_runs():
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            if worker := celery_worker(event):
                ran.setdefault(event.step_key, set()).add(worker)
    return ran


def prod(command: str, env: dict) -> None:
    done = subprocess.run([str(REPO / "scripts" / "prod.sh"), command], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"prod.sh {command} failed: {done.stderr[-3000:]}")


def fresh_database() -> bool:
    """Drop the benchmark's database (prod.sh creates it again); True if this started the
    PostgreSQL server (and must stop it)."""
    import psycopg2

    script = str(REPO / "scripts" / "postgres.sh")
    was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
    url = subprocess.run([script, "start"], capture_output=True, text=True,
                         check=True).stdout.strip()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    conn.close()
    return not was_running


def materialized(instance, keys: list[str], assets: tuple[str, ...]) -> set[str]:
    """The documents every one of `assets` materialized."""
    import dagster as dg

    done = set(keys)
    for asset in assets:
        done &= instance.get_materialized_partitions(dg.AssetKey(asset))
    return done


def run_stats(instance) -> dict:
    """Run launch latency, the runs' wall time outside their steps less their steps' waits for
    a pool slot (the step ready, not yet handed to Celery: dagster-celery claims the slot
    first), those waits, and the part of the rest their steps spent handed to Celery but not
    yet started (waiting for a free worker)."""
    import dagster as dg

    latencies, outside, worker_wait, pool_wait = [], 0.0, 0.0, 0.0
    steps_by_key: dict[str, list[tuple[float, float]]] = {}
    runs_started: list[tuple[float, float]] = []
    for record in instance.get_run_records():
        run_id = record.dagster_run.run_id
        stats = instance.get_run_stats(run_id)
        if stats.start_time is None or stats.end_time is None:
            continue
        latencies.append(stats.start_time - record.create_timestamp.timestamp())
        runs_started.append((stats.start_time, stats.end_time))
        steps = instance.get_run_step_stats(run_id)
        for step in steps:
            if step.start_time and step.end_time:
                steps_by_key.setdefault(step.step_key, []).append((step.start_time,
                                                                   step.end_time))
        inside = sum((s.end_time or stats.end_time) - (s.start_time or stats.start_time)
                     for s in steps if s.start_time)
        outside += max(0.0, (stats.end_time - stats.start_time) - inside)
        submitted = {event.step_key: event.timestamp for event in instance.all_logs(
            run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if event.message.startswith("Submitting celery task")}
        worker_wait += sum(s.start_time - submitted[s.step_key] for s in steps
                           if s.start_time and s.step_key in submitted)
        plan = instance.get_execution_plan_snapshot(record.dagster_run.execution_plan_snapshot_id)
        pooled = {step.key for step in plan.steps if step.pool}
        ended = [s.end_time for s in steps if s.end_time]
        for key in pooled & submitted.keys():  # ready when the run started or a step ended
            ready = max([stats.start_time] + [end for end in ended if end <= submitted[key]])
            pool_wait += submitted[key] - ready
    return {"runs": len(latencies), "outside_steps_seconds": outside - pool_wait,
            "pool_wait_seconds": pool_wait, "worker_wait_seconds": worker_wait,
            "step_seconds": {key: round(sum(end - start for start, end in spans), 1)
                             for key, spans in sorted(steps_by_key.items())},
            "steps_at_once": {key: overlap_shares(spans)
                              for key, spans in sorted(steps_by_key.items())},
            "runs_at_once": overlap_shares(runs_started),
            "launch_latency_median_s": round(statistics.median(latencies), 2) if latencies
            else None,
            "launch_latency_max_s": round(max(latencies), 2) if latencies else None}


def overlap_shares(spans: list[tuple[float, float]]) -> dict[int, float]:
    """{k: share of the time from the first start to the last end when k spans overlapped}."""
    if not spans:
        return {}
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    shares: dict[int, float] = {}
    level, at = 0, edges[0][0]
    for moment, change in edges:
        shares[level] = shares.get(level, 0.0) + moment - at
        level, at = level + change, moment
    total = edges[-1][0] - edges[0][0]
    return {k: round(v / total, 3) for k, v in sorted(shares.items()) if total and v}


def measure(args: argparse.Namespace) -> dict:
    import dagster as dg

    work = Path(tempfile.mkdtemp(prefix="docgraph-bench-backfill-"))
    root, folder = work / "root", work / "root" / "docs"
    folder.mkdir(parents=True)
    rng = random.Random(5)
    for i in range(args.docs):
        (folder / f"doc-{i:05d}.md").write_text(make_document(rng, args.kb * 1000))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, DOCGRAPH_PROD_DIR=str(work / "prod"), PORT=str(port),
               DOCGRAPH_PROD_DB=DATABASE, DOCGRAPH_ROOT=str(root),
               DOCGRAPH_CELERY_WORKERS=str(args.workers), DOCGRAPH_MAX_RUNS=str(args.max_runs))
    simulator = None
    if not os.environ.get("OPENAI_BASE_URL"):
        simulator = SimulatorProcess({"rpm": args.rpm, "latency_ms": args.latency_ms,
                                      "latency_jitter_ms": args.latency_ms / 4,
                                      "cheap_answers": True}).__enter__()
        env.update(OPENAI_BASE_URL=simulator.base_url, OPENAI_API_KEY="bench",
                   LLM_RPM=str(args.rpm))
    neo4j_started = False
    assets = STAGES
    if args.no_graph:
        env[GRAPH_VARIABLE] = "off"  # automation and the sweep ask for no graph runs
    else:
        assets = (*STAGES, "neo4j_graph")
        if not env.get("NEO4J_URI"):
            script = [str(REPO / "scripts" / "neo4j.sh")]
            neo4j_env = {**env, **BENCH_NEO4J}
            neo4j_started = subprocess.run(script + ["status"], env=neo4j_env,
                                           capture_output=True).returncode != 0
            env["NEO4J_URI"] = subprocess.run(script + ["start"], env=neo4j_env, check=True,
                                              capture_output=True, text=True).stdout.strip()
        _empty_graph(env["NEO4J_URI"], env.get("NEO4J_PASSWORD", "docgraph-local"))
    postgres_started = fresh_database()
    try:
        prod("up", env)
        settings = dict(line.split("=", 1)
                        for line in (work / "prod" / "env").read_text().splitlines())
        os.environ.update(settings)
        instance = dg.DagsterInstance.get()
        added = subprocess.run([str(REPO / ".venv" / "bin" / "docgraph"), "add", str(folder)],
                               env={**env, **settings}, capture_output=True, text=True)
        if added.returncode != 0:
            raise RuntimeError(added.stderr[-2000:])
        keys = sorted(instance.get_dynamic_partitions("documents"))
        cpu = ProcessCpu().__enter__()
        started = time.time()
        launch_backfill(port, keys)
        deadline = time.monotonic() + args.timeout
        quiet_since = None  # nothing running or queued since (automation may still ask)
        while time.monotonic() < deadline:
            done = materialized(instance, keys, assets)
            if len(done) == len(keys):
                break
            quiet_since = (quiet_since or time.monotonic()) if _settled(instance) else None
            if quiet_since and time.monotonic() - quiet_since > QUIET_SECONDS:
                break
            time.sleep(5)
        last = max(r.timestamp for r in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(assets[-1])), limit=1).records)
        seconds = last - started
        cpu.__exit__()
        sim = simulator.call("/sim/stats") if simulator else None
        runs = run_stats(instance)
        workers = set().union(*celery_workers(instance).values())
        instance.dispose()
    finally:
        prod("down", env)
        if simulator:
            simulator.__exit__()
        if neo4j_started:
            subprocess.run([str(REPO / "scripts" / "neo4j.sh"), "stop"], env={**env, **BENCH_NEO4J})
        if postgres_started:
            subprocess.run([str(REPO / "scripts" / "postgres.sh"), "stop"])
        shutil.rmtree(work, ignore_errors=True)
    row = {"documents": len(keys), "materialized": len(done), "seconds": round(seconds, 1),
           "documents_per_s": round(len(done) / seconds, 2), "lost": len(keys) - len(done),
           "workers": len(workers), "runs": runs["runs"],
           "dagster_overhead_ms_per_document": round(
               1000 * runs["outside_steps_seconds"] / len(keys), 1),
           "worker_wait_ms_per_document": round(1000 * runs["worker_wait_seconds"] / len(keys),
                                                1),
           "pool_wait_ms_per_document": round(1000 * runs["pool_wait_seconds"] / len(keys), 1),
           "run_launch_latency_median_s": runs["launch_latency_median_s"],
           "run_launch_latency_max_s": runs["launch_latency_max_s"],
           "step_seconds": runs["step_seconds"], "steps_at_once": runs["steps_at_once"],
           "runs_at_once": runs["runs_at_once"], "cpu_seconds_by_role": cpu.by_role()}
    if sim:
        arrivals = sorted(sim["arrivals"])
        cut = len(arrivals) // 10
        window = arrivals[cut:len(arrivals) - cut]
        span = window[-1] - window[0] if len(window) > 1 else 0
        row.update(llm_calls=sim["requests"], calls_per_s=round(sim["requests"] / seconds, 1),
                   sustained_calls_per_s=round((len(window) - 1) / span, 1) if span else None,
                   calls_per_document=round(sim["requests"] / len(keys), 1),
                   rate_limited=sim["by_status"].get("429", 0))
    return row


def _settled(instance) -> bool:
    """No run queued or in progress, and the backfill done."""
    import dagster as dg

    active = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]), limit=1)
    return not active and all(b.status.value != "REQUESTED" for b in instance.get_backfills())


def _empty_graph(uri: str, password: str) -> None:
    from resources.neo4j import Neo4jSettings, delete_all, drop_schema

    with Neo4jSettings.from_env(uri=uri, password=password).driver() as driver:
        delete_all(driver)
        # another benchmark's vector index has another size (graph_step.py's 64): the
        # pipeline would refuse every document with a schema mismatch
        drop_schema(driver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rpm", type=float, default=6000)
    parser.add_argument("--max-runs", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--kb", type=int, default=2)
    parser.add_argument("--no-graph", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    row = measure(args)
    print(" ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "backfill", "rpm": args.rpm,
                                         "rows": [row]}, indent=2))


if __name__ == "__main__":
    main()
