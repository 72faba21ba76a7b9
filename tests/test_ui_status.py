"""What a user sees in the UI after a batch run with a bad document: asked of a real
dagster-webserver over HTTP, on an instance stored in the real PostgreSQL."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from pipeline_defs import cli
from simulator.server import SimulatorServer
from tests.conftest import REPO
from tests.helpers import failing_a, run_ingest, two_documents

ASSETS = 'assetNodes(assetKeys: [{path: ["documents"]}, {path: ["chunks"]}])'
STATUS_QUERY = "{ " + ASSETS + """ { assetKey { path }
  assetPartitionStatuses { ... on DefaultPartitionStatuses {
    materializedPartitions failedPartitions } } } }"""
STALE_FIELDS = """ { assetKey { path }
  staleStatus(partition: $k) staleCauses(partition: $k) { key { path } reason } } }"""
STALE_QUERY = "query($k: String) { " + ASSETS + STALE_FIELDS
CHAIN = ["documents", "chunks", "chunk_metadata", "chunk_embeddings", "document_themes"]
CHAIN_STALE_QUERY = "query($k: String) { assetNodes(assetKeys: [" + ", ".join(
    f'{{path: ["{name}"]}}' for name in CHAIN) + "])" + STALE_FIELDS
CATALOG_STALE_QUERY = """{ assetNodes(assetKeys: [{path: ["theme_catalog"]}]) {
  staleStatus staleCauses { key { path } reason } } }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webserver(pg_instance):
    with running_webserver(pg_instance, REPO / "workspace.yaml") as url:
        yield url


@contextlib.contextmanager
def running_webserver(instance: dg.DagsterInstance, workspace: Path) -> Iterator[str]:
    """dagster-webserver on loopback, reading the same instance as the test."""
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=instance.root_directory)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1",
         "-p", str(port), "-w", str(workspace)],
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


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(),
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


def _staleness(url: str, key: str, query: str = STALE_QUERY
               ) -> dict[str, tuple[str, list[str]]]:
    """{asset: (stale status, ["<cause asset> <reason>", ...])} for one partition."""
    return {
        n["assetKey"]["path"][0]: (
            n["staleStatus"], [f"{c['key']['path'][0]} {c['reason']}" for c in n["staleCauses"]]
        )
        for n in _graphql(url, query, {"k": key})["assetNodes"]
    }


def test_editing_a_file_makes_only_its_own_chunks_stale(pg_instance, tmp_path, webserver):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nElena Petrova announced the 2027 pricing.")
    (folder / "b.md").write_text("# B\n\nMarcus Feld fixed the mobile crash.")
    a, b = cli.add(pg_instance, [folder])
    assert all(o.status == "ok" for o in cli.materialize(pg_instance, [a.key, b.key]))
    for key in (a.key, b.key):
        assert _staleness(webserver, key) == {"documents": ("FRESH", []), "chunks": ("FRESH", [])}

    # re-reading an unchanged file yields the same data version: chunks stay fresh
    assert run_ingest(pg_instance, a.key, asset_selection=[dg.AssetKey("documents")]).success
    assert _staleness(webserver, a.key)["chunks"] == ("FRESH", [])

    (folder / "a.md").write_text("# A\n\nElena Petrova announced the 2028 pricing.")
    assert run_ingest(pg_instance, a.key, asset_selection=[dg.AssetKey("documents")]).success
    status, causes = _staleness(webserver, a.key)["chunks"]
    assert status == "STALE" and causes == ["documents has a new data version"]
    assert _staleness(webserver, b.key)["chunks"] == ("FRESH", [])


# The project's definitions after an edit of the chunk-metadata prompt (with its version
# bumped), as a developer would make it.
EDITED_PROMPT = """
import dataclasses
import assets.prompts as prompts
prompts.CHUNK_METADATA = dataclasses.replace(prompts.CHUNK_METADATA, version="chunk-metadata-v2")
from pipeline_defs.definitions import defs  # noqa: E402
"""


