"""scripts/prod.sh: the production topology comes up (PostgreSQL instance with the run
queue, daemon, webserver, Redis and two Celery workers in working directories of their own;
registry, response cache and LLM budget in PostgreSQL), twice without harm, takes a file
from the inbox and a backfill launched as the UI launches one through the daemon, each step
on a Celery worker, and goes down leaving nothing listening."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import requests
import sqlalchemy as sa

from pipeline_defs.intervals import INTERVAL_VARIABLE
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


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def _launch_backfill(port: int, partitions: list[str]) -> str:
    """A backfill of the ingestion assets, as the UI's "Materialize selected" launches it."""
    answer = requests.post(f"http://127.0.0.1:{port}/graphql", timeout=30, json={
        "query": LAUNCH_BACKFILL, "variables": {"params": {
            "assetSelection": [{"path": ["documents"]}, {"path": ["chunks"]}],
            "partitionNames": partitions}}}).json()
    launched = answer["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def _celery_workers(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """{step key: the Celery workers that ran it}, from the runs' engine events."""
    ran: dict[str, set[str]] = {}
    for run in instance.get_runs():
        for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            data = event.dagster_event.event_specific_data
            worker = data.metadata.get("Celery worker") if data and data.metadata else None
            if worker is not None:
                ran.setdefault(event.step_key, set()).add(worker.value)
    return ran


def test_up_twice_a_document_through_the_daemon_then_down(tmp_path, pg_url, request):
    prod_dir, port, root = tmp_path / "prod", free_port(), tmp_path / "root"
    inbox = root / "data" / "inbox"
    inbox.mkdir(parents=True)
    database = f"dg_prod_{os.getpid()}"
    env = dict(os.environ, DOCGRAPH_PROD_DIR=str(prod_dir), PORT=str(port),
               DOCGRAPH_PROD_DB=database, DOCGRAPH_ROOT=str(root),
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
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            # what the daemon's run queue reads (QueuedRunCoordinatorDaemon)
            queue = instance.get_concurrency_config().run_queue_config
            assert queue.max_concurrent_runs == 4
            deadline = time.monotonic() + 90
            while not {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= set(
                    instance.get_daemon_heartbeats()):
                assert time.monotonic() < deadline, instance.get_daemon_heartbeats().keys()
                time.sleep(1)
            # a file in the inbox: the sensor registers it (in PostgreSQL), the queue runs
            # ingestion, automation the enrichment, each run reading the shared registry
            (inbox / "note.md").write_text("# Note\n\nPriya Raman closed ticket 42 for Acme.")
            deadline = time.monotonic() + 240
            while not instance.get_materialized_partitions(dg.AssetKey("chunk_metadata")):
                assert time.monotonic() < deadline, (prod_dir / "logs" / "daemon.log"
                                                     ).read_text()[-3000:]
                time.sleep(2)
            with sa.create_engine(settings["DOCGRAPH_PG_URL"]).connect() as conn:
                assert conn.execute(sa.text("SELECT path FROM documents")).scalars().all() \
                    == ["data/inbox/note.md"]
            assert not list(prod_dir.rglob("registry.sqlite"))
            assert not list(prod_dir.rglob("llm-cache.sqlite"))

            # a backfill of the sample corpus, launched through the webserver as the UI
            # does, in two halves so that two ingestion runs are queued at once
            corpus = root / "corpus"
            shutil.copytree(REPO / "data" / "sample", corpus)
            added = subprocess.run([str(REPO / ".venv" / "bin" / "docgraph"), "add",
                                    str(corpus)], env={**env, **settings}, cwd=root,
                                   capture_output=True, text=True, timeout=120)
            assert added.returncode == 0, added.stderr
            keys = sorted(set(instance.get_dynamic_partitions("documents"))
                          - set(instance.get_materialized_partitions(dg.AssetKey("chunks"))))
            assert len(keys) >= 4
            for half in (keys[::2], keys[1::2]):
                _launch_backfill(port, half)
            deadline = time.monotonic() + 300
            while not set(keys) <= instance.get_materialized_partitions(
                    dg.AssetKey("chunk_metadata")):
                assert time.monotonic() < deadline, (prod_dir / "logs" / "daemon.log"
                                                     ).read_text()[-3000:]
                time.sleep(2)
            for key in keys:  # every partition's outcome, as the UI reads it
                for asset in ("chunks", "chunk_metadata", "document_themes"):
                    assert key in instance.get_materialized_partitions(dg.AssetKey(asset))
            ran = _celery_workers(instance)
            assert {"ingestion", "enrichment"} <= set(ran), ran
            assert len(set().union(*ran.values())) == 2, ran  # both workers took steps
            instance.dispose()
        finally:
            del os.environ["DOCGRAPH_PG_URL"]
    finally:
        down = _prod("down", env)
    assert down.returncode == 0, down.stderr
    assert not _listening(port)
    for pid in pids.values():
        assert not Path(f"/proc/{pid.strip()}").exists()
    assert _prod("status", env).returncode == 1
    assert _prod("down", env).returncode == 0  # twice: nothing to stop
    _admin(pg_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
