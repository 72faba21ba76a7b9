"""The batch route as a user meets it: `docgraph materialize --route batch` as a real
subprocess against the simulator's Batch API on loopback; killed with SIGKILL after it
submitted, then finished by a second run of the CLI or by the real daemon's batch_sensor,
never submitting a line twice."""

import subprocess
import time

import dagster as dg
import pytest

from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.conftest import REPO
from tests.daemon import dagster_servers
from tests.test_crash_recovery import _added, _assert_same, _cli, _env, _instance, _outputs

STAGES = ("chunk_metadata", "chunk_embeddings", "graph_extraction", "document_themes")
SAMPLE_ITEMS = 305  # the sample corpus's LLM items (make demo: 305 answers)


@pytest.fixture
def sim():
    with SimulatorServer(SimConfig(latency_ms=5)) as server:
        yield server


def _graph_off(env: dict[str, str], **more: str) -> dict[str, str]:
    return {**env, "DOCGRAPH_GRAPH": "off", **more}


def _materialize(env: dict[str, str], *args: str, timeout: float = 300):
    return subprocess.run(_cli("materialize", *args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(_cli("materialize", *args), cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _when_batches(sim: SimulatorServer, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while sim.stats()["batch"].get("batches_created", 0) < n:
        assert proc.poll() is None, f"materialize ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the simulator never saw the batches"
        time.sleep(0.05)


def test_route_batch_stores_what_sync_stores_at_half_the_price(tmp_path, sim):
    sync_env = _graph_off(_env(tmp_path / "sync", sim))
    _added(sync_env)
    done = _materialize(sync_env)
    assert done.returncode == 0, done.stdout + done.stderr
    want = _outputs(tmp_path / "sync")
    sync_cost = _costs(tmp_path / "sync")

    sim.simulator.reset()
    env = _graph_off(_env(tmp_path / "batch", sim))
    _added(env)
    done = _materialize(env, "--route", "batch")
    assert done.returncode == 0, done.stdout + done.stderr
    stats = sim.stats()
    assert stats["chat_requests"] == 0 and stats["embedding_requests"] == 0
    assert stats["batch"]["batch_lines"] == SAMPLE_ITEMS
    assert stats["batch"]["batches_created"] == 6  # 3 chunk stages, then 3 theme rounds
    assert "docgraph: batch lane: chunk_metadata batch" in done.stderr  # progress
    assert f"{SAMPLE_ITEMS} answers, 0 of them from the response cache, {SAMPLE_ITEMS} " \
           "through 6 batches; 0 HTTP calls made" in done.stdout
    assert "14 documents: 14 materialized through every stage" in done.stdout
    _assert_same(_outputs(tmp_path / "batch"), want)
    cost = _costs(tmp_path / "batch")
    for stage in STAGES:
        assert cost[stage]["route"] == {"batch"}
        rounding = 14e-6  # each document's dollars are rounded to 6 places
        assert cost[stage]["usd"] == pytest.approx(sync_cost[stage]["usd"] / 2, abs=rounding)
        assert cost[stage]["saved"] == pytest.approx(cost[stage]["usd"], abs=rounding)
        assert cost[stage]["batches"]


def _costs(home) -> dict[str, dict]:
    """Per stage, over its documents' latest materializations: routes, dollars, batches."""
    instance = _instance(home)
    out = {}
    for stage in STAGES:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage)), limit=1000).records
        metas = [r.asset_materialization.metadata for r in records]
        out[stage] = {
            "route": {m["llm_route"].value for m in metas},
            "usd": sum(m["estimated_cost_usd"].value for m in metas),
            "saved": sum(m["cost_saved_usd"].value for m in metas),
            "batches": {b for m in metas for b in m["batch_ids"].value},
        }
    return out


def test_killed_after_submitting_a_second_run_finishes_without_a_second_submission(
        tmp_path, sim):
    sim.configure(batch={"completion_delay_seconds": 3.0})
    env = _graph_off(_env(tmp_path / "home", sim))
    _added(env)
    first = _start(env, "--route", "batch")
    _when_batches(sim, 3, first)  # the chunk stages' batches are in
    first.kill()
    first.wait()
    done = _materialize({**env, "LLM_ROUTE": "batch"})  # the route from the environment
    assert done.returncode == 0, done.stdout + done.stderr
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 6 and stats["batch_lines"] == SAMPLE_ITEMS
    assert sim.stats()["chat_requests"] == 0
    assert "14 documents: 14 materialized through every stage" in done.stdout


@pytest.mark.daemon
def test_killed_after_submitting_the_batch_sensor_finishes_it(tmp_path, sim):
    """The daemon's runs on LLM_ROUTE=batch: each enrichment run sends its batch and ends;
    batch_sensor requests the run that records its documents once it is over."""
    sim.configure(batch={"completion_delay_seconds": 3.0})
    home = tmp_path / "home"
    env = _graph_off(_env(home, sim))
    _added(env)
    first = _start(env, "--route", "batch")
    _when_batches(sim, 3, first)
    first.kill()
    first.wait()
    daemon_env = {k: v for k, v in env.items() if k != "DAGSTER_HOME"}
    with dagster_servers(home / "dagster", env={**daemon_env, "LLM_ROUTE": "batch"}) as servers:
        instance = servers.instance
        keys = instance.get_dynamic_partitions("documents")

        def recorded() -> bool:
            return all(_latest(instance, "document_themes", key) for key in keys)

        servers.wait_for(recorded, "every document's themes, recorded from batches",
                         timeout=400)
        runs = instance.get_runs()
        by_sensor = [r for r in runs if r.tags.get("dagster/sensor_name") == "batch_sensor"]
        assert by_sensor, servers.diagnostics()
        # the runs that ended with documents waiting told the UI which batch they wait for
        observed = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("document_themes")), limit=100).records
        waited = [o.event_log_entry.asset_observation.metadata for o in observed]
        assert waited and all(m["llm_route"].value == "batch" and m["batch_ids"].value
                              for m in waited)
        for key in keys:
            routes = {m.asset_materialization.metadata["llm_route"].value
                      for m in _all(instance, "chunk_metadata", key)}
            assert "batch" in routes and routes <= {"batch", "cache"}, (key, routes)
    stats = sim.stats()
    assert stats["chat_requests"] == 0 and stats["embedding_requests"] == 0
    assert stats["batch"]["batch_lines"] == SAMPLE_ITEMS  # no line sent twice


