"""Each kind of bad input fails its own partition with a clear, classified error; the
other partitions of the same batch materialize."""

import io

import dagster as dg
import pytest
from pypdf import PdfReader, PdfWriter

from pipeline_defs import cli
from tests.helpers import materializations, run_ingest
from tests.pdfgen import make_pdf


def _encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf("Quarterly numbers."))))
    writer.encrypt(user_password="s3cret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BAD_INPUTS = {
    # file name: (content, error class, words the message must contain)
    "empty.txt": (b"", "empty", "empty"),
    "blank.md": (b"  \n\n\t \n", "empty", "blank"),
    "junk.txt": (bytes(range(256)) * 8, "binary", "binary"),
    "latin1.txt": ("Café crème at Zoë's".encode("latin-1"), "undecodable", "UTF-8"),
    "scan.pdf": (make_pdf("Invoice 42", text_layer=False), "no_text_layer", "text layer"),
    "locked.pdf": (None, "encrypted_pdf", "encrypted"),
    "broken.pdf": (b"%PDF-1.4\nthis is not a pdf body", "malformed_pdf", "PDF"),
    "huge.txt": (b"word " * 3000, "too_large", "limit"),
}


@pytest.fixture
def corpus(tmp_path, instance):
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "good.md").write_text("# Fine\n\nPriya Raman closed the ticket for Acme Logistics.")
    for name, (content, _, _) in BAD_INPUTS.items():
        (folder / name).write_bytes(_encrypted_pdf() if content is None else content)
    (folder / "vanished.txt").write_text("soon gone")
    docs = {d.path.name: d for d in cli.add(instance, [folder])}
    (folder / "vanished.txt").unlink()
    return docs


RUN_CONFIG = {"ops": {"ingestion": {"config": {"max_bytes": 10_000}}}}
EXPECTED = dict(BAD_INPUTS, **{"vanished.txt": (None, "vanished", "no longer exists")})


def _failure(result: dg.ExecuteInProcessResult) -> dg.Failure:
    [event] = result.get_step_failure_events()
    assert event.step_key == "ingestion"
    return event.step_failure_data.user_failure_data


def test_each_bad_input_fails_its_own_run_with_its_reason(corpus, instance):
    run_config = RUN_CONFIG
    for name, (_, error_class, words) in EXPECTED.items():
        doc = corpus[name]
        result = run_ingest(instance, doc.key, run_config=run_config)
        assert not result.success, name
        failure = _failure(result)
        assert failure.metadata["error_class"].value == error_class, name
        assert failure.metadata["document"].value == doc.key
        assert name in failure.description and words in failure.description, failure.description
        # neither asset is recorded for bad input
        assert not materializations(instance, "documents", doc.key)
        assert not materializations(instance, "chunks", doc.key)

    good = corpus["good.md"]
    assert run_ingest(instance, good.key, run_config=run_config).success
    assert len(materializations(instance, "chunks", good.key)) == 1


def test_one_batch_run_records_the_good_and_reports_each_bad(corpus, instance):
    keys = instance.get_dynamic_partitions("documents")
    assert sorted(keys) == sorted(d.key for d in corpus.values())
    result = run_ingest(instance, keys[0], keys[-1], run_config=RUN_CONFIG)
    assert not result.success  # the run says something failed...
    failure = _failure(result)
    assert failure.metadata["attempted"].value == len(corpus)
    assert failure.metadata["failed"].value == len(EXPECTED)
    by_key = {f["document"]: f for f in failure.metadata["failures"].value}
    for name, (_, error_class, words) in EXPECTED.items():
        item = by_key[corpus[name].key]
        assert item["error_class"] == error_class and words in item["reason"], item
        assert f"document {corpus[name].key} (" in failure.description
        assert not materializations(instance, "documents", corpus[name].key)
    # ...and the good document of the same batch is materialized, once per asset
    good = corpus["good.md"].key
    for asset in ("documents", "chunks"):
        [record] = materializations(instance, asset, good)
        assert record.run_id == result.run_id


def test_cli_materialize_reports_failures_and_continues(corpus, instance):
    outcomes = cli.materialize(instance, [d.key for d in corpus.values()])
    by_name = {next(n for n, d in corpus.items() if d.key == o.key): o for o in outcomes}
    assert by_name["good.md"].status == "ok"
    assert by_name["huge.txt"].status == "ok"  # under the default 25 MiB limit
    failed = {n for n, o in by_name.items() if o.status == "failed"}
    assert failed == set(BAD_INPUTS) - {"huge.txt"} | {"vanished.txt"}
    assert by_name["scan.pdf"].detail["error_class"] == "no_text_layer"


def test_unregistered_key_fails_clearly(instance):
    instance.add_dynamic_partitions("documents", ["ghost-00000000"])
    result = run_ingest(instance, "ghost-00000000")
    failure = _failure(result)
    assert failure.metadata["error_class"].value == "unregistered"
    assert "ghost-00000000" in failure.description
