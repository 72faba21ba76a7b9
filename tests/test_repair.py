"""Repair without drift: a run whose provider sometimes answers malformed JSON stores exactly
what a clean run stores, once every item has an answer (the engine repairs or re-asks;
the offline provider answers a repair turn from the original request)."""

import dagster as dg
import pandas as pd

from assets.dagster_compat import DATA_VERSION_TAG
from pipeline_defs import cli
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.conftest import SAMPLE_DIR
from tests.helpers import materializations, run_pipeline

CHAIN = ["documents", "chunks", "chunk_metadata", "chunk_embeddings", "document_themes",
         "graph_extraction"]
COMPARED = ["chunk_metadata", "chunk_embeddings", "document_themes", "graph_extraction"]
# What a run's LLM calls cost and how they went: differs between runs by nature.
ACCOUNTING = {
    "llm_provider", "llm_model", "attempted", "succeeded", "failed", "success_rate",
    "failed_by_class", "retries", "http_calls", "repairs", "cache_hits",
    "rate_limited_responses", "latency_p50_ms", "latency_p95_ms", "latency_max_ms",
    "prompt_tokens", "completion_tokens", "estimated_cost_usd", "peak_concurrency",
    "llm_seconds", "path", "response_format_mode", "structured_fallbacks",
}
MAX_RUNS = 6
store = defs.resources["store"]


def _stored(instance, keys: list[str]) -> dict:
    """{(asset, document): (frame, data version, metadata without accounting)}."""
    stored = {}
    for asset in COMPARED:
        for key in keys:
            event = materializations(instance, asset, key)[0].asset_materialization
            metadata = {k: v.value for k, v in event.metadata.items() if k not in ACCOUNTING}
            stored[asset, key] = (store.read(dg.AssetKey(asset), key, pd.DataFrame),
                                  event.tags[DATA_VERSION_TAG], metadata)
    return stored


def _converge(instance, keys: list[str], llm: LLMResource) -> tuple[int, dict]:
    """Run the chain until every item of every document has an answer: an item whose
    repair was malformed too fails, and the next run asks for it alone (the cache
    answers the rest). Returns the runs it took and the stored outputs."""
    for runs in range(1, MAX_RUNS + 1):
        result = run_pipeline(instance, keys, CHAIN, llm)
        stored = _stored(instance, keys) if result.success else {}
        if stored and all(frame["error_class"].isna().all() for frame, _, _ in stored.values()):
            return runs, stored
    raise AssertionError(f"not converged after {MAX_RUNS} runs")


def _repairs(instance, keys: list[str]) -> int:
    return sum(record.asset_materialization.metadata["repairs"].value
               for asset in COMPARED for key in keys
               for record in materializations(instance, asset, key))


def test_malformed_answers_converge_to_the_clean_runs_outputs(tmp_path, instance,
                                                               monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR])]
    with SimulatorServer(SimConfig()) as sim:
        clean_llm = LLMResource(base_url=sim.base_url, cache_path=str(tmp_path / "clean.sqlite"))
        runs, clean = _converge(instance, keys, clean_llm)
        assert runs == 1 and _repairs(instance, keys) == 0 and not sim.stats()["faults"]

        sim.configure(rate_malformed=0.05, seed=11)
        faulty_llm = LLMResource(base_url=sim.base_url,
                                 cache_path=str(tmp_path / "faulty.sqlite"))
        _, faulty = _converge(instance, keys, faulty_llm)
        malformed = sim.stats()["faults"].get("malformed", 0)
    # the faults happened and the engine repaired them (the simulator also counts the
    # draws that fell on embedding requests, which have no content to break)
    assert 5 <= _repairs(instance, keys) <= malformed

    assert faulty.keys() == clean.keys()
    for (asset, key), (frame, version, metadata) in clean.items():
        faulty_frame, faulty_version, faulty_metadata = faulty[asset, key]
        pd.testing.assert_frame_equal(faulty_frame, frame, obj=f"{asset} {key}")
        assert (faulty_version, faulty_metadata) == (version, metadata), (asset, key)
