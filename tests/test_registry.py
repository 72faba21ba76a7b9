"""The registry: keys, what it stores, and the same behaviour on its SQLite file (the
embedded default) and in PostgreSQL (production: the instance's database)."""

import os
import threading

import pytest

from resources.registry import DocumentRegistry, document_key, supported_files
from tests.conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"
        return
    with fresh_database(request.getfixturevalue("pg_url"), request, "registry") as db_url:
        yield db_url


def test_keys_are_readable_stable_and_unique():
    key = document_key("data/sample/Incident Review (März).md")
    assert key == document_key("data/sample/Incident Review (März).md")
    assert key.startswith("incident-review-marz.md-")
    assert document_key("a/Report 1.md") != document_key("b/Report 1.md")
    assert document_key("a/report-1.md") != document_key("a/Report 1.md")
    for k in (key, document_key("../../weird/…/file…v2..txt"), document_key("x/.md")):
        assert all(c.isalnum() or c in "-." for c in k) and "..." not in k


def test_register_is_idempotent_and_tracks_content(tmp_path, url):
    registry = DocumentRegistry(root=str(tmp_path), url=url)
    doc = tmp_path / "notes.txt"
    doc.write_text("one")
    [first] = registry.register([doc])
    [again] = registry.register([doc])
    assert again == first
    doc.write_text("two, longer")
    [changed] = registry.register([doc])
    assert changed.key == first.key and changed.sha256 != first.sha256
    assert registry.lookup(first.key).sha256 == changed.sha256
    registry.remove([first.key])
    assert registry.lookup(first.key) is None


def test_paths_inside_the_root_are_stored_relative(tmp_path, url):
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A")
    [doc] = DocumentRegistry(root=str(root), url=url).register([root / "docs" / "a.md"])
    assert doc.key == document_key("docs/a.md")
    moved = tmp_path / "moved"
    os.rename(root, moved)
    found = DocumentRegistry(root=str(moved), url=url).lookup(doc.key)
    assert found.path == moved / "docs" / "a.md" and found.path.exists()


def test_registrations_from_many_threads_at_once_are_all_kept(tmp_path, url):
    """The sensor, the CLI and runs register and read at the same time."""
    files = []
    for i in range(40):
        files.append(tmp_path / f"doc-{i}.md")
        files[-1].write_text(f"# {i}")
    registry = DocumentRegistry(root=str(tmp_path), url=url)
    threads = [threading.Thread(target=registry.register, args=(files[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(d.path.name for d in registry.entries()) == sorted(f.name for f in files)
    registry.remove([d.key for d in registry.entries()][:10])
    assert len(registry.entries()) == 30


def test_the_url_comes_from_the_environment_else_the_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCGRAPH_REGISTRY_URL", raising=False)
    assert DocumentRegistry(db_path=str(tmp_path / "r.sqlite")).database_url() == \
        f"sqlite:///{tmp_path / 'r.sqlite'}"
    monkeypatch.setenv("DOCGRAPH_REGISTRY_URL", "postgresql://db/docgraph")
    assert DocumentRegistry().database_url() == "postgresql://db/docgraph"
    assert DocumentRegistry(url="sqlite:///x").database_url() == "sqlite:///x"


def test_supported_files_skips_hidden_and_other_types(tmp_path):
    for name in ("a.md", "b.PDF", "c.html", "d.docx", ".hidden.md", ".git/e.txt", "sub/f.txt"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in supported_files(tmp_path)]
    assert names == ["a.md", "b.PDF", "c.html", "sub/f.txt"]
