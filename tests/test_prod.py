"""scripts/prod.sh: the production topology comes up (PostgreSQL instance with the run
queue, daemon, webserver, Redis and two Celery workers in working directories of their own;
registry, response cache and LLM budget in PostgreSQL), twice without harm; takes a file
from the inbox and a backfill launched as the UI launches one, each step on a Celery
worker, through to Neo4j, though the worker running an enrichment step is killed with -9;
and goes down leaving nothing listening. One topology for all of it: bringing it up and
waiting for the daemon's sensors is most of the time."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import requests
import sqlalchemy as sa

from assets.dagster_compat import check_states
from assets.keys import GATED, NEO4J_GRAPH, NEO4J_POOL, success_rate_key
from bench.backfill import celery_worker, celery_workers, launch_backfill
from pipeline_defs.intervals import INTERVAL_VARIABLE
from resources.neo4j import duplicate_keys
from resources.postgres_storage import PooledPostgresRunStorage
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.conftest import REPO, _admin, instance_at
from tests.daemon import SENSOR_INTERVAL_SECONDS, free_port

SCRIPT = REPO / "scripts" / "prod.sh"


def _prod(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), command], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env_file(prod_dir: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (prod_dir / "env").read_text().splitlines())


def _running_step(instance: dg.DagsterInstance, step: str) -> str | None:
    """The Celery worker running `step` now: its engine event is there, its end is not."""
    for run in instance.get_runs(filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED])):
        worker, ended = None, False
        for record in instance.all_logs(run.run_id):
            if record.step_key != step:
                continue
            worker = celery_worker(record) or worker
            ended |= record.dagster_event_type in (dg.DagsterEventType.STEP_SUCCESS,
                                                   dg.DagsterEventType.STEP_FAILURE)
        if worker and not ended:
            return worker
    return None


def _kill_a_worker_mid_enrichment(instance: dg.DagsterInstance, sim: SimulatorServer,
                                  prod_dir: Path) -> int:
    """Wait for an enrichment step with some of its calls answered, kill -9 its worker's
    whole process group; the group's pid."""
    deadline = time.monotonic() + 240
    while (victim := _running_step(instance, "enrichment")) is None:
        assert time.monotonic() < deadline, "no enrichment step started"
        time.sleep(0.2)
    started_at = sim.stats()["requests"]
    while sim.stats()["requests"] < started_at + 10:  # some answered (and cached), not all
        assert time.monotonic() < deadline, "the enrichment step made no call"
        time.sleep(0.05)
    number = victim.split("@")[0].rsplit("-", 1)[1]
    leader = int((prod_dir / f"worker-{number}.pid").read_text())
    os.killpg(leader, signal.SIGKILL)
    return leader


