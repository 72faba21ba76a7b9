"""What a user sees in the UI after a batch run with a bad document: asked of a real
dagster-webserver over HTTP, on an instance stored in the real PostgreSQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline_defs import cli
from tests.conftest import REPO
from tests.helpers import run_ingest

STATUS_QUERY = """{ assetNodes(assetKeys: [{path: ["documents"]}, {path: ["chunks"]}]) {
  assetKey { path }
  assetPartitionStatuses { ... on DefaultPartitionStatuses {
    materializedPartitions failedPartitions } } } }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webserver(pg_instance):
    """dagster-webserver on loopback, reading the same instance as the test."""
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=pg_instance.root_directory)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1",
         "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert "errors" not in body, body
    return body["data"]


def test_batch_with_a_bad_document_shows_good_materialized_and_bad_failed(
    pg_instance, tmp_path, webserver
):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a-good.md").write_text("# Fine\n\nTomás Alvarez rotated the webhook secret.")
    (folder / "b-bad.txt").write_bytes(b"\x00\x01\x02 not text")
    (folder / "c-good.txt").write_text("Priya Raman closed the Okta ticket.")
    docs = {d.path.name: d.key for d in cli.add(pg_instance, [folder])}
    keys = pg_instance.get_dynamic_partitions("documents")
    result = run_ingest(pg_instance, keys[0], keys[-1])
    assert not result.success

    nodes = _graphql(webserver, STATUS_QUERY)["assetNodes"]
    assert len(nodes) == 2
    for node in nodes:
        status = node["assetPartitionStatuses"]
        assert sorted(status["materializedPartitions"]) == sorted(
            [docs["a-good.md"], docs["c-good.txt"]]
        ), node["assetKey"]
        assert status["failedPartitions"] == [docs["b-bad.txt"]], node["assetKey"]
