"""document_themes and theme_catalog through the whole per-document chain: offline on the
sample corpus, and over real HTTP to the fault-injecting simulator."""

import random
import re
import statistics

import dagster as dg
import pandas as pd

from assets.catalog import ThemeCatalog
from assets.dagster_compat import check_passed
from assets.keys import THEME_CATALOG, success_rate_key
from assets.models import SIGNATURE_PATTERN
from pipeline_defs import cli
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from resources.storage import UNPARTITIONED
from simulator.server import SimulatorServer
from simulator.simulator import SimConfig
from tests.conftest import SAMPLE_DIR
from tests.helpers import (
    MARKER,
    checks_of_run,
    failing_a,
    materializations,
    run_pipeline,
    two_documents,
)

ALL = ["documents", "chunks", "chunk_metadata", "chunk_embeddings", "document_themes"]
LLM_ASSETS = ["chunk_metadata", "chunk_embeddings", "document_themes"]
store = defs.resources["store"]


def _frame(asset: str, key: str) -> pd.DataFrame:
    return store.read(dg.AssetKey(asset), key, pd.DataFrame)


def _meta(instance, asset: str, key: str, run_id: str | None = None) -> dict | None:
    for record in materializations(instance, asset, key):
        if run_id is None or record.run_id == run_id:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return None


def _gate_passed(instance, asset: str, key: str) -> bool | None:
    """Dagster's own verdict on the partition's success-rate check (what the UI shows)."""
    return check_passed(instance, success_rate_key(dg.AssetKey(asset)), key)


def _failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    [failure] = result.get_step_failure_events()
    return {f["document"]: f["error_class"]
            for f in failure.step_failure_data.user_failure_data.metadata["failures"].value}


def _catalog_bytes(instance) -> bytes:
    assert defs.resolve_job_def("catalog_job").execute_in_process(instance=instance).success
    return store.path(THEME_CATALOG, UNPARTITIONED, ThemeCatalog).read_bytes()


def test_sample_corpus_themes_are_voted_cited_and_recur(instance):
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR])]
    outcomes = cli.materialize(instance, keys)
    assert {o.status for o in outcomes} == {"ok"}
    for key in keys:
        rows = _frame("document_themes", key)
        chunk_ids = set(_frame("chunks", key)["chunk_id"])
        assert len(rows) and rows["error_class"].isna().all()
        for row in rows.itertuples():
            assert re.fullmatch(SIGNATURE_PATTERN, row.signature)
            # cited by passage number, mapped back to chunk ids in document order
            assert len(row.evidence) and all(e.isdigit() for e in row.evidence)
            numbered = _frame("chunks", key)["chunk_id"].tolist()
            assert list(row.evidence_chunk_ids) == [numbered[int(e) - 1] for e in row.evidence]
            assert set(row.cited_chunk_ids) <= chunk_ids
            assert list(row.cited_chunk_ids) == list(row.evidence_chunk_ids)
            assert not len(row.citations_unknown)
            if len(row.cited_chunk_ids):
                assert len(row.votes) == 3 and all(1 <= v <= 5 for v in row.votes)
                assert row.score == round(statistics.fmean(row.votes), 3)
            assert row.kept == (row.score is not None and row.score >= 3.0)
            assert len(row.embedding) == 256
        meta = _meta(instance, "document_themes", key)
        assert meta["themes_kept"] + meta["themes_dropped"] + meta["themes_failed"] == len(rows)
        assert meta["themes_kept"] == int(rows["kept"].sum())
        assert meta["citations"] == sum(len(e) for e in rows["evidence"]) > 0
        assert meta["citations_unknown"] == 0
        assert meta["attempted"] == meta["succeeded"] + meta["failed"]
        assert _gate_passed(instance, "document_themes", key)

    catalog = ThemeCatalog.model_validate_json(_catalog_bytes(instance))
    recurring = {t.theme_id: t for t in catalog.themes if t.document_count > 1}
    # the sample corpus was written with themes that recur across documents
    assert {"charged_twice", "rate_limit", "signing_certificate"} <= set(recurring)
    assert set(recurring["rate_limit"].signatures) == {"rate_limit", "rate_limits"}
    kept = sum(int(_frame("document_themes", k)["kept"].sum()) for k in keys)
    assert catalog.mentions == kept == sum(t.mention_count for t in catalog.themes)
    # a second run has nothing to do
    assert {o.status for o in cli.materialize(instance, keys)} == {"up-to-date"}


