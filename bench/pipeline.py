"""The whole per-document chain against a slow provider (issue 10's benchmark; reports only).

    python bench/pipeline.py [--docs 200] [--latency-ms 200] [--concurrency 8,32]
                             [--profile-docs 50] [--sim-mode full|cheap] [--json PATH]
                             [--no-ingest-ahead] [--processes 1,2]

What runs: generated documents (~4 KB each) go through every job the CLI runs, in order,
in batches of 100 (`pipeline_defs.runs.materialize(instance, keys, force=True)`, in-process
like a backfill; `--processes 2`: `materialize(…, processes=2)`, the batches dealt to
this process and a helper, each with half the concurrency), so the bench does not depend
on how the jobs are split into steps. Each
pass is a fresh process with a throwaway SQLite instance (a temporary DAGSTER_HOME with the
project's dagster.yaml), no NEO4J_URI (graph off), and the LLM set only through the
environment: OPENAI_BASE_URL = the simulator, LLM_CACHE_PATH=off, LLM_MAX_CONCURRENCY = the
row's concurrency (the engine's ceiling, whatever the stages' run config). The simulator
runs in its OWN process (`python -m simulator.server`, 127.0.0.1, stopped by
pid), fault-free, latency 200 ms ± 50 ms, so on 2 cores it does not share the client's GIL.

Per concurrency, two passes:
  1. unprofiled, `--docs` documents: the timings. LLM calls = the simulator's request count
     (GET /sim/stats); efficiency = calls/s ÷ (concurrency ÷ latency), run launches,
     ingestion, Dagster's events, stage tails and the theme catalog included.
  2. profiled, `--profile-docs` documents: the same chain under cProfile with a per-thread
     CPU clock (time.thread_time) in every thread, all of it in one process (no
     ingest-ahead helper, which the profile would not see). Profiling slows the chain, so
     it only gives the *split*; the per-call total is the unprofiled pass's CPU (user +
     system, all threads, and its child processes: the ingest-ahead helper, the chain
     helper with --processes 2, Dagster's compute-log tails) ÷ LLM calls, and each part
     is total × its profile share.

Parts, by the file a function's self time is spent in: engine (resources/llm/), sdk
(openai, httpx, httpcore, anyio, h11, ssl, sockets, selectors, asyncio: the I/O stack),
dagster (dagster, sqlalchemy, sqlite3 under them), storage (resources/storage.py, pyarrow,
fsspec, pandas' parquet I/O), other (assets/, pipeline_defs/, pydantic, pandas, the rest).
C functions, json, the tokenizer and the rest of the standard library are charged to their
callers (json.loads under openai is sdk, under dagster's serdes dagster).

`streams` in the JSON: each LLM engine stream's (start, end) in seconds from the chain's
start, for a timeline of where the provider waited (run boundaries, ingestion, tails).

dagster_overhead_ms_per_document = (chain wall time − time during which at least one LLM
engine stream, `LLMEngine.run`, was running in any of the chain's processes) ÷ documents:
the wall time per document in which the provider was idle because the chain was doing
something else (run launch and teardown, slot checks, ingestion and chunking, reading and
writing asset files, recording materializations and checks, the theme catalog). It is an
upper bound on what Dagster costs in wall time. dagster_cpu_ms_per_document is the Dagster
part of the client's CPU ÷ documents (whenever it ran, during the streams too, where it
competes with the engine).

Simulator cost: its process's utime + stime (/proc/<pid>/stat) over the pass ÷ requests,
and its cores used. The full heuristics cost ~3.6 ms of CPU per request: at concurrency
32 / 200 ms (160 requests/s) that is ~0.6 of this machine's 2 cores, taken from the client,
so by default the simulator runs in its cheap answer mode (`--sim-mode cheap`,
SimConfig.cheap_answers, simulator/memo.py): the same answers from memoised
analytics, token counts estimated from length. `--sim-mode full` measures with the full one.
"""

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chunking import make_document  # noqa: E402
from bench.simulator_process import SimulatorProcess  # noqa: E402

