"""Batching partitions into runs, and re-materializing one asset of the batch step."""

import dagster as dg

from assets.batch import partition_batches
from pipeline_defs import cli
from pipeline_defs.definitions import defs
from tests.helpers import ingest_config, materializations, run_ingest, stored_chunks


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
