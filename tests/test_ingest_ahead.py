"""pipeline_defs/ingest_ahead.py: `materialize` over several batches has batches 2..n
ingested by a helper process, with the same outcomes; the first batch opens with a small
batch so the provider's first call comes sooner; a helper that dies leaves the work to the
CLI; a helper never outlives its parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg

from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
from pipeline_defs import cli, ingest_ahead, runs
from pipeline_defs.run_owner import PID_TAG, Owner
from resources.errors import ErrorClass
from tests.conftest import REPO, SAMPLE_DIR

BATCH = 2  # 5 sample documents + 1 bad one: 3 batches


def _documents(instance: dg.DagsterInstance, tmp_path) -> list[str]:
    bad = tmp_path / "zz-empty.md"  # registered last: in the helper's last batch
    bad.write_text("")
    return [d.key for d in cli.add(instance, [*sorted(SAMPLE_DIR.iterdir())[:5], bad])]


def _ingestion_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(job_name="ingestion_job"))[::-1]


def test_later_batches_are_ingested_by_a_helper_process(instance, tmp_path):
    keys = _documents(instance, tmp_path)
    outcomes = {o.key: o for o in cli.materialize(instance, keys, batch_size=BATCH)}

    empty = outcomes.pop(keys[-1])
    assert empty.status == "failed"
    assert empty.detail["error_class"] is ErrorClass.EMPTY and "empty" in empty.detail["reason"]
    assert {o.status for o in outcomes.values()} == {"ok"}  # the rest went on
    first, *later = _ingestion_runs(instance)
    assert first.tags[PID_TAG] == str(os.getpid()) and len(later) == 2
    [helper] = {run.tags[PID_TAG] for run in later}
    assert helper != str(os.getpid())
    assert not Owner.of(later[0].tags).alive()  # it ended with the CLI's work
    # each batch's enrichment came after its ingestion
    enrichment = instance.get_runs(filters=dg.RunsFilter(job_name="enrichment_job"))[::-1]
    for ingested, enriched in zip(later, enrichment[1:], strict=True):
        ingested_end = instance.get_run_record_by_id(ingested.run_id).end_time
        assert ingested_end <= instance.get_run_record_by_id(enriched.run_id).start_time


def test_a_large_first_batch_opens_with_a_small_one_the_helper_ingesting_the_rest(
    instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("LLM_MAX_CONCURRENCY", "1")
    monkeypatch.setattr(runs, "MIN_OPENING_BATCH", 2)  # opening batch: max(2, 1) documents
    keys = _documents(instance, tmp_path)
    outcomes = cli.materialize(instance, keys)  # one batch of 6 by size

    assert [o.status for o in outcomes] == ["ok"] * 5 + ["failed"]
    opening, rest = _ingestion_runs(instance)
    assert opening.tags[PID_TAG] == str(os.getpid()) != rest.tags[PID_TAG]
    ranges = [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in (opening, rest)]
    assert ranges == [(keys[0], keys[1]), (keys[2], keys[-1])]
    enrichment = instance.get_runs(filters=dg.RunsFilter(job_name="enrichment_job"))
    assert len(enrichment) == 2


def test_the_opening_batch_is_the_concurrency_and_only_where_it_pays():
    keys = [f"d{i:03d}" for i in range(100)]
    ingest = dict.fromkeys(keys, 0)
    assert runs.opening_batch([keys], ingest, 8) == [keys[:16], keys[16:]]
    assert runs.opening_batch([keys, ["x"]], ingest, 40) == [keys[:40], keys[40:], ["x"]]
    assert runs.opening_batch([keys[:31]], ingest, 8) == [keys[:31]]  # the rest < 16
    enrich_only = {**ingest, keys[3]: 1}  # its ingestion is current: nothing to ingest
    assert runs.opening_batch([keys], enrich_only, 8) == [keys]
    assert runs.opening_batch([], {}, 8) == []


def test_a_helper_that_dies_leaves_its_batches_to_the_cli(instance, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr(ingest_ahead, "HELPER", [sys.executable, "-c", "exit(3)"])
    keys = _documents(instance, tmp_path)
    outcomes = cli.materialize(instance, keys, batch_size=BATCH)

    assert [o.status for o in outcomes] == ["ok"] * 5 + ["failed"]
    assert "the ingest-ahead process ended (exit code 3)" in capsys.readouterr().out
    runs = _ingestion_runs(instance)
    assert len(runs) == 3 and {r.tags[PID_TAG] for r in runs} == {str(os.getpid())}


def test_without_ingest_ahead_this_process_ingests_every_batch(instance, tmp_path):
    keys = _documents(instance, tmp_path)
    outcomes = cli.materialize(instance, keys, batch_size=BATCH, ingest_ahead=False)

    assert [o.status for o in outcomes] == ["ok"] * 5 + ["failed"]
    assert {r.tags[PID_TAG] for r in _ingestion_runs(instance)} == {str(os.getpid())}


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\\n"
        "from pipeline_defs.helper_process import die_with_parent\\n"
        f"die_with_parent({__import__('os').getpid()})\\n"
        "print('ready', flush=True)\\n"
        "time.sleep(60)\\n")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    print(child.pid, flush=True)
    time.sleep(60)
""")


def test_the_helper_dies_with_its_parent_even_by_sigkill():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, text=True,
                              stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    stat = Path(f"/proc/{child}/stat")
    while stat.exists() and time.monotonic() < deadline:
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break  # a zombie: dead, waiting for init to reap it
        time.sleep(0.05)
    else:
        assert not stat.exists(), "the child outlived its killed parent"
