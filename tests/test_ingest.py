"""Format extraction and normalisation, file by file."""

import io
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from assets.ingest import IngestError, extract, normalize_text
from resources.registry import DocumentRegistry
from tests.conftest import REPO, SAMPLE_DIR
from tests.pdfgen import make_pdf


def test_every_sample_document_extracts():
    files = sorted(SAMPLE_DIR.iterdir())
    assert len(files) >= 12
    for path in files:
        result = extract(path, path.read_bytes())
        assert len(result.text) > 1000, path.name
        assert "{" not in result.text or path.suffix != ".html", "CSS or JS leaked"


def test_html_without_a_closing_head_and_with_svg_titles():
    html = (b"<html><head><title>Release notes</title><style>p{color:red}</style>"
            b"<body><svg><title>Icon</title></svg><p>Lumen Mobile 3.8.1 fixes the crash."
            b"</p><script>var x = 1;</script></body></html>")
    result = extract(Path("page.html"), html)
    assert result.title == "Release notes"
    assert result.text == "Lumen Mobile 3.8.1 fixes the crash."


def test_page_breaks_and_vertical_tabs_are_whitespace_not_binary():
    data = b"End of page one.\x0cStart of page two.\x0bSame line."
    result = extract(Path("doc.txt"), data)
    assert result.text == "End of page one.\n\nStart of page two.\n\nSame line."


def test_crlf_utf16_and_special_tokens():
    assert normalize_text("a\r\nb\rc") == "a\nb\nc"
    utf16 = "Zoë wrote <|endoftext|> in a ticket.".encode("utf-16")
    assert extract(Path("x.txt"), utf16).text == "Zoë wrote <|endoftext|> in a ticket."


def test_undecodable_names_the_encoding_and_offset():
    with pytest.raises(IngestError, match=r"not valid UTF-8: byte 0xe9 at offset 3"):
        extract(Path("x.txt"), "Caf\u00e9".encode("latin-1"))


def test_aes_pdf_with_an_empty_open_password_is_read():
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf("Owner-restricted report."))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    assert extract(Path("r.pdf"), out.getvalue()).text == "Owner-restricted report."


def test_keys_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    sample = SAMPLE_DIR / "support-chat-double-charge.txt"
    [from_repo] = DocumentRegistry().register([sample])
    monkeypatch.chdir(tmp_path)
    [from_elsewhere] = DocumentRegistry().register([sample])
    assert from_elsewhere.key == from_repo.key
    assert DocumentRegistry().lookup(from_repo.key).path == sample
    assert DocumentRegistry().root_path() == REPO
