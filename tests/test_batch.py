"""Batching partitions into runs, re-materializing one asset of the batch step, and two
runs of the same document overlapping."""

import threading
import time

import dagster as dg

from assets.batch import partition_batches
from assets.dagster_compat import check_passed, materialized_in_run
from assets.keys import success_rate_key
from pipeline_defs import cli
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.helpers import (
    ingest_config,
    materializations,
    run_ingest,
    run_pipeline,
    stored_chunks,
)


def test_partition_batches_are_contiguous_and_bounded():
    order = list("abcdefghij")
    assert partition_batches(order, order, 4) == [list("abcd"), list("efgh"), list("ij")]
    assert partition_batches(order, list("jbcaeh"), 10) == [list("abc"), ["e"], ["h"], ["j"]]
    assert partition_batches(order, [], 3) == []
    assert partition_batches(order, ["z"], 3) == []  # unknown keys are never run


def test_chunks_alone_rechunks_stored_documents(tmp_path, instance):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "long.md").write_text("\n\n".join(
        f"Paragraph {i}: Priya Raman escalated the Okta login failure to Marcus Feld."
        for i in range(40)
    ))
    [doc] = cli.add(instance, [folder])
    assert run_ingest(instance, doc.key).success
    before = stored_chunks(doc.key)

    (folder / "long.md").unlink()  # the source is gone: only the stored document remains
    job = dg.define_asset_job("rechunk", selection=["chunks"]).resolve(
        asset_graph=defs.resolve_asset_graph()
    )
    result = job.execute_in_process(
        partition_key=doc.key, instance=instance, raise_on_error=False,
        resources=defs.resources,
        run_config=ingest_config(max_tokens=64, overlap_tokens=0),
    )
    assert result.success
    after = stored_chunks(doc.key)
    assert len(after) > len(before) and after["n_tokens"].max() <= 64
    assert len(materializations(instance, "documents", doc.key)) == 1
    [latest, _] = materializations(instance, "chunks", doc.key)
    assert latest.asset_materialization.metadata["max_tokens"].value == 64


def test_an_older_run_recording_after_a_newer_one_leaves_the_document_to_it(
        tmp_path, instance):
    """Dagster judges a partition's check by the run that planned it last. A run still
    going when a newer one for the same document has recorded it (a step run again once
    its dead worker's task came back) must not record it after that: its evaluation would
    not count, and the check would read "not evaluated" for good. It leaves the document
    to the newer run and says so; the check stays passed, on the newer materialization."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Note\n\nPriya Raman closed ticket 42 for Acme.")
    [doc] = cli.add(instance, [folder])
    assert run_ingest(instance, doc.key).success
    assets = ["chunk_metadata", "graph_extraction"]
    with SimulatorServer(SimConfig(latency_ms=6000)) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path=str(tmp_path / "cache.sqlite"))
        older: dict = {}
        thread = threading.Thread(target=lambda: older.update(
            result=run_pipeline(instance, [doc.key], assets, llm)))
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while sim.stats()["requests"] < 1:  # planned, and its first call is out
                assert time.monotonic() < deadline
                time.sleep(0.05)
            sim.configure(latency_ms=0)
            newer = run_pipeline(instance, [doc.key], assets, llm)
        finally:
            thread.join(60)
    assert newer.success and older["result"].success
    older_id = older["result"].run_id
    for asset in assets:
        assert check_passed(instance, success_rate_key(dg.AssetKey(asset)), doc.key) is True
        [latest, *_] = materializations(instance, asset, doc.key)
        assert latest.run_id == newer.run_id
    assert materialized_in_run(instance, older_id) == []
    left = [e.message for e in instance.all_logs(older_id) if "left to run" in e.message]
    assert len(left) == 2 and all(newer.run_id in m for m in left), left
