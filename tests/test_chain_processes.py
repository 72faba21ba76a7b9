"""pipeline_defs/chain_processes.py: `materialize(processes=2)` deals the batches to this
process and a helper, each running the whole chain with its share of the LLM limits; the
outcomes are the same as from one process, the catalog is rebuilt once, and a helper that
dies leaves its documents to the CLI."""

import os
import sys

import dagster as dg

from pipeline_defs import chain_processes, cli, run_launch
from pipeline_defs.chain_processes import deal, llm_share
from pipeline_defs.run_owner import PID_TAG
from resources.errors import ErrorClass
from tests.conftest import SAMPLE_DIR

BATCH = 2  # 5 sample documents + 1 bad one: 3 batches, dealt 1+3 here, 2 to the helper


def _documents(instance: dg.DagsterInstance, tmp_path) -> list[str]:
    bad = tmp_path / "zz-empty.md"  # registered last: in this process's last batch
    bad.write_text("")
    return [d.key for d in cli.add(instance, [*sorted(SAMPLE_DIR.iterdir())[:5], bad])]


def _runs(instance: dg.DagsterInstance, job: str) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(job_name=job))[::-1]


def test_batches_are_dealt_round_robin():
    keys = list("abcdefg")
    assert deal(keys, 2, 2) == [list("abef"), list("cdg")]
    assert deal(keys, 3, 4) == [list("abc"), list("def"), ["g"]]  # no more than batches
    assert deal(keys, 10, 2) == [keys]
    assert deal([], 2, 2) == []


def test_each_process_gets_its_share_of_the_limits(monkeypatch):
    monkeypatch.setenv("LLM_MAX_CONCURRENCY", "32")
    monkeypatch.setenv("LLM_RPM", "6000")
    monkeypatch.setenv("LLM_TPM", "1000000")
    monkeypatch.delenv("LLM_BUDGET_URL", raising=False)
    share = llm_share(3).settings()
    assert (share.max_concurrency, share.rpm, share.tpm) == (10, 2000, 1000000 / 3)
    # one budget shared by every process: each spends from it, the rates are not divided
    monkeypatch.setenv("LLM_BUDGET_URL", "postgresql://127.0.0.1:1/none")
    share = llm_share(2).settings()
    assert (share.max_concurrency, share.rpm, share.tpm) == (16, 6000, 1000000)


def test_two_processes_run_the_chain_with_the_outcomes_of_one(instance, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr(run_launch, "launched", [])
    keys = _documents(instance, tmp_path)
    outcomes = cli.materialize(instance, keys, batch_size=BATCH, processes=2)

    assert [o.key for o in outcomes] == keys
    assert [o.status for o in outcomes] == ["ok"] * 5 + ["failed"]
    assert outcomes[-1].detail["error_class"] is ErrorClass.EMPTY
    enrichment = _runs(instance, "enrichment_job")
    pids = {run.tags[PID_TAG] for run in enrichment}
    assert len(enrichment) == 3 and len(pids) == 2 and str(os.getpid()) in pids
    assert len(_runs(instance, "catalog_job")) == 1  # once, by this process, at the end
    # the helper's runs count in this command's LLM usage line
    assert {r.run_id for r in enrichment} <= set(run_launch.launched)

    # again: only the bad document needs a run, so no helper is started for it
    again = cli.materialize(instance, keys, batch_size=BATCH, processes=2)
    assert [o.status for o in again] == ["up-to-date"] * 5 + ["failed"]
    runs = _runs(instance, "ingestion_job")[-1:] + _runs(instance, "catalog_job")[-1:]
    assert {r.tags[PID_TAG] for r in runs} == {str(os.getpid())}
    assert len(_runs(instance, "enrichment_job")) == 3


def test_a_chain_process_that_dies_leaves_its_documents_to_the_cli(instance, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setattr(chain_processes, "HELPER", [sys.executable, "-c", "exit(3)"])
    keys = _documents(instance, tmp_path)
    outcomes = cli.materialize(instance, keys, batch_size=BATCH, processes=2)

    assert [o.status for o in outcomes] == ["ok"] * 5 + ["failed"]
    assert "a chain process ended (exit code 3) before its 2 documents were done" in \
        capsys.readouterr().out
    assert {r.tags[PID_TAG] for r in _runs(instance, "enrichment_job")} == {str(os.getpid())}