PARTS = ("engine", "sdk", "dagster", "storage", "other")
# (substring of a function's file, part), first match wins
RULES = [
    ("/resources/llm/", "engine"),
    ("/resources/storage.py", "storage"), ("/pyarrow/", "storage"), ("/fsspec/", "storage"),
    ("/pandas/io/parquet", "storage"),
    *[(f"/{m}/", "sdk") for m in ("openai", "httpx", "httpx2", "httpcore", "anyio", "h11",
                                  "sniffio", "asyncio")],
    ("/ssl.py", "sdk"), ("/socket.py", "sdk"), ("/selectors.py", "sdk"),
    *[(f"/{m}/", "dagster") for m in ("dagster", "dagster_shared", "dagster_pipes",
                                      "sqlalchemy", "alembic")],
    ("/resources/tokenizer.py", None), ("/tiktoken", None), ("/json/", None),
]
STDLIB = sysconfig.get_paths()["stdlib"]


def part_of(filename: str) -> str | None:
    """The part a file belongs to; None: charge its time to whoever called it."""
    for needle, part in RULES:
        if needle in filename:
            return part
    if filename == "~" or filename.startswith("<") or (
            filename.startswith(STDLIB) and "site-packages" not in filename):
        return None
    return "other"


def split_profile(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of self time per part, callers charged for the neutral functions."""
    memo: dict[tuple, dict[str, float]] = {}

    def shares(key: tuple, seen: frozenset) -> dict[str, float]:
        if key in memo:
            return memo[key]
        part = part_of(key[0])
        if part is not None:
            return {part: 1.0}
        callers = stats.stats[key][4] if key in stats.stats else {}
        callers = {c: e for c, e in callers.items() if c not in seen}
        weights = {c: e[2] or e[0] for c, e in callers.items()}  # self time on that edge
        total = sum(weights.values())
        if not total:
            return {"other": 1.0}
        result: dict[str, float] = {}
        for caller, weight in weights.items():
            for p, share in shares(caller, seen | {key}).items():
                result[p] = result.get(p, 0.0) + share * weight / total
        memo[key] = result
        return result

    seconds = dict.fromkeys(PARTS, 0.0)
    for key, (_, _, self_time, _, _) in stats.stats.items():
        for part, share in shares(key, frozenset()).items():
            seconds[part] += self_time * share
    return seconds


# -- one pass, in its own process ------------------------------------------------------------
def timed_streams() -> list[tuple[float, float]]:
    """From now on, when each LLM engine stream of this process ran (CLOCK_MONOTONIC,
    one clock for every process of the machine)."""
    from resources.llm.engine import LLMEngine

    streams: list[tuple[float, float]] = []
    run = LLMEngine.run

    async def timed_run(self, *a, **kw):  # when the provider had work, whatever the steps
        started = time.monotonic()
        try:
            return await run(self, *a, **kw)
        finally:
            streams.append((started, time.monotonic()))

    LLMEngine.run = timed_run
    return streams


def chain_helper(fd: int) -> int:
    """A chain helper of `--processes` > 1, its streams timed (into $BENCH_STREAMS/<pid>)."""
    from pipeline_defs import chain_processes

    streams = timed_streams()
    try:
        return chain_processes._helper(fd)
    finally:
        (Path(os.environ["BENCH_STREAMS"]) / f"{os.getpid()}.json").write_text(
            json.dumps(streams))


def child(args: argparse.Namespace) -> dict:
    """One chain over `args.docs` documents; prints its measurements as JSON."""
    import dagster as dg

    from pipeline_defs import chain_processes, cli, runs

    streams = timed_streams()
    helper_streams = Path(tempfile.mkdtemp(prefix="docgraph-bench-streams-"))
    os.environ["BENCH_STREAMS"] = str(helper_streams)
    chain_processes.HELPER = [sys.executable, __file__, "--chain-helper"]
    profiles: list[cProfile.Profile] = []

    def start_thread_profile(*_):
        profile = cProfile.Profile(time.thread_time)  # CPU, not time spent waiting
        profiles.append(profile)
        profile.enable()

    files = sorted(Path(args.folder).iterdir())[: args.docs]
    instance = dg.DagsterInstance.get()
    keys = [d.key for d in cli.add(instance, files)]
    if args.profile:
        threading.setprofile(start_thread_profile)
        start_thread_profile()
    cpu0, started = os.times(), time.monotonic()
    outcomes = runs.materialize(instance, keys, force=True,
                                ingest_ahead=args.ingest_ahead and not args.profile,
                                processes=1 if args.profile else args.processes)
    seconds, cpu1 = time.monotonic() - started, os.times()
    if args.profile:
        threading.setprofile(None)
        for profile in profiles:
            profile.disable()
    not_ok = [o for o in outcomes if o.status != "ok"]
    if not_ok:
        raise SystemExit(f"bench: {len(not_ok)} documents not ok, e.g. {not_ok[0]}")
    for helper in helper_streams.iterdir():
        streams += [tuple(s) for s in json.loads(helper.read_text())]
    shutil.rmtree(helper_streams, ignore_errors=True)
    busy, end = 0.0, 0.0  # the union of the stream intervals
    for a, b in sorted(streams):
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    result = {"docs": len(keys), "seconds": seconds, "llm_stream_seconds": busy,
              "client_cpu_seconds": _cpu(cpu1) - _cpu(cpu0),
              "streams": [(round(a - started, 2), round(b - started, 2))
                          for a, b in sorted(streams)]}
    if args.profile:
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        result["profile_seconds"] = split_profile(stats)
        if args.profile_out:
            stats.dump_stats(args.profile_out)
    return result


def _cpu(times: os.times_result) -> float:
    """This process's CPU and that of its children that have ended (all are, by the end)."""
    return times.user + times.system + times.children_user + times.children_system


# -- a pass: the simulator's process and the chain's ---------------------------------------
def run_pass(folder: Path, concurrency: int, processes: int, docs: int,
             args: argparse.Namespace, profile: bool) -> dict:
    config = {"latency_ms": args.latency_ms, "latency_jitter_ms": args.latency_ms / 4,
              "cheap_answers": args.sim_mode == "cheap"}
    home = Path(tempfile.mkdtemp(prefix="docgraph-bench-"))
    try:
        with SimulatorProcess(config) as sim:
            shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
            env = {k: v for k, v in os.environ.items() if k != "NEO4J_URI"}
            env.update(DAGSTER_HOME=str(home), DOCGRAPH_HOME=str(home / "docgraph"),
                       OPENAI_BASE_URL=sim.base_url, OPENAI_API_KEY="bench",
                       LLM_CACHE_PATH="off", LLM_MAX_CONCURRENCY=str(concurrency))
            sim_cpu0, wall0 = sim.cpu_seconds(), time.monotonic()
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--folder", str(folder),
                 "--docs", str(docs), "--processes", str(processes),
                 *(["--profile"] if profile else []),
                 *([] if args.ingest_ahead else ["--no-ingest-ahead"]),
                 *(["--profile-out", str(args.profile_out / f"pipeline-c{concurrency}.pstats")]
                   if profile and args.profile_out else [])],
                env=env, cwd=REPO, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"bench pass failed:\n{out.stdout[-3000:]}\n"
                                 f"{out.stderr[-3000:]}")
            sim_wall = time.monotonic() - wall0
            sim_cpu = sim.cpu_seconds() - sim_cpu0
            stats = sim.call("/sim/stats")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    calls = stats["requests"]
    result.update(llm_calls=calls, sim_cpu_ms_per_request=1000 * sim_cpu / max(calls, 1),
                  sim_cores=sim_cpu / sim_wall, max_in_flight=stats["max_in_flight"])
    return result


