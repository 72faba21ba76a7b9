"""chunk_metadata: the engine over batches of documents, metrics per document, and the
success-rate gate — offline and over real HTTP to the simulator."""

import dagster as dg
import pandas as pd

from assets.models import ChunkMetadata
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.helpers import (
    MARKER,
    checks_of_run,
    failing_a,
    ingest_config,
    materializations,
    run_ingest,
    run_pipeline,
    two_documents,
)

SMALL_CHUNKS = ingest_config(max_tokens=48, overlap_tokens=0)


def _corpus(tmp_path, instance) -> dict[str, str]:
    docs = two_documents(tmp_path / "docs", instance)
    keys = instance.get_dynamic_partitions("documents")
    assert run_ingest(instance, keys[0], keys[-1], run_config=SMALL_CHUNKS).success
    return docs


def _metadata(instance, key: str) -> dict:
    [latest, *_] = materializations(instance, "chunk_metadata", key)
    return {k: v.value for k, v in latest.asset_materialization.metadata.items()}


def test_offline_metadata_for_a_batch_of_documents(tmp_path, instance):
    docs = _corpus(tmp_path, instance)
    keys = instance.get_dynamic_partitions("documents")
    result = run_pipeline(instance, keys, ["chunk_metadata"],
                          LLMResource(cache_path=str(tmp_path / "cache.sqlite")))
    assert result.success
    checks = checks_of_run(instance, result.run_id)
    for key in docs.values():
        frame = defs.resources["store"].read(dg.AssetKey("chunk_metadata"), key, pd.DataFrame)
        chunks = defs.resources["store"].read(dg.AssetKey("chunks"), key, pd.DataFrame)
        assert frame["chunk_id"].tolist() == chunks["chunk_id"].tolist()
        assert frame["error_class"].isna().all()
        for row in frame.to_dict("records"):
            ChunkMetadata.model_validate({k: row[k] for k in ChunkMetadata.model_fields} |
                                         {"keywords": list(row["keywords"])})
        meta = _metadata(instance, key)
        assert meta["llm_provider"] == "offline"
        assert meta["attempted"] == meta["succeeded"] == len(chunks)
        assert checks[("chunk_metadata_success_rate", key)].passed


def test_a_document_with_failing_chunks_fails_its_gate_alone_and_heals(
    tmp_path, instance, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = _corpus(tmp_path, instance)
    a, b = docs["a.md"], docs["b.md"]
    keys = instance.get_dynamic_partitions("documents")
    config = SimConfig(target=MARKER, target_status=400, target_rate=0.2, rate_500=0.1,
                       seed=7)
    with SimulatorServer(config) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path=str(tmp_path / "cache.sqlite"),
                          max_concurrency=8)
        result = run_pipeline(instance, keys, ["chunk_metadata"], llm)
        calls_first_run = sim.stats()["requests"]
        assert result.success  # the step recorded both documents; the gate judges them
        checks = checks_of_run(instance, result.run_id)
        gate = "chunk_metadata_success_rate"
        assert not checks[(gate, a)].passed and checks[(gate, b)].passed
        failed = checks[(gate, a)].metadata["failed_items"].value
        assert failed and {f["error_class"] for f in failed} == {"client_error"}

        meta_a, meta_b = _metadata(instance, a), _metadata(instance, b)
        for meta in (meta_a, meta_b):
            assert meta["attempted"] == meta["succeeded"] + meta["failed"]
        assert meta_a["failed"] == len(failed) and meta_b["failed"] == 0
        # the metadata accounts for every HTTP request the simulator saw
        assert meta_a["http_calls"] + meta_b["http_calls"] == calls_first_run
        assert meta_a["retries"] + meta_b["retries"] > 0  # the 500s were retried, not failed

        frame = defs.resources["store"].read(dg.AssetKey("chunk_metadata"), a, pd.DataFrame)
        assert sorted(frame.loc[frame["error_class"].notna(), "chunk_id"]) == sorted(
            f["id"] for f in failed)

        # faults stop: re-materializing asks only for the chunks that failed
        sim.configure(target_rate=0.0, rate_500=0.0)
        again = run_pipeline(instance, [a], ["chunk_metadata"], llm)
        assert again.success and checks_of_run(instance, again.run_id)[(gate, a)].passed
        assert sim.stats()["requests"] - calls_first_run == len(failed)
        assert _metadata(instance, a)["cache_hits"] == meta_a["succeeded"]


def test_embeddings_are_batched_per_request_and_gated_per_document(
    tmp_path, instance, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = _corpus(tmp_path, instance)
    a, b = docs["a.md"], docs["b.md"]
    keys = instance.get_dynamic_partitions("documents")
    store = defs.resources["store"]
    n_chunks = {k: len(store.read(dg.AssetKey("chunks"), k, pd.DataFrame)) for k in (a, b)}
    with SimulatorServer(failing_a()) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path=str(tmp_path / "cache.sqlite"))
        result = run_pipeline(instance, keys, ["chunk_embeddings"], llm,
                              chunk_embeddings={"inputs_per_request": 4})
        requests = sim.stats()["embedding_requests"]
    assert result.success
    assert requests == sum(-(-n // 4) for n in n_chunks.values())  # ceil(chunks / 4) each
    checks = checks_of_run(instance, result.run_id)
    assert not checks[("chunk_embeddings_success_rate", a)].passed
    assert checks[("chunk_embeddings_success_rate", b)].passed
    assert checks[("chunk_embeddings_dimension", b)].passed
    good = store.read(dg.AssetKey("chunk_embeddings"), b, pd.DataFrame)
    assert len(good) == n_chunks[b] and good["error_class"].isna().all()
    assert set(good["dimensions"]) == {256} and set(good["model"]) == {"text-embedding-3-small"}
    assert all(len(v) == 256 for v in good["embedding"])
    bad = store.read(dg.AssetKey("chunk_embeddings"), a, pd.DataFrame)
    assert set(bad["error_class"]) == {"client_error"} and bad["embedding"].isna().all()
