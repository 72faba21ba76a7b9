import os

from resources.registry import DocumentRegistry, document_key, supported_files


def test_keys_are_readable_stable_and_unique():
    key = document_key("data/sample/Incident Review (März).md")
    assert key == document_key("data/sample/Incident Review (März).md")
    assert key.startswith("incident-review-marz.md-")
    assert document_key("a/Report 1.md") != document_key("b/Report 1.md")
    assert document_key("a/report-1.md") != document_key("a/Report 1.md")
    for k in (key, document_key("../../weird/…/file…v2..txt"), document_key("x/.md")):
        assert all(c.isalnum() or c in "-." for c in k) and "..." not in k


def test_register_is_idempotent_and_tracks_content(tmp_path):
    registry = DocumentRegistry(root=str(tmp_path))
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


def test_paths_inside_the_root_are_stored_relative(tmp_path):
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A")
    [doc] = DocumentRegistry(root=str(root)).register([root / "docs" / "a.md"])
    assert doc.key == document_key("docs/a.md")
    moved = tmp_path / "moved"
    os.rename(root, moved)
    found = DocumentRegistry(root=str(moved)).lookup(doc.key)
    assert found.path == moved / "docs" / "a.md" and found.path.exists()


def test_supported_files_skips_hidden_and_other_types(tmp_path):
    for name in ("a.md", "b.PDF", "c.html", "d.docx", ".hidden.md", ".git/e.txt", "sub/f.txt"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in supported_files(tmp_path)]
    assert names == ["a.md", "b.PDF", "c.html", "sub/f.txt"]