def _all(instance: dg.DagsterInstance, asset: str, partition: str) -> list:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=100).records


def _latest(instance: dg.DagsterInstance, asset: str, partition: str):
    records = _all(instance, asset, partition)
    return records[0] if records else None



@pytest.mark.daemon
def test_the_daemons_runs_send_batches_and_end_and_the_sensor_records_them(tmp_path, sim):
    """`make dev` with LLM_ROUTE=batch: a file in the inbox; the enrichment run sends its
    batches and ends (no run held, no pool slot); while the batch runs, automation does not
    request the waiting documents again; batch_sensor's run records them."""
    sim.configure(batch={"completion_delay_seconds": 25.0})
    home = tmp_path / "home"
    env = _graph_off(_env(home, sim), LLM_ROUTE="batch", LLM_BATCH_POLL_SECONDS="1")
    env.pop("DAGSTER_HOME")
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with dagster_servers(home / "dagster", env=env) as servers:
        instance = servers.instance
        (servers.inbox / "retry.md").write_text(
            "# Payment retries\n\nPriya Raman moved the payment retry queue to Kafka after "
            "the March incident. Marcus Feld added an idempotency key to every charge.\n")
        servers.wait_for(lambda: sim.stats()["batch"].get("batches_created", 0) >= 3,
                         "the enrichment run's batches", timeout=180)
        [key] = instance.get_dynamic_partitions("documents")

        def enrichment_runs() -> list:
            return [r for r in instance.get_runs() if r.job_name != "ingestion_job"
                    and dg.AssetKey("chunk_metadata") in (r.asset_selection or ())]

        servers.wait_for(lambda: enrichment_runs() and all(r.is_finished
                                                          for r in enrichment_runs()),
                         "the sending run to end", timeout=60)
        assert not _all(instance, "chunk_metadata", key)  # waiting, not recorded
        time.sleep(15)  # automation ticks every 5 s here: it must not ask again
        assert len(enrichment_runs()) == 1, servers.diagnostics()
        servers.wait_for(lambda: _latest(instance, "document_themes", key),
                         "the document's themes, recorded from batches", timeout=300)
        by_sensor = [r for r in instance.get_runs()
                     if r.tags.get("dagster/sensor_name") == "batch_sensor"]
        assert by_sensor, servers.diagnostics()
        meta = _latest(instance, "chunk_metadata", key).asset_materialization.metadata
        assert meta["llm_route"].value == "batch" and meta["cost_saved_usd"].value > 0
    stats = sim.stats()
    assert stats["chat_requests"] == 0 and stats["embedding_requests"] == 0
