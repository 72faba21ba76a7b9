"""chunk_metadata items through the batch lane against the simulator (report only).

    python bench/batch_lane.py [--items 10000] [--small 2000] [--json PATH]

For each size (--small, then --items): the items (generated one at a time, never held)
go through the lane (resources/llm/batch_lane.py: JSONL file, upload, batch, poll,
collect into a fresh response cache), then through the engine's run, which serves them
from that cache; then the same items on the sync route with no cache. Reported: uploads
and batches the simulator saw, lines sent, items lost (attempted - succeeded), whether the
answers are identical to the sync route's (an order-independent digest of every key and
answer), the estimated cost of each route and their ratio, the seconds of each phase, and
the client's Python memory peak during the lane (tracemalloc; after a warm-up of 50
items, so that what a process makes once is not counted) for both sizes: flat means O(one
batch file), not O(items).
"""

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assets import prompts  # noqa: E402
from assets.models import ChunkMetadata  # noqa: E402
from bench.simulator_process import SimulatorProcess  # noqa: E402
from resources.llm import ChatItem, LLMEngine, LLMSettings  # noqa: E402

WORDS = ("payment", "retry", "queue", "invoice", "webhook", "signature", "certificate",
         "rollout", "latency", "refund", "ledger", "customer", "incident", "timeout")


def items(n: int):
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12))
        text = (f"Ticket {i}: Priya Raman reviewed the {words}. The on-call engineer "
                f"restarted worker {i % 97} and customers saw delayed invoices for {i % 60} "
                "minutes.")
        yield ChatItem(f"chunk_metadata:c{i}", prompts.CHUNK_METADATA.messages(text),
                       ChunkMetadata, prompts.CHUNK_METADATA.version)


class Digest:
    """An order-independent digest of (key, answer) pairs: their hashes summed."""

    def __init__(self):
        self.total = 0

    def add(self, result) -> None:
        blob = json.dumps([result.key, result.value.model_dump(mode="json")
                           if result.ok else result.error_class], sort_keys=True)
        self.total = (self.total + int(hashlib.sha256(blob.encode()).hexdigest(), 16)) \
            % 2 ** 256


async def lane_route(settings: LLMSettings, n: int) -> dict:
    digest = Digest()
    async with LLMEngine(settings) as engine:
        lane = engine.batch_lane()
        tracemalloc.start()
        started = time.monotonic()
        report = await lane.run(items(n), "chunk_metadata", [])
        lane_seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        started = time.monotonic()
        metrics = await engine.run(items(n), digest.add)
        serve_seconds = time.monotonic() - started
    return {"report": report, "metrics": metrics, "digest": digest.total,
            "lane_seconds": lane_seconds, "serve_seconds": serve_seconds,
            "lane_peak_mb": peak / 2 ** 20}


async def sync_route(settings: LLMSettings, n: int) -> dict:
    digest = Digest()
    async with LLMEngine(settings, use_cache=False) as engine:
        started = time.monotonic()
        metrics = await engine.run(items(n), digest.add)
    return {"metrics": metrics, "digest": digest.total,
            "seconds": time.monotonic() - started}


def measure(sim: SimulatorProcess, n: int, work: Path) -> dict:
    base = dict(base_url=sim.base_url, api_key="bench", max_concurrency=32,
                batch_poll_seconds=0.5)
    before = sim.call("/sim/stats")["batch"]
    lane = asyncio.run(lane_route(LLMSettings(**base, cache_path=str(work / f"{n}.sqlite")),
                                  n))
    after = sim.call("/sim/stats")["batch"]
    sync = asyncio.run(sync_route(LLMSettings(**base, cache_path=None), n))
    metrics, sync_metrics = lane["metrics"], sync["metrics"]
    return {
        "items": n,
        "uploads": after.get("files_uploaded", 0) - before.get("files_uploaded", 0),
        "batches": after.get("batches_created", 0) - before.get("batches_created", 0),
        "lines": after.get("batch_lines", 0) - before.get("batch_lines", 0),
        "lost": metrics.attempted - metrics.succeeded,
        "identical_to_sync": lane["digest"] == sync["digest"],
        "batch_cost_usd": metrics.estimated_cost_usd,
        "sync_cost_usd": sync_metrics.estimated_cost_usd,
        "cost_ratio": round(metrics.estimated_cost_usd / sync_metrics.estimated_cost_usd, 4),
        "saved_usd": metrics.cost_saved_usd,
        "lane_seconds": round(lane["lane_seconds"], 1),
        "serve_seconds": round(lane["serve_seconds"], 1),
        "sync_seconds": round(sync["seconds"], 1),
        "lane_python_peak_mb": round(lane["lane_peak_mb"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess({"cheap_answers": True}) as sim:
        measure(sim, 50, Path(tmp))  # warm-up: imports, schemas, engines made once
        rows = [measure(sim, n, Path(tmp)) for n in (args.small, args.items)]
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "batch_lane", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
