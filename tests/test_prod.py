"""scripts/prod.sh: the production topology comes up (PostgreSQL instance with the run
queue, daemon, webserver; registry and response cache in PostgreSQL), twice without
harm, runs a document through the daemon, and goes down leaving nothing listening."""

import os
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
        pids = {name: (prod_dir / f"{name}.pid").read_text() for name in ("daemon", "webserver")}
        again = _prod("up", env)  # safe to run twice: nothing new is started
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr
        assert pids == {n: (prod_dir / f"{n}.pid").read_text() for n in pids}
        assert _prod("status", env).returncode == 0

        settings = _env_file(prod_dir)
        assert settings["DOCGRAPH_REGISTRY_URL"] == settings["LLM_CACHE_PATH"] == \
            settings["DOCGRAPH_PG_URL"] and settings["DOCGRAPH_PG_URL"].endswith(database)
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
