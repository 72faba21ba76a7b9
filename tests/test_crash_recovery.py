"""Crash safety, as a user meets it: `docgraph materialize` killed with SIGKILL twice and
started again finishes by itself, with the clean run's outputs, paying again only for the
calls that were in flight; SIGINT and SIGTERM stop it within seconds, CANCELED, with no
pool slot left claimed; and the recovery of a dead run on its own.

The CLI runs as a real subprocess on the project's default SQLite instance, against the
simulator on loopback with latency (so a run takes seconds), and writes the graph to the
tests' Neo4j.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pipeline_defs.run_owner import (
    BOOT_TAG,
    HOST_TAG,
    PID_NS_TAG,
    PID_STARTED_TAG,
    PID_TAG,
    host,
)
from pipeline_defs.run_recovery import recover
from resources.llm import LLMEngine
from resources.llm.cache import SQLiteCache
from resources.neo4j import delete_all
from resources.neo4j.export import graph_export
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.conftest import REPO, SAMPLE_DIR, instance_at
from tests.llm.conftest import Summary, chat_items, fast_settings

CONCURRENCY = 4
STORED = ["chunks", "chunk_metadata", "chunk_embeddings", "document_themes",
          "graph_extraction", "theme_catalog"]


@pytest.fixture
def sim():
    with SimulatorServer(SimConfig(latency_ms=60, latency_jitter_ms=20)) as server:
        yield server


def _env(home: Path, sim: SimulatorServer, graph=None) -> dict[str, str]:
    env = dict(os.environ, DAGSTER_HOME=str(home / "dagster"),
               DOCGRAPH_HOME=str(home / "docgraph"), OPENAI_BASE_URL=sim.base_url,
               OPENAI_API_KEY="test", LLM_MAX_CONCURRENCY=str(CONCURRENCY))
    env.pop("NEO4J_URI", None)
    if graph is not None:
        env.update(NEO4J_URI=graph.uri, NEO4J_USER=graph.user, NEO4J_PASSWORD=graph.password)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline_defs.cli", *args]


def _added(env: dict[str, str]) -> None:
    done = subprocess.run(_cli("add", str(SAMPLE_DIR)), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(_cli("materialize"), cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _when_requests(sim: SimulatorServer, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 40
    while sim.stats()["requests"] < n:
        assert proc.poll() is None, f"materialize ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the simulator never saw the requests"
        time.sleep(0.02)


def _outputs(home: Path) -> dict[str, object]:
    """Every stored frame and the theme catalog, by path under the asset store."""
    root = home / "docgraph" / "assets"
    stored = {}
    for path in sorted(root.rglob("*.*")):
        name = str(path.relative_to(root))
        stored[name] = (json.loads(path.read_text()) if path.suffix == ".json"
                        else pd.read_parquet(path))
    for theme in stored["theme_catalog/__all__.json"]["themes"]:
        # when its documents were materialized: the only thing a resumed run may change
        del theme["first_seen"], theme["last_seen"]
    assert {name.split("/")[0] for name in stored} >= set(STORED)
    return stored


def _assert_same(got: dict[str, object], want: dict[str, object]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[name], value, obj=name)
        else:
            assert got[name] == value, name


def _instance(home: Path) -> dg.DagsterInstance:
    return instance_at(home / "dagster")


def _no_slot_held(instance: dg.DagsterInstance) -> None:
    for pool in ("llm", "neo4j"):
        info = instance.event_log_storage.get_concurrency_info(pool)
        assert info.claimed_slots == [] and info.pending_steps == [], (pool, info)


def test_killed_twice_the_third_run_finishes_with_the_clean_outputs(
        tmp_path, sim, neo4j_settings, chain_graph):
    clean_home, home = tmp_path / "clean", tmp_path / "crashed"
    neo4j_driver = chain_graph
    env = _env(clean_home, sim, neo4j_settings)
    _added(env)
    code, out, err = _finish(_start(env))
    assert code == 0, out + err
    clean_calls = sim.stats()["requests"]
    clean, clean_graph = _outputs(clean_home), graph_export(neo4j_driver)
    assert clean_graph.nodes and clean_graph.relationships

    delete_all(neo4j_driver)
    sim.simulator.reset()
    env = _env(home, sim, neo4j_settings)
    _added(env)
    first = _start(env)
    _when_requests(sim, 40, first)
    first.kill()
    first.wait()
    second = _start(env)
    _when_requests(sim, 40 + clean_calls // 3, second)
    second.kill()
    second_out = second.communicate()[0]
    code, out, err = _finish(_start(env))

    assert code == 0, out + err
    assert "docgraph: recovery: 1 run(s) whose process is gone" in second_out
    assert "docgraph: recovery: 1 run(s) whose process is gone" in out
    assert "freed 1 slot(s): 1 in pool llm" in out
    assert "of them from the response cache" in out
    _assert_same(_outputs(home), clean)
    assert graph_export(neo4j_driver) == clean_graph
    # what a kill can cost: the calls in flight at that moment, and no more
    assert sim.stats()["requests"] <= clean_calls + 2 * CONCURRENCY
    instance = _instance(home)
    killed = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]
    assert len(killed) == 2
    assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    _no_slot_held(instance)


def test_sigint_and_sigterm_stop_a_materialize_canceled_with_no_slot_held(tmp_path, sim):
    home = tmp_path / "home"
    env = _env(home, sim)
    _added(env)
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = _start(env)
        _when_requests(sim, sim.stats()["requests"] + 30, proc)
        sent = time.monotonic()
        proc.send_signal(signum)
        code, out, err = _finish(proc, timeout=15)
        assert time.monotonic() - sent < 10
        assert code == 128 + signum, out + err
        assert "canceled" in out and "its pool slots are free" in out
        instance = _instance(home)
        [latest, *_] = instance.get_runs(limit=1)
        assert latest.status == dg.DagsterRunStatus.CANCELED
        _no_slot_held(instance)
    code, out, err = _finish(_start(env))
    assert code == 0, out + err
    assert "14 documents:" in out and "0 failed" in out


def _dead_pid() -> int:
    """A pid that just ended (and is not reused this quickly)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _fabricated_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    run = instance.create_run_for_job(_job(), status=dg.DagsterRunStatus.STARTED, tags=tags)
    claim = instance.event_log_storage.claim_concurrency_slot("llm", run.run_id, "step")
    assert claim.is_claimed
    return run


