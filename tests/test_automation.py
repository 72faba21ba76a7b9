"""Declarative Automation holds back exactly the documents whose gate failed (issue 10's
acceptance): Dagster's own evaluation of the assets' automation conditions, read from
`evaluate_automation_conditions` (what the automation sensor runs on each tick)."""

import dagster as dg

from assets.keys import DOCUMENT_THEMES, NEO4J_GRAPH
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from simulator.server import SimulatorServer
from tests.helpers import failing_a, run_pipeline, two_documents

FIRST_STEPS = ["documents", "chunks", "chunk_metadata", "chunk_embeddings", "graph_extraction"]


def _requested(instance: dg.DagsterInstance) -> dict[dg.AssetKey, set[str]]:
    """What a freshly started automation sensor requests: its first tick only starts
    watching, the second requests what is missing or has new inputs (and passed gates)."""
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                               cursor=first.cursor)
    return {key: set(result.get_requested_partitions(key))
            for key in (DOCUMENT_THEMES, NEO4J_GRAPH)}


def test_a_document_whose_gate_failed_is_not_requested_downstream(tmp_path, instance,
                                                                 monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = two_documents(tmp_path / "docs", instance)
    a, b = docs["a.md"], docs["b.md"]
    # every call about A fails: its chunk_metadata (and graph_extraction) gates fail
    with SimulatorServer(failing_a()) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path="off", max_concurrency=8)
        run_pipeline(instance, [a, b], FIRST_STEPS, llm)
        requested = _requested(instance)
        # B goes on to its themes and the graph; A is held back by Dagster itself
        assert requested == {DOCUMENT_THEMES: {b}, NEO4J_GRAPH: {b}}

        # the faults end and A is made again: now Dagster lets it through
        sim.configure(target_rate=0.0)
        assert run_pipeline(instance, [a], FIRST_STEPS[2:], llm).success
        requested = _requested(instance)
        assert a in requested[DOCUMENT_THEMES] and a in requested[NEO4J_GRAPH]
