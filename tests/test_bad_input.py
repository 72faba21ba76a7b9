"""Each kind of bad input fails its own partition with a clear, classified error; the
other partitions of the same batch materialize."""

import io
import random
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from pypdf import PdfReader, PdfWriter

from assets.ingest import IngestError, extract
from pipeline_defs import cli
from tests.conftest import SAMPLE_DIR
from tests.helpers import ingest_config, materializations, run_ingest
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


RUN_CONFIG = ingest_config(max_bytes=10_000)
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
    assert by_name["good.md"].status == "ok", by_name["good.md"]
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


def _mutations(source: bytes, count: int, seed: int = 1):
    """Deterministically damaged copies of a real PDF: flipped bytes, cut tails."""
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(source)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        yield bytes(data)


def test_damaged_pdfs_never_escape_as_anything_but_a_classified_error():
    source = (SAMPLE_DIR / "security-advisory-webhook-signatures.pdf").read_bytes()
    outcomes = Counter()
    for data in _mutations(source, 400):
        try:
            extract(Path("damaged.pdf"), data)
            outcomes["ok"] += 1
        except IngestError as exc:
            outcomes[exc.error_class] += 1
    assert set(outcomes) <= {"ok", "malformed_pdf", "no_text_layer", "empty", "encrypted_pdf"}
    assert outcomes["malformed_pdf"] > 0


def test_a_batch_with_damaged_pdfs_still_materializes_every_good_document(tmp_path, instance):
    source = (SAMPLE_DIR / "security-advisory-webhook-signatures.pdf").read_bytes()
    broken = []
    for data in _mutations(source, 400, seed=2):
        try:
            extract(Path("x.pdf"), data)
        except IngestError:
            broken.append(data)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, data in enumerate(broken[:6]):
        (folder / f"{i}-broken.pdf").write_bytes(data)
        (folder / f"{i}-good.txt").write_text(f"Good document {i} about Okta SSO.")
    docs = {d.path.name: d.key for d in cli.add(instance, [folder])}
    keys = instance.get_dynamic_partitions("documents")
    result = run_ingest(instance, keys[0], keys[-1])
    assert not result.success
    for name, key in docs.items():
        recorded = materializations(instance, "chunks", key)
        assert bool(recorded) == name.endswith("good.txt"), name


def test_chunks_alone_reports_documents_never_stored_and_rechunks_the_rest(tmp_path, instance):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha was never ingested.")
    (folder / "b.txt").write_text("Bravo was ingested. It has a second sentence.")
    docs = {d.path.name: d.key for d in cli.add(instance, [folder])}
    assert run_ingest(instance, docs["b.txt"]).success
    keys = instance.get_dynamic_partitions("documents")
    result = run_ingest(instance, keys[0], keys[-1], asset_selection=[dg.AssetKey("chunks")])
    failure = _failure(result)
    assert failure.metadata["error_class"].value == "not_materialized"
    assert docs["a.txt"] in failure.description
    assert len(materializations(instance, "chunks", docs["b.txt"])) == 2