def _job() -> dg.JobDefinition:
    @dg.op
    def step():
        pass

    @dg.job
    def crashed_job():
        step()

    return crashed_job


def test_recovery_marks_a_dead_owners_run_failed_and_frees_its_slot(instance):
    instance.event_log_storage.set_concurrency_slots("llm", 5)
    me = {HOST_TAG: host(), PID_TAG: str(os.getpid()),
          PID_STARTED_TAG: Path(f"/proc/{os.getpid()}/stat").read_text()
          .rsplit(")", 1)[1].split()[19]}
    dead = _fabricated_run(instance, {HOST_TAG: host(), PID_TAG: str(_dead_pid())})
    reused = _fabricated_run(instance, {**me, PID_STARTED_TAG: "1"})  # our pid, not our start
    other_host = _fabricated_run(instance, {HOST_TAG: "elsewhere", PID_TAG: "1"})
    alive = _fabricated_run(instance, me)
    # a container with this host name and its own pids: its pid means nothing here
    container = _fabricated_run(instance, {HOST_TAG: host(), PID_TAG: str(_dead_pid()),
                                           PID_NS_TAG: "pid:[1]"})

    found = recover(instance, "docgraph test")

    status = {r.run_id: instance.get_run_by_id(r.run_id).status
              for r in (dead, reused, other_host, alive, container)}
    assert status == {dead.run_id: dg.DagsterRunStatus.FAILURE,
                      reused.run_id: dg.DagsterRunStatus.FAILURE,
                      other_host.run_id: dg.DagsterRunStatus.STARTED,
                      alive.run_id: dg.DagsterRunStatus.STARTED,
                      container.run_id: dg.DagsterRunStatus.STARTED}
    held = {s.run_id for s in instance.event_log_storage.get_concurrency_info("llm").claimed_slots}
    assert held == {other_host.run_id, alive.run_id, container.run_id}
    assert sorted(found.recovered) == sorted([dead.run_id, reused.run_id])
    line = found.line()
    assert line.startswith("docgraph: recovery: 2 run(s) whose process is gone")
    assert "freed 2 slot(s): 2 in pool llm" in line
    assert f"run {other_host.run_id[:8]} (STARTED, process 1 on host elsewhere)" in line
    failure = [e.message for e in instance.all_logs(dead.run_id)
               if e.dagster_event and e.dagster_event.is_job_failure]
    assert failure == [f"docgraph: process {dead.tags[PID_TAG]} on host {host()} that ran this "
                       f"run is gone (killed or crashed); marked failed by docgraph test "
                       f"(pid {os.getpid()})"]
    again = recover(instance, "docgraph test")  # nothing more to do
    assert again.recovered == []
    assert again.line().startswith("docgraph: recovery: left alone, holding slots: run ")
    assert f"run {other_host.run_id[:8]} (STARTED, process 1 on host elsewhere)" in again.line()
    assert f"run {container.run_id[:8]} (STARTED, process " in again.line()


