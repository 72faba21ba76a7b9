"""The CLI summary tells each document's truth per stage: what came through, what a gate
held back, what failed and why, a total per stage."""

from pipeline_defs import cli
from pipeline_defs.outcomes import StageOutcome, stage_outcomes
from pipeline_defs.report import print_summary
from simulator.server import SimulatorServer
from tests.helpers import failing_a, two_documents


def test_summary_reports_every_stage_of_every_document(tmp_path, instance, monkeypatch,
                                                      capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    docs = two_documents(tmp_path / "docs", instance)
    (tmp_path / "docs" / "empty.txt").write_text("")
    docs.update({d.path.name: d.key for d in cli.add(instance, [tmp_path / "docs"])})
    a, b, empty = docs["a.md"], docs["b.md"], docs["empty.txt"]
    with SimulatorServer(failing_a()) as sim:
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        outcomes = {o.key: o for o in cli.materialize(instance, [a, b, empty])}
        print_summary(instance, list(outcomes.values()))
    states = {key: {asset: s.state for asset, s in o.stages.items()}
              for key, o in outcomes.items()}
    assert set(states[b].values()) == {"ok"} and outcomes[b].status == "ok"
    # every LLM call for a fails: its LLM stages are recorded with failed gates, and its
    # themes, which need them, were held back
    assert states[a]["chunks"] == "ok"
    for asset in ("chunk_metadata", "chunk_embeddings", "graph_extraction"):
        assert states[a][asset] == "gate_failed", asset
    assert states[a]["document_themes"] == "failed"
    assert outcomes[a].stages["document_themes"].error_class == "upstream_check_failed"
    assert outcomes[a].status == "failed"
    # the empty file failed ingestion; nothing after it ran
    assert states[empty]["chunks"] == "failed"
    assert outcomes[empty].stages["chunks"].error_class == "empty"
    assert {states[empty][s] for s in ("chunk_metadata", "document_themes")} == {"not_run"}

    out = capsys.readouterr().out
    [line_a] = [line for line in out.splitlines() if line.startswith(a)]
    assert "partial" in line_a and "gate✗" in line_a
    assert f"{a}: document_themes: upstream_check_failed:" in out
    assert f"{a}: chunk_metadata: gate_failed: chunk_metadata_success_rate failed" in out
    [line_empty] = [line for line in out.splitlines() if line.startswith(empty)]
    assert "FAILED" in line_empty and "empty:" in line_empty
    totals = {line.split()[0]: line.split()[1:] for line in out.splitlines()
              if line.split() and line.split()[0] in ("ingestion", "chunk_metadata",
                                                      "document_themes", "graph_extraction")}
    # columns: ok, gate failed, failed, not run, up to date
    assert totals["ingestion"] == ["2", "0", "1", "0", "0"]
    assert totals["chunk_metadata"] == ["1", "1", "0", "1", "0"]
    assert totals["document_themes"] == ["1", "0", "1", "1", "0"]
    assert totals["graph_extraction"] == ["1", "1", "0", "1", "0"]
    assert "3 documents: 1 materialized through every stage" in out


def test_a_crashed_step_does_not_hide_what_it_stored_before(instance):
    crashed = StageOutcome("failed", "step_error", "KeyError: 'x'")
    stages = stage_outcomes(instance, "doc", ["chunks", "chunk_metadata"], {"chunks"},
                            {"chunks": crashed, "chunk_metadata": crashed}, gates={})
    assert stages["chunks"].state == "ok"
    assert stages["chunk_metadata"] == crashed
    # a document's own failure wins over a materialization of the same step
    own = StageOutcome("failed", "empty", "the file is empty")
    assert stage_outcomes(instance, "doc", ["chunks"], {"chunks"},
                          {"chunks": own}, gates={})["chunks"] == own
