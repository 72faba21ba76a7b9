"""Processes sharing one LLM budget (LLM_BUDGET_URL) against a rate-limited provider
(report only, no assertions; tests/llm/test_shared_budget.py asserts a smaller run).

    python bench/shared_budget.py [--processes 4] [--rpm 3000] [--seconds 30]
                                  [--latency-ms 50] [--per-process] [--json PATH]

The simulator, in its own process, enforces `--rpm` (1 s of burst, x-ratelimit-* headers
and 429s, as OpenAI does). `--processes` engine processes each configured LLM_RPM=`--rpm`
start at one moment and embed enough items to keep their share busy for `--seconds`,
their budget shared in a fresh database of the PostgreSQL server of scripts/postgres.sh
(DOCGRAPH_PG_URL if set). `--per-process` leaves the budget to each process alone (the
behaviour without LLM_BUDGET_URL), for comparison. Reported from the server's own counts:
requests, 429s (share of all requests), and the requests per minute it answered over the
steady middle of the run (the first and last tenth of its arrivals left out), as a share
of the limit.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.simulator_process import SimulatorProcess  # noqa: E402

DATABASE = "docgraph_bench_budget"


def worker(args: argparse.Namespace) -> None:
    """One engine process: wait for the common start, embed, print its metrics."""
    from resources.llm import LLMEngine, LLMSettings
    from resources.llm.items import EmbedItem

    settings = LLMSettings(base_url=args.base_url, api_key="bench", cache_path=None,
                           rpm=args.rpm, max_concurrency=args.concurrency,
                           budget_url=args.budget_url or None)
    items = [EmbedItem(f"p{os.getpid()}-{i}", [f"text {os.getpid()} {i}"])
             for i in range(args.items)]

    async def go():
        async with LLMEngine(settings) as engine:
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
            return await engine.run_all(items)

    _, metrics = asyncio.run(go())
    print(json.dumps({"attempted": metrics.attempted, "succeeded": metrics.succeeded,
                      "http_calls": metrics.http_calls,
                      "rate_limited": metrics.rate_limited_responses,
                      "fallback_calls": metrics.budget_fallback_calls,
                      "seconds": metrics.wall_seconds}))


def fresh_database(pg_url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DATABASE}")
    conn.close()
    return f"{pg_url.rsplit('/', 1)[0]}/{DATABASE}"


def measure(processes: int, rpm: float, seconds: float, latency_ms: float, shared: bool,
            pg_url: str | None, concurrency: int = 16) -> dict:
    """Run the processes against a fresh simulator; the server's counts and theirs."""
    budget_url = fresh_database(pg_url) if shared else ""
    items = int(rpm / 60 * seconds / processes) + 1
    with SimulatorProcess({"rpm": rpm, "latency_ms": latency_ms}) as sim:
        start_at = time.time() + 3  # every process imported and connected by then
        children = [subprocess.Popen(
            [sys.executable, __file__, "--worker", "--base-url", sim.base_url,
             "--budget-url", budget_url, "--rpm", str(rpm), "--items", str(items),
             "--concurrency", str(concurrency), "--start-at", str(start_at)],
            cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        reports = []
        for child in children:
            out, _ = child.communicate(timeout=seconds * 10 + 120)
            if child.returncode != 0:
                raise RuntimeError(f"an engine process failed ({child.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        stats = sim.call("/sim/stats")
    arrivals = sorted(stats["arrivals"])
    cut = len(arrivals) // 10
    window = arrivals[cut:len(arrivals) - cut]
    span = window[-1] - window[0] if len(window) > 1 else 0.0
    limited = stats["by_status"].get("429", 0)
    answered_share = 1 - limited / stats["requests"] if stats["requests"] else 0.0
    per_minute = (len(window) - 1) / span * 60 * answered_share if span else 0.0
    return {"processes": processes, "shared": shared, "rpm_limit": rpm,
            "requests": stats["requests"], "429s": limited,
            "429_share": round(limited / stats["requests"], 4) if stats["requests"] else 0.0,
            "answered_per_minute": round(per_minute), "of_limit": round(per_minute / rpm, 3),
            "items": sum(r["attempted"] for r in reports),
            "succeeded": sum(r["succeeded"] for r in reports),
            "fallback_calls": sum(r["fallback_calls"] for r in reports),
            "seconds": round(max(r["seconds"] for r in reports), 1)}


def postgres_url() -> tuple[str, bool]:
    """The server's URL, and whether this call started it (and must stop it)."""
    if url := os.environ.get("DOCGRAPH_PG_URL"):
        return url, False
    script = REPO / "scripts" / "postgres.sh"
    was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
    url = subprocess.run([script, "start"], capture_output=True, text=True, check=True)
    return url.stdout.strip(), not was_running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rpm", type=float, default=3000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--per-process", action="store_true")
    parser.add_argument("--json", type=Path)
    # the engine processes'
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--budget-url", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    pg_url, started = postgres_url()
    try:
        row = measure(args.processes, args.rpm, args.seconds, args.latency_ms,
                      not args.per_process, pg_url)
    finally:
        if started:
            subprocess.run([REPO / "scripts" / "postgres.sh", "stop"], check=True)
    print(f"{'budget':<12} {'procs':>5} {'limit':>6} {'requests':>9} {'429s':>6} {'429 %':>6} "
          f"{'answered/min':>13} {'of limit':>9} {'fallback':>9} {'seconds':>8}")
    print(f"{'shared' if row['shared'] else 'per process':<12} {row['processes']:>5} "
          f"{row['rpm_limit']:>6.0f} {row['requests']:>9} {row['429s']:>6} "
          f"{100 * row['429_share']:>6.2f} {row['answered_per_minute']:>13} "
          f"{row['of_limit']:>9} {row['fallback_calls']:>9} {row['seconds']:>8}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "shared_budget", "rows": [row]},
                                        indent=2))


if __name__ == "__main__":
    main()