def test_votes_and_min_score_are_configurable(instance, tmp_path):
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR / "support-chat-double-charge.txt"])]
    llm = LLMResource(cache_path=str(tmp_path / "cache.sqlite"))
    result = run_pipeline(instance, keys, ALL, llm,
                          document_themes={"votes": 5, "min_score": 5.5})
    assert result.success
    rows = _frame("document_themes", keys[0])
    assert not rows["kept"].any() and all(len(v) == 5 for v in rows["votes"])
    meta = _meta(instance, "document_themes", keys[0])
    assert meta["themes_dropped"] == meta["themes_extracted"] == len(rows) > 0
    assert meta["votes_per_theme"] == 5


def test_a_failing_gate_holds_back_only_its_document_and_heals(tmp_path, instance,
                                                               monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = two_documents(tmp_path / "docs", instance)
    a, b = docs["a.md"], docs["b.md"]
    small = {"ingestion": {"max_tokens": 48, "overlap_tokens": 0}}
    # 20% non-retryable errors for A's requests, and retryable 500s for everyone
    faults = SimConfig(target=MARKER, target_status=400, target_rate=0.2, rate_500=0.05, seed=3)
    with SimulatorServer(faults) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path=str(tmp_path / "cache.sqlite"),
                          max_concurrency=8)
        result = run_pipeline(instance, [a, b], ALL, llm, **small)
        first_calls = sim.stats()["requests"]
        assert not result.success
        assert _failures(result) == {a: "upstream_check_failed"}
        checks = checks_of_run(instance, result.run_id)
        gate = checks[("chunk_metadata_success_rate", a)]
        assert not gate.passed and checks[("chunk_metadata_success_rate", b)].passed
        failed_items = gate.metadata["failed_items"].value
        assert failed_items and {f["error_class"] for f in failed_items} == {"client_error"}
        # A's themes were not materialized from bad data; B went all the way
        assert _meta(instance, "document_themes", a) is None
        assert _meta(instance, "document_themes", b, result.run_id) is not None
        assert _gate_passed(instance, "document_themes", b)
        assert checks[("document_themes_success_rate", b)].passed
        # every HTTP request the simulator saw is accounted for in some materialization
        metas = [_meta(instance, asset, k, result.run_id) for asset in LLM_ASSETS
                 for k in (a, b)]
        metas = [m for m in metas if m]
        assert sum(m["http_calls"] for m in metas) == first_calls
        assert sum(m["retries"] for m in metas) > 0
        for m in metas:
            assert m["attempted"] == m["succeeded"] + m["failed"]

        # the faults stop: A again asks only for what failed, plus its themes (never made)
        sim.configure(target_rate=0.0, rate_500=0.0)
        failed_embeddings = _meta(instance, "chunk_embeddings", a)["failed"]
        again = run_pipeline(instance, [a], ALL, llm, **small)
        assert again.success
        metadata_a = _meta(instance, "chunk_metadata", a, again.run_id)
        assert metadata_a["http_calls"] == len(failed_items) == metadata_a["attempted"] - \
            metadata_a["cache_hits"]
        assert _meta(instance, "chunk_embeddings", a, again.run_id)["http_calls"] == \
            failed_embeddings
        themes_a = _meta(instance, "document_themes", a, again.run_id)
        assert sim.stats()["requests"] - first_calls == \
            len(failed_items) + failed_embeddings + themes_a["http_calls"]
        assert themes_a is not None and _gate_passed(instance, "document_themes", a)