def _steps_run_twice(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """(run, step) pairs that succeeded more than once: a step the broker handed out again
    while it was still running."""
    twice = []
    for run in instance.get_runs():
        ends = [record.event_log_entry.step_key for record in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records]
        twice += [(run.run_id, step) for step in set(ends) if ends.count(step) > 1]
    return twice


def _stuck(instance: dg.DagsterInstance, documents: set[str], assets: tuple[str, ...],
           prod_dir: Path) -> str:
    """What a chain that did not finish left: the partitions each asset lacks, every run
    with its status, partition and retry tags and, for a failed one, why; the daemon's
    last lines."""
    lines = []
    for asset in assets:
        done = instance.get_materialized_partitions(dg.AssetKey(asset))
        lines.append(f"{asset}: missing {sorted(documents - done)}")
    stale = sorted(documents - instance.get_materialized_partitions(NEO4J_GRAPH))
    for gated in GATED if stale else ():
        lines.append(f"{gated.to_user_string()} gate: "
                     f"{check_states(instance, success_rate_key(gated), stale)}")
    for record in instance.get_run_records():
        run = record.dagster_run
        tags = {k: v for k, v in run.tags.items()
                if "partition" in k or k.startswith("dagster/auto") or k in (
                    "dagster/retry_number", "dagster/parent_run_id", "dagster/backfill")}
        lines.append(f"run {run.run_id[:8]} {run.job_name} {run.status.value} {tags}")
        if run.status == dg.DagsterRunStatus.FAILURE:
            lines += [f"    {event.message[:300]}" for event in instance.all_logs(
                run.run_id, of_type={dg.DagsterEventType.RUN_FAILURE,
                                     dg.DagsterEventType.STEP_FAILURE,
                                     dg.DagsterEventType.ENGINE_EVENT})
                      if event.dagster_event.event_type != dg.DagsterEventType.ENGINE_EVENT
                      or "rror" in event.message]
    daemon = (prod_dir / "logs" / "daemon.log").read_text()
    return "\n".join(lines + ["daemon.log (end):", daemon[-1500:]])


def test_up_twice_through_the_daemon_and_a_killed_worker_then_down(tmp_path, pg_url,
                                                                    chain_graph):
    prod_dir, port, root = tmp_path / "prod", free_port(), tmp_path / "root"
    inbox = root / "data" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copytree(REPO / "data" / "sample", root / "corpus")
    database = f"dg_prod_{os.getpid()}"
    sim = SimulatorServer(SimConfig(latency_ms=150, cheap_answers=True)).__enter__()
    env = dict(os.environ, DOCGRAPH_PROD_DIR=str(prod_dir), PORT=str(port),
               DOCGRAPH_PROD_DB=database, DOCGRAPH_ROOT=str(root),
               OPENAI_BASE_URL=sim.base_url, OPENAI_API_KEY="test", LLM_MAX_CONCURRENCY="4",
               # a step of a dead worker is handed out again after a minute: longer than
               # any step here (a longer step would be handed out twice, still running)
               DOCGRAPH_CELERY_VISIBILITY_SECONDS="60", DOCGRAPH_CELERY_SWEEP_SECONDS="2",
               **{INTERVAL_VARIABLE: str(SENSOR_INTERVAL_SECONDS)})
    try:
        up = _prod("up", env)
        assert up.returncode == 0, up.stderr
        pids = {name: (prod_dir / f"{name}.pid").read_text()
                for name in ("daemon", "webserver", "worker-1", "worker-2")}
        again = _prod("up", env)  # safe to run twice: nothing new is started
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr
        assert pids == {n: (prod_dir / f"{n}.pid").read_text() for n in pids}
        assert _prod("status", env).returncode == 0

        settings = _env_file(prod_dir)
        assert settings["DOCGRAPH_REGISTRY_URL"] == settings["LLM_CACHE_PATH"] == \
            settings["LLM_BUDGET_URL"] == settings["DOCGRAPH_PG_URL"]
        assert settings["DOCGRAPH_PG_URL"].endswith(database)
        assert settings["DOCGRAPH_CELERY_BROKER"].startswith("redis://127.0.0.1:")
        answer = requests.post(f"http://127.0.0.1:{port}/graphql",
                               json={"query": "{ version }"}, timeout=10).json()
        assert answer["data"]["version"] == dg.__version__
        os.environ["DOCGRAPH_PG_URL"] = settings["DOCGRAPH_PG_URL"]
        try:
            instance = instance_at(Path(settings["DAGSTER_HOME"]))
            assert isinstance(instance.run_storage, PooledPostgresRunStorage)
            assert instance.event_log_storage.get_concurrency_info(NEO4J_POOL).slot_count == 1
            # what the daemon's run queue reads (QueuedRunCoordinatorDaemon)
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 4
            # crashed runs are retried, runs whose step reported its documents' failures not
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
            assert not instance.run_retries_retry_on_asset_or_op_failure
            deadline = time.monotonic() + 90
            while not {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= set(
                    instance.get_daemon_heartbeats()):
                assert time.monotonic() < deadline, instance.get_daemon_heartbeats().keys()
                time.sleep(1)

            # a file in the inbox (the sensor registers it in PostgreSQL, the queue runs
            # it), and a backfill of the sample corpus launched through the webserver as
            # the UI does, in two halves (ranges: a run each) so that two ingestion runs are
            # queued at once
            (inbox / "note.md").write_text("# Note\n\nPriya Raman closed ticket 42 for Acme.")
            added = subprocess.run([str(REPO / ".venv" / "bin" / "docgraph"), "add",
                                    str(root / "corpus")], env={**env, **settings}, cwd=root,
                                   capture_output=True, text=True, timeout=120)
            assert added.returncode == 0, added.stderr
            # the inbox sensor may have registered the note already: it is not the corpus
            corpus = sorted(k for k in instance.get_dynamic_partitions("documents")
                            if not k.startswith("note.md"))
            assert len(corpus) >= 4
            for half in (corpus[:len(corpus) // 2], corpus[len(corpus) // 2:]):
                launch_backfill(port, half)
            leader = _kill_a_worker_mid_enrichment(instance, sim, prod_dir)

            def registered() -> set[str]:  # the corpus, and the note once the sensor saw it
                return set(instance.get_dynamic_partitions("documents"))

            final = ("chunks", "chunk_metadata", "document_themes", "neo4j_graph")
            deadline = time.monotonic() + 400
            while len(registered()) <= len(corpus) or not all(  # the note is in, and
                    registered() <= instance.get_materialized_partitions(dg.AssetKey(a))
                    for a in final):
                assert time.monotonic() < deadline, _stuck(instance, registered(), final,
                                                           prod_dir)
                time.sleep(2)
            with sa.create_engine(settings["DOCGRAPH_PG_URL"]).connect() as conn:
                assert "data/inbox/note.md" in conn.execute(
                    sa.text("SELECT path FROM documents")).scalars().all()
            assert not list(prod_dir.rglob("registry.sqlite"))
            assert not list(prod_dir.rglob("llm-cache.sqlite"))
            ran = celery_workers(instance)
            assert {"ingestion", "enrichment", "neo4j_graph"} <= set(ran), ran
            assert len(set().union(*ran.values())) == 2, ran  # both workers took steps
            assert not Path(f"/proc/{leader}").exists()
            # and no step that was still running was handed out a second time
            assert not _steps_run_twice(instance)
            # the killed step ran again elsewhere: no item lost (every document through
            # Neo4j, whose materialization is recorded only once its read-back check
            # passed), nothing there twice, and what the dead worker had been answered
            # came from the response cache
            assert duplicate_keys(chain_graph) == 0
            cached = sum(r.asset_materialization.metadata["cache_hits"].value
                         for r in instance.fetch_materializations(dg.AssetRecordsFilter(
                             asset_key=dg.AssetKey("chunk_metadata")), limit=1000).records)
            assert cached > 0
            instance.dispose()
        finally:
            del os.environ["DOCGRAPH_PG_URL"]
    finally:
        down = _prod("down", env)
        sim.__exit__()
    assert down.returncode == 0, down.stderr
    assert not _listening(port)
    for pid in pids.values():
        assert not Path(f"/proc/{pid.strip()}").exists()
    assert _prod("status", env).returncode == 1
    assert _prod("down", env).returncode == 0  # twice: nothing to stop
    _admin(pg_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
