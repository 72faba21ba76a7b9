"""LLM call strategies side by side against the simulator (report only, no assertions).

    python bench/llm_throughput.py [--calls 2000] [--json PATH] [--memory-items 100000]

Scenarios: `clean` (latency 100 ms, server concurrency cap 32, 12,000 RPM) and `faults`
(the same plus 5% 429, 5% 500 and 1% connection resets). Strategies, each in its own
process so peak RSS is its own:

- sequential: one blocking openai client call after another (SDK defaults: 2 retries);
  run for --sequential-seconds (default 10) and reported per second (2,000 calls would
  take minutes);
- threads: a pool of 32 threads sharing a blocking client (SDK defaults);
- gather: every call as an asyncio task at once, `asyncio.gather(return_exceptions=True)`
  on the async client (SDK defaults);
- engine: LLMEngine with the provider's RPM and a ceiling of 64.

Efficiency = succeeded calls per second (over the wall time) / min(cap / latency,
RPM / 60); sustained efficiency uses the rate between the 10th and 90th percentile of
completions instead, leaving out ramp-up and the retry tail. Memory: the
engine's peak RSS for 1,000 and for --memory-items queued items, with an in-process HTTP
transport that answers at once, so only the engine's own footprint is measured.
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.simulator_process import SimulatorProcess  # noqa: E402

LATENCY_MS, CAP, RPM = 100, 32, 12_000
SCENARIOS = {
    "clean": {},
    "faults": {"rate_429": 0.05, "rate_500": 0.05, "rate_reset": 0.01,
               "retry_after_seconds": 0.5},
}
STRATEGIES = ("sequential", "threads", "gather", "engine")
PROMPT = "Ticket {i}: Priya Raman refunded the double charge for Bluebird Dental in Dublin."


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": PROMPT.format(i=i)}]


# -- strategies (run in a child process) ---------------------------------------------------
def run_sequential(url: str, n: int, budget: float) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench")
    ok = failed = done = 0
    finished: list[float] = []
    started = time.monotonic()
    for i in range(n):
        if time.monotonic() - started > budget:
            break
        try:
            client.chat.completions.create(model="bench", messages=_messages(i))
            ok += 1
            finished.append(time.monotonic())
        except openai.OpenAIError:
            failed += 1
        done += 1
    return _result(done, ok, failed, started, finished)


def run_threads(url: str, n: int, _budget: float) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench")

    finished: list[float] = []

    def one(i: int) -> bool:
        try:
            client.chat.completions.create(model="bench", messages=_messages(i))
        except openai.OpenAIError:
            return False
        finished.append(time.monotonic())
        return True

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(one, range(n)))
    return _result(n, sum(outcomes), outcomes.count(False), started, finished)


def run_gather(url: str, n: int, _budget: float) -> dict:
    import openai

    finished: list[float] = []

    async def go():
        client = openai.AsyncOpenAI(base_url=url, api_key="bench")

        async def one(i: int):
            reply = await client.chat.completions.create(model="bench", messages=_messages(i))
            finished.append(time.monotonic())
            return reply

        outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        await client.close()
        return outcomes

    started = time.monotonic()
    outcomes = asyncio.run(go())
    failed = sum(isinstance(o, BaseException) for o in outcomes)
    return _result(len(outcomes), len(outcomes) - failed, failed, started, finished)


def run_engine(url: str, n: int, _budget: float) -> dict:
    from resources.llm import ChatItem, LLMEngine, LLMSettings

    settings = LLMSettings(base_url=url, api_key="bench", rpm=RPM, max_concurrency=64,
                           cache_path=None)
    engine = LLMEngine(settings)  # loads the tokenizer: a one-off cost, like building a client
    keys: list[str] = []
    finished: list[float] = []

    def done(result) -> None:
        keys.append(result.key)
        if result.ok:
            finished.append(time.monotonic())

    async def go():
        async with engine:
            items = (ChatItem(str(i), _messages(i)) for i in range(n))
            return await engine.run(items, done)

    started = time.monotonic()
    metrics = asyncio.run(go())
    result = _result(len(keys), metrics.succeeded, metrics.failed, started, finished)
    result.update(duplicates=len(keys) - len(set(keys)), retries=metrics.retries,
                  failed_by_class=metrics.failed_by_class)
    return result


def _result(items: int, ok: int, failed: int, started: float, finished: list[float]) -> dict:
    """Counts, wall time, and the sustained rate: successful completions between the 10th
    and 90th percentile of their times, which leaves out ramp-up and the retry tail."""
    finished.sort()
    sustained = None
    if len(finished) >= 10:
        lo, hi = finished[len(finished) // 10], finished[(len(finished) * 9) // 10]
        sustained = (len(finished) * 0.8) / (hi - lo) if hi > lo else None
    return {"items": items, "succeeded": ok, "failed": failed,
            "wall_seconds": time.monotonic() - started, "sustained_per_second": sustained}


def run_memory(n: int) -> dict:
    """The engine over n items with an instant in-process transport."""
    import httpx2

    from resources.llm import ChatItem, LLMEngine, LLMSettings

    body = json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }).encode()
    async def answer(request):
        # Yield once, as real I/O does: an answer that never suspends would starve the
        # event loop's housekeeping and measure that instead of the engine.
        await asyncio.sleep(0)
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    transport = httpx2.MockTransport(answer)
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", api_key="bench",
                           max_concurrency=64, cache_path=None)
    count = 0

    def done(_):
        nonlocal count
        count += 1

    async def go():
        async with LLMEngine(settings, transport=transport) as engine:
            items = (ChatItem(str(i), _messages(i)) for i in range(n))
            return await engine.run(items, done)

    started = time.monotonic()
    metrics = asyncio.run(go())
    return {"items": n, "succeeded": metrics.succeeded, "results": count,
            "wall_seconds": round(time.monotonic() - started, 2)}


# -- the parent: servers, children, table ---------------------------------------------------
def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "child", *args], capture_output=True,
                         text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sequential-seconds", type=float, default=10.0)
    parser.add_argument("--memory-items", type=int, default=100_000)
    parser.add_argument("--extra-seeds", type=int, default=2,
                        help="more fault-scenario runs of the engine, with other seeds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    theoretical = min(CAP / (LATENCY_MS / 1000), RPM / 60)
    rows = []
    with SimulatorProcess() as sim:
        url = sim.base_url
        runs = [(scenario, strategy, 42) for scenario in SCENARIOS for strategy in STRATEGIES]
        # The fault tail is luck (a few items failing three times late): more seeds for it.
        runs += [("faults", "engine", seed) for seed in range(43, 43 + args.extra_seeds)]
        for scenario, strategy, seed in runs:
            faults = SCENARIOS[scenario]
            sim.call("/sim/config", {"latency_ms": LATENCY_MS, "concurrency_cap": CAP,
                                     "rpm": RPM, "seed": seed, **faults})
            sim.call("/sim/reset", {})
            result = _child([strategy, url, str(args.calls), str(args.sequential_seconds)])
            stats = sim.call("/sim/stats")
            per_second = result["succeeded"] / result["wall_seconds"]
            sustained = result["sustained_per_second"]
            rows.append({
                "scenario": scenario, "strategy": strategy, "seed": seed,
                "calls": result["items"],
                "wall_seconds": round(result["wall_seconds"], 2),
                "calls_per_second": round(per_second, 1),
                "efficiency": round(per_second / theoretical, 3),
                "sustained_efficiency": round(sustained / theoretical, 3)
                if sustained else None,
                "http_requests": stats["requests"],
                "status_429": stats["by_status"].get("429", 0),
                "failed": result["failed"],
                "lost": result["items"] - result["succeeded"] - result["failed"],
                "duplicates": result.get("duplicates", 0),
                "server_max_in_flight": stats["max_in_flight"],
                "peak_rss_mb": result["peak_rss_mb"],
                **({"projected_wall_seconds_for_all": round(args.calls / per_second, 1)}
                   if result["items"] < args.calls else {}),
            })
            print(_row(rows[-1]), flush=True)

    memory = {}
    if args.memory_items:
        small = _child(["memory", str(1000)])
        large = _child(["memory", str(args.memory_items)])
        memory = {"items_small": 1000, "rss_small_mb": small["peak_rss_mb"],
                  "items_large": args.memory_items, "rss_large_mb": large["peak_rss_mb"],
                  "rss_growth_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1),
                  "engine_items_per_second": round(args.memory_items / large["wall_seconds"]),
                  "lost": args.memory_items - large["results"]}
        print(f"memory: {memory}")
    report = {"benchmark": "llm_throughput", "theoretical_calls_per_second": theoretical,
              "latency_ms": LATENCY_MS, "server_concurrency_cap": CAP, "rpm": RPM,
              "scenarios": SCENARIOS, "rows": rows, "memory": memory,
              "cpu_count": os.cpu_count()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


HEADER = (f"{'scenario':<8} {'strategy':<11} {'seed':>4} {'calls':>5} {'wall s':>7} "
          f"{'calls/s':>8} {'eff':>6} {'sust':>6} {'http':>5} {'429s':>5} {'failed':>6} "
          f"{'lost':>4} {'dup':>3} {'inflight':>8} {'RSS MB':>7}")


def _row(r: dict) -> str:
    if not getattr(_row, "printed", False):
        _row.printed = True
        print(HEADER)
    return (f"{r['scenario']:<8} {r['strategy']:<11} {r['seed']:>4} {r['calls']:>5} "
            f"{r['wall_seconds']:>7} {r['calls_per_second']:>8} {r['efficiency']:>6} "
            f"{r['sustained_efficiency'] or '-':>6} {r['http_requests']:>5} "
            f"{r['status_429']:>5} {r['failed']:>6} {r['lost']:>4} {r['duplicates']:>3} "
            f"{r['server_max_in_flight']:>8} {r['peak_rss_mb']:>7}")


def child(argv: list[str]) -> None:
    if argv[0] == "memory":
        result = run_memory(int(argv[1]))
    else:
        strategy, url, n, budget = argv
        runner = {"sequential": run_sequential, "threads": run_threads,
                  "gather": run_gather, "engine": run_engine}[strategy]
        result = runner(url, int(n), float(budget))
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        os.environ.setdefault("DOCGRAPH_HOME", tempfile.mkdtemp(prefix="docgraph-bench-"))
        child(sys.argv[2:])
    else:
        main()
