"""The whole chain into a real Neo4j: the sample corpus, materialized by the CLI (offline
LLM), written twice, edited, removed, and asked a question."""

import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import neo4j
import pytest

from assets.catalog import ThemeCatalog
from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
from assets.graph import neo4j_graph
from assets.keys import THEME_CATALOG
from pipeline_defs import cli
from pipeline_defs.definitions import defs
from resources.llm.resource import LLMResource
from resources.neo4j import (
    duplicate_keys,
    graph_export,
)
from resources.neo4j.resource import Neo4jResource
from resources.registry import DocumentRegistry
from resources.storage import UNPARTITIONED
from simulator.server import SimulatorServer
from tests.conftest import SAMPLE_DIR
from tests.helpers import (
    checks_of_run,
    failing_a,
    materializations,
    run_pipeline,
    two_documents,
)
from tests.test_sensor import _tick

DOUBLE_CHARGE = "support-chat-double-charge.txt"


def _count(driver: neo4j.Driver, query: str, **params) -> int:
    records, _, _ = driver.execute_query(query, **params)
    return records[0][0]


def _facts(driver: neo4j.Driver, document_key: str) -> set[tuple]:
    records, _, _ = driver.execute_query(
        "MATCH (a:Entity)-[r]->(b:Entity) WHERE r.document_key = $key "
        "RETURN a.key, type(r), b.key, r.chunk_id", key=document_key)
    return {tuple(r) for r in records}


def test_corpus_written_twice_gives_the_same_graph(instance, chain_graph):
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR])]
    outcomes = cli.materialize(instance, keys)
    assert {o.status for o in outcomes} == {"ok"}, outcomes[0]
    first = graph_export(chain_graph)
    assert _count(chain_graph, "MATCH (d:Document) RETURN count(d)") == len(keys)
    assert _count(chain_graph, "MATCH (:Chunk)-[:MENTIONS]->(:Entity) RETURN count(*)") > 100
    assert _count(chain_graph, "MATCH (c:Chunk) WHERE c.embedding IS NULL RETURN count(c)") == 0
    # the same entity mentioned by several documents is one node
    assert _count(chain_graph, "MATCH (e:Entity)<-[:MENTIONS]-(c:Chunk) WITH e, "
                  "count(DISTINCT c.document_key) AS docs WHERE docs > 1 RETURN count(e)") > 5

    assert {o.status for o in cli.materialize(instance, keys, force=True)} == {"ok"}
    assert graph_export(chain_graph) == first
    # every write was read back and matched what the extraction meant
    checks = [c for run in instance.get_runs() for c in checks_of_run(instance, run.run_id)
              .values() if c.check_name == "neo4j_graph_matches_source"]
    assert len(checks) == 2 * len(keys) and all(c.passed for c in checks)


def test_editing_and_removing_a_document_changes_only_its_contribution(
    instance, chain_graph, tmp_path
):
    folder = tmp_path / "corpus"
    shutil.copytree(SAMPLE_DIR, folder)
    docs = {d.path.name: d.key for d in cli.add(instance, [folder])}
    assert {o.status for o in cli.materialize(instance, list(docs.values()))} == {"ok"}
    edited = docs[DOUBLE_CHARGE]
    others = {k: _facts(chain_graph, k) for k in docs.values() if k != edited}
    before = _facts(chain_graph, edited)
    assert before

    # keep the first half of the transcript: the facts of the second half must go
    path = folder / DOUBLE_CHARGE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    [outcome] = cli.materialize(instance, [edited])
    assert outcome.status == "ok"
    after = _facts(chain_graph, edited)
    assert after and after < before  # fewer facts, none invented
    assert {k: _facts(chain_graph, k) for k in others} == others
    assert _count(chain_graph, "MATCH (e:Entity) WHERE NOT (e)<-[:MENTIONS]-() "
                  "RETURN count(e)") == 0  # no orphaned entity left behind

    # the graph is configured but down: nothing is removed
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NEO4J_URI", "bolt://127.0.0.1:9")
        with pytest.raises(SystemExit, match="cannot be reached"):
            cli.main(["remove", edited])
    assert edited in instance.get_dynamic_partitions("documents") and _facts(chain_graph, edited)

    assert cli.main(["remove", edited]) == 0
    assert _facts(chain_graph, edited) == set()
    assert _count(chain_graph, "MATCH (d:Document {key: $k}) RETURN count(d)", k=edited) == 0
    assert _count(chain_graph, "MATCH (c:Chunk {document_key: $k}) RETURN count(c)",
                  k=edited) == 0
    assert {k: _facts(chain_graph, k) for k in others} == others
    assert edited not in {d for t in _catalog(instance).themes for d in t.documents}

    # added again, it is written again (its old materializations do not count)
    [again] = cli.add(instance, [path])
    assert [o.status for o in cli.materialize(instance, [again.key])] == ["ok"]
    assert _facts(chain_graph, again.key) == after