def row(concurrency: int, processes: int, timed: dict, profiled: dict | None,
        latency_ms: float) -> dict:
    docs, seconds, calls = timed["docs"], timed["seconds"], timed["llm_calls"]
    ideal = concurrency / (latency_ms / 1000)
    total_ms = 1000 * timed["client_cpu_seconds"] / calls
    split = profiled and profiled["profile_seconds"]
    shares = {p: split[p] / sum(split.values()) for p in PARTS} if split else {}
    cpu = {p: round(total_ms * shares[p], 2) for p in shares}
    return {
        "concurrency": concurrency, "processes": processes, "docs": docs,
        "seconds": round(seconds, 1),
        "docs_per_s": round(docs / seconds, 2), "llm_calls": calls,
        "calls_per_s": round(calls / seconds, 1),
        "efficiency": round(calls / seconds / ideal, 3),
        "llm_stream_seconds": round(timed["llm_stream_seconds"], 1),
        "dagster_overhead_ms_per_document": round(
            1000 * (seconds - timed["llm_stream_seconds"]) / docs, 1),
        "dagster_cpu_ms_per_document": round(
            1000 * timed["client_cpu_seconds"] * shares["dagster"] / docs, 1) if shares else None,
        "cpu_ms_per_call": {**cpu, "total": round(total_ms, 2)},
        "client_cores": round(timed["client_cpu_seconds"] / seconds, 2),
        "sim_cpu_ms_per_request": round(timed["sim_cpu_ms_per_request"], 2),
        "sim_cores": round(timed["sim_cores"], 2),
        "max_in_flight": timed["max_in_flight"],
        "streams": timed["streams"],
        "profile": profiled and {
            "docs": profiled["docs"], "llm_calls": profiled["llm_calls"],
            "seconds": round(profiled["seconds"], 1),
            "cpu_ms_per_call_profiled": {p: round(1000 * split[p] / profiled["llm_calls"], 2)
                                         for p in PARTS}},
    }