def test_catalog_is_identical_for_any_concurrency_and_document_order(tmp_path, instance,
                                                                     monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR])]
    jitter = SimConfig(latency_ms=3, latency_jitter_ms=3)  # completions arrive out of order

    def stages(concurrency: int) -> dict:
        return {s: {"concurrency": concurrency} for s in LLM_ASSETS}

    with SimulatorServer(jitter) as sim:
        sequential = LLMResource(base_url=sim.base_url, max_concurrency=1,
                                 cache_path=str(tmp_path / "one.sqlite"))
        assert run_pipeline(instance, keys, ALL, sequential, **stages(1)).success
        one = _catalog_bytes(instance)

        parallel = LLMResource(base_url=sim.base_url, max_concurrency=32,
                               cache_path=str(tmp_path / "many.sqlite"))
        shuffled = random.Random(5).sample(keys, len(keys))
        for key in shuffled:  # one run per document, in another order
            assert run_pipeline(instance, [key], ALL, parallel, **stages(32)).success
        many = _catalog_bytes(instance)
    assert one == many
    assert len(ThemeCatalog.model_validate_json(one).themes) > 10


def test_automation_rebuilds_the_catalog_once_and_writes_new_documents_to_the_graph(
    instance,
):
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR / "support-email-okta-sso.txt"])]
    cursor = None

    def requests(ticks: int = 2) -> dict[str, list]:
        """{asset: partitions requested} over a few daemon ticks."""
        nonlocal cursor
        requested: dict[str, list] = {"theme_catalog": [], "neo4j_graph": []}
        for _ in range(ticks):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                       cursor=cursor)
            cursor = result.cursor
            for name in requested:
                requested[name] += result.get_requested_partitions(dg.AssetKey(name))
        return requested

    requests()  # the daemon starts watching
    assert [o.status for o in cli.materialize(instance, keys)] == ["ok"]  # builds the catalog
    # the CLI ran without NEO4J_URI: the daemon writes the new document to the graph, and
    # rebuilds the catalog once more, not twice: Dagster's conditions compare ticks, not
    # times, so it cannot tell that the CLI's catalog came after the themes (a catalog that
    # came before them was the stale-catalog bug: assets/catalog.py)
    assert requests() == {"theme_catalog": [None], "neo4j_graph": keys}
    assert run_pipeline(instance, keys, ["document_themes"]).success
    # no run took the graph request here, so the still-missing partition is asked for
    # again (with the daemon its run is in progress meanwhile, which holds that back)
    assert requests() == {"theme_catalog": [None], "neo4j_graph": keys}
    assert requests() == {"theme_catalog": [], "neo4j_graph": keys}


def test_the_cli_reports_a_document_held_back_by_a_gate_as_failed(tmp_path, instance,
                                                                  monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = two_documents(tmp_path / "docs", instance)
    a, b = docs["a.md"], docs["b.md"]
    # every call about A fails: which of A's calls fail must not depend on the order the
    # one stream happens to send them in
    with SimulatorServer(failing_a()) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        outcomes = {o.key: o for o in cli.materialize(instance, [a, b])}
    # A's later stages (embeddings, graph extraction) were recorded, but its themes were held
    # back: the document is not "ok"
    assert _meta(instance, "graph_extraction", a) is not None
    assert outcomes[a].status == "failed"
    assert outcomes[a].detail["error_class"] == "upstream_check_failed"
    assert outcomes[b].status == "ok"


def test_inputs_made_from_older_chunks_fail_only_their_document(instance):
    docs = {d.path.name: d.key for d in cli.add(instance, [
        SAMPLE_DIR / "support-chat-double-charge.txt", SAMPLE_DIR / "support-email-okta-sso.txt"])}
    a, b = docs["support-chat-double-charge.txt"], docs["support-email-okta-sso.txt"]
    keys = instance.get_dynamic_partitions("documents")
    assert {o.status for o in cli.materialize(instance, keys)} == {"ok"}
    # A is chunked again, smaller: its chunk_metadata and embeddings describe old chunks
    assert run_pipeline(instance, [a], ["chunks"],
                        ingestion={"max_tokens": 64, "overlap_tokens": 0}).success
    result = run_pipeline(instance, keys, ["document_themes"])
    assert _failures(result) == {a: "upstream_stale"}
    assert _meta(instance, "document_themes", b, result.run_id) is not None
    assert _meta(instance, "document_themes", a, result.run_id) is None