def test_a_new_prompt_version_makes_exactly_its_dependent_assets_stale(pg_instance, tmp_path):
    (tmp_path / "edited.py").write_text(EDITED_PROMPT)
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: edited.py\n"
        f"      working_directory: {REPO}\n      location_name: docgraph\n")
    [doc] = cli.add(pg_instance, [REPO / "data" / "sample" / "support-chat-double-charge.txt"])
    assert [o.status for o in cli.materialize(pg_instance, [doc.key])] == ["ok"]
    with running_webserver(pg_instance, REPO / "workspace.yaml") as url:
        before = _staleness(url, doc.key, CHAIN_STALE_QUERY)
        [catalog_before] = _graphql(url, CATALOG_STALE_QUERY)["assetNodes"]
    assert {asset: status for asset, (status, _) in before.items()} == dict.fromkeys(
        CHAIN, "FRESH")
    assert catalog_before["staleStatus"] == "FRESH"

    with running_webserver(pg_instance, tmp_path / "workspace.yaml") as url:
        after = _staleness(url, doc.key, CHAIN_STALE_QUERY)
        [catalog_after] = _graphql(url, CATALOG_STALE_QUERY)["assetNodes"]
    # Only the asset that uses the prompt: its downstream turns stale when its data changes
    # (re-materializing it), as for any new upstream data version.
    stale = {asset for asset, (status, _) in after.items() if status == "STALE"}
    assert stale == {"chunk_metadata"}, after
    assert after["chunk_metadata"][1] == ["chunk_metadata has a new code version"]
    assert catalog_after["staleStatus"] == "FRESH", catalog_after


CHECKS_QUERY = """{ assetNodes(assetKeys: [%s]) {
  assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
    ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions }
  } } } } } }"""
LLM_ASSETS = ("chunk_metadata", "chunk_embeddings", "graph_extraction", "document_themes")


def _check_partitions(url: str, assets: tuple[str, ...] = ("chunk_metadata",)
                      ) -> dict[str, tuple[list[str], list[str]]]:
    """{check: (passed partitions, failed partitions)} as the checks' Partitions tabs show
    them (a partition whose evaluation is not current is in neither)."""
    keys = ", ".join(f'{{path: ["{a}"]}}' for a in assets)
    return {c["name"]: (sorted(c["partitionStatuses"]["succeededPartitions"]),
                        sorted(c["partitionStatuses"]["failedPartitions"]))
            for node in _graphql(url, CHECKS_QUERY % keys)["assetNodes"]
            for c in node["assetChecksOrError"]["checks"]}


def test_after_the_demo_every_gate_reads_passed_for_every_document(pg_instance, webserver):
    """Issue 10's acceptance: after `make demo`'s chain, Dagster's own check state (what the
    UI's check Partitions tab reads) is current and passed for every document and gate."""
    keys = sorted(d.key for d in cli.add(pg_instance, [REPO / "data" / "sample"]))
    assert {o.status for o in cli.materialize(pg_instance, keys)} == {"ok"}
    partitions = _check_partitions(webserver, LLM_ASSETS)
    gates = {f"{asset}_success_rate" for asset in LLM_ASSETS}
    assert gates <= set(partitions)
    for gate in gates:
        assert partitions[gate] == (keys, []), gate


def test_the_checks_partitions_tab_shows_each_documents_gate(pg_instance, tmp_path, webserver,
                                                             monkeypatch):
    """Each partition's evaluation is tied to the materialization it judges, so the UI counts
    it (not 'Missing'), per document, and it stays right after a later run."""
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = two_documents(tmp_path / "docs", pg_instance)
    a, b = docs["a.md"], docs["b.md"]
    with SimulatorServer(failing_a()) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        cli.materialize(pg_instance, [a, b])
        assert _check_partitions(webserver)["chunk_metadata_success_rate"] == ([b], [a])
        cli.materialize(pg_instance, [b], force=True)  # a later run, one document
        assert _check_partitions(webserver)["chunk_metadata_success_rate"] == ([b], [a])