def print_table(rows: list[dict]) -> None:
    head = ("conc", "procs", "docs", "seconds", "docs/s", "LLM calls", "calls/s", "eff",
            "dagster ms/doc", "CPU ms/call", *PARTS, "sim ms/req", "sim cores")
    print("  ".join(f"{h:>{max(len(h), 6)}}" for h in head))
    for r in rows:
        cpu = r["cpu_ms_per_call"]
        cells = (r["concurrency"], r["processes"], r["docs"], r["seconds"], r["docs_per_s"],
                 r["llm_calls"],
                 r["calls_per_s"], r["efficiency"], r["dagster_overhead_ms_per_document"],
                 cpu["total"], *(cpu.get(p, "-") for p in PARTS),
                 r["sim_cpu_ms_per_request"], r["sim_cores"])
        print("  ".join(f"{c!s:>{max(len(h), 6)}}" for h, c in zip(head, cells, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--kb", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated")
    parser.add_argument("--profile-docs", type=int, default=50, help="0: no profiled pass")
    parser.add_argument("--no-ingest-ahead", dest="ingest_ahead", action="store_false",
                        help="ingest every batch in the chain's process (A/B)")
    parser.add_argument("--processes", default="1,2",
                        help="comma-separated: chain processes (materialize's processes=)")
    parser.add_argument("--sim-mode", choices=("full", "cheap"), default="cheap",
                        help="cheap: SimConfig.cheap_answers (the same answers, less CPU)")
    parser.add_argument("--profile-out", type=Path, help="keep the profiles (pstats) here")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chain-helper", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_out and not args.child:
        args.profile_out.mkdir(parents=True, exist_ok=True)
    if args.chain_helper is not None:
        sys.exit(chain_helper(args.chain_helper))
    if args.child:
        args.processes = int(args.processes)
        print(json.dumps(child(args)))
        return

    rng = random.Random(7)
    folder = Path(tempfile.mkdtemp(prefix="docgraph-bench-docs-"))
    try:
        for i in range(max(args.docs, args.profile_docs)):
            (folder / f"report-{i:04d}.md").write_text(make_document(rng, args.kb * 1000))
        rows = []
        for c in map(int, args.concurrency.split(",")):
            # the profile sees one process: one profiled pass per concurrency
            profiled = run_pass(folder, c, 1, args.profile_docs, args, profile=True) \
                if args.profile_docs else None
            for n in map(int, args.processes.split(",")):
                timed = run_pass(folder, c, n, args.docs, args, profile=False)
                rows.append(row(c, n, timed, profiled, args.latency_ms))
                print_table(rows[-1:])
                sys.stdout.flush()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "pipeline", "latency_ms": args.latency_ms, "doc_kb": args.kb,
            "sim_mode": args.sim_mode, "cpu_count": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