def test_a_reboot_makes_every_run_of_this_host_dead(instance):
    instance.event_log_storage.set_concurrency_slots("llm", 1)
    run = _fabricated_run(instance, {HOST_TAG: host(), PID_TAG: str(os.getpid()),
                                     BOOT_TAG: "another-boot"})
    assert recover(instance, "docgraph test").recovered == [run.run_id]
    assert instance.event_log_storage.get_concurrency_info("llm").claimed_slots == []


def test_every_answer_is_in_the_cache_before_it_is_handed_on(tmp_path, sim):
    """One committed cache write per valid answer: another connection (as a process
    started after a kill -9 would) sees each answer by the time the engine reports it."""
    path = tmp_path / "cache.sqlite"
    other = SQLiteCache(path)
    seen: list[int] = []

    def on_result(result) -> None:
        assert result.ok
        seen.append(len(other))
        assert len(other) >= len(seen)

    async def go():
        async with LLMEngine(fast_settings(sim, max_concurrency=CONCURRENCY),
                             cache=SQLiteCache(path)) as engine:
            return await engine.run(chat_items(40, Summary), on_result)

    metrics = asyncio.run(go())
    assert metrics.succeeded == 40 and len(other) == 40 == sim.stats()["requests"]


def test_a_pool_held_by_another_host_is_waited_for_out_loud_then_given_up(tmp_path, sim):
    home = tmp_path / "home"
    env = _env(home, sim)
    _added(env)
    instance = _instance(home)
    instance.event_log_storage.set_concurrency_slots("llm", 1)
    other = _fabricated_run(instance, {HOST_TAG: "elsewhere", PID_TAG: "77"})
    started = time.monotonic()
    done = subprocess.run([*_cli("materialize"), "--slot-wait-seconds", "2"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 75, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    assert (f"docgraph: recovery: left alone, holding slots: run {other.run_id[:8]} "
            "(STARTED, process 77 on host elsewhere)") in done.stdout
    assert (f"docgraph: pool llm has no free slot (1 of 1 held by run {other.run_id} "
            "(STARTED, process 77 on host elsewhere)); waiting up to 2 s") in done.stdout
    assert "docgraph: gave up after 2 s waiting for a slot of pool llm" in done.stderr
    assert sim.stats()["requests"] == 0