def graph_run_failures(instance, first: str, last: str, **config
                       ) -> tuple[dg.ExecuteInProcessResult, list[dict]]:
    """`neo4j_graph` over first..last (with GraphConfig `config`), which must fail; the
    documents its Failure lists."""
    result = dg.materialize([neo4j_graph], instance=instance, resources=defs.resources,
                            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
                            run_config={"ops": {"neo4j_graph": {"config": config}}},
                            raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    return result, failure.step_failure_data.user_failure_data.metadata["failures"].value


def _catalog(instance) -> ThemeCatalog:
    return defs.resources["store"].read(THEME_CATALOG, UNPARTITIONED, ThemeCatalog)


def test_ask_finds_the_document_a_question_is_about(instance, chain_graph, capsys):
    docs = {d.path.name: d.key for d in cli.add(instance, [SAMPLE_DIR])}
    cli.materialize(instance, list(docs.values()))
    [best, *_] = cli.ask("Why was the Bluebird Dental card charged twice after the retry?")
    assert best.document_key in {docs[DOUBLE_CHARGE],
                                 docs["incident-review-2026-03-payments-retry.md"]}
    assert best.entities  # with what the chunk mentions

    assert cli.main(["ask", "Okta SAML single sign-on certificate", "-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert docs["support-email-okta-sso.txt"] in printed or \
        docs["incident-review-2026-05-saml-certificate.md"] in printed


def test_a_document_whose_extraction_failed_its_gate_stays_out_of_the_graph(
    instance, chain_graph, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = two_documents(tmp_path / "docs", instance)
    a, b = docs["a.md"], docs["b.md"]
    with SimulatorServer(failing_a()) as sim:
        llm = LLMResource(base_url=sim.base_url, cache_path=str(tmp_path / "cache.sqlite"))
        run_pipeline(instance, [a, b], ["documents", "chunks", "chunk_embeddings",
                                        "graph_extraction"], llm)
    result, [listed] = graph_run_failures(instance, a, b)
    assert (listed["document"], listed["error_class"]) == (a, "upstream_check_failed")
    assert _count(chain_graph, "MATCH (d:Document) RETURN collect(d.key)") == [b]


def test_a_file_deleted_from_the_inbox_leaves_the_graph(instance, chain_graph, tmp_path,
                                                         neo4j_settings):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    registry = DocumentRegistry(inbox_dir=str(inbox))
    shutil.copy(SAMPLE_DIR / DOUBLE_CHARGE, inbox / DOUBLE_CHARGE)
    os.utime(inbox / DOUBLE_CHARGE, (time.time() - 60, time.time() - 60))
    first = _tick(instance, registry, None)
    [key] = instance.get_dynamic_partitions("documents")
    assert [o.status for o in cli.materialize(instance, [key])] == ["ok"]
    assert _facts(chain_graph, key)

    (inbox / DOUBLE_CHARGE).unlink()
    unreachable = Neo4jResource(uri="bolt://127.0.0.1:9", password="x")
    second = _tick(instance, registry, first.cursor, unreachable)
    assert instance.get_dynamic_partitions("documents") == [key]  # kept: try again later
    reachable = Neo4jResource(uri=neo4j_settings.uri, password=neo4j_settings.password)
    _tick(instance, registry, second.cursor, reachable)
    assert instance.get_dynamic_partitions("documents") == []
    assert _facts(chain_graph, key) == set()
    assert _count(chain_graph, "MATCH (d:Document) RETURN count(d)") == 0


def test_four_documents_written_at_once_by_separate_runs(pg_instance, chain_graph, tmp_path):
    """Four `docgraph materialize` processes at the same time, on one Postgres instance,
    writing documents that share entities (Lumen Ledger, Priya Raman, ...)."""
    names = ["support-chat-double-charge.txt", "support-chat-export-timeout.txt",
             "support-email-okta-sso.txt", "support-call-rate-limits.txt"]
    docs = cli.add(pg_instance, [SAMPLE_DIR / n for n in names])
    env = dict(os.environ, DAGSTER_HOME=pg_instance.root_directory)
    command = [sys.executable, "-m", "pipeline_defs.cli", "materialize", "--log-level", "ERROR"]
    processes = [subprocess.Popen([*command, doc.key], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for doc in docs]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, "\n".join(o[-3000:] for o in outputs)
    assert duplicate_keys(chain_graph) == 0
    assert _count(chain_graph, "MATCH (d:Document) RETURN count(d)") == 4
    shared = _count(chain_graph, "MATCH (e:Entity)<-[:MENTIONS]-(c:Chunk) WITH e, "
                    "count(DISTINCT c.document_key) AS docs WHERE docs > 1 RETURN count(e)")
    assert shared > 0  # the documents really overlap
    for doc in docs:
        [record] = materializations(pg_instance, "neo4j_graph", doc.key)
        assert record.asset_materialization.metadata["relationships"].value == \
            len(_facts(chain_graph, doc.key))
