"""Turning a source file into normalised text, or a precise reason why not.

Pure functions of the file's bytes: no Dagster here. Every rejection is an `IngestError`
with its `ErrorClass` (resources/errors.py), which the `documents` asset puts on its
Failure.
"""

import hashlib
import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from assets.models import DocumentFormat
from resources.errors import DocgraphError, ErrorClass

# pypdf warns on stderr about every repairable glitch; the outcome is what we report.
logging.getLogger("pypdf").setLevel(logging.ERROR)

FORMATS: dict[str, DocumentFormat] = {
    ".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".pdf": "pdf",
}

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff]")
_PAGE_BREAK = re.compile(r"[\x0b\x0c\u2028\u2029]")  # vertical tab, form feed, separators
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


class IngestError(DocgraphError):
    """Why a file cannot be ingested: its error class and a reason a user can act on."""

    def __init__(self, error_class: ErrorClass, reason: str):
        super().__init__(error_class, reason)
        self.reason = reason


@dataclass(frozen=True)
class Extracted:
    format: DocumentFormat
    text: str
    title: str | None
    n_pages: int | None


def normalize_text(text: str) -> str:
    """NFC, one kind of newline, no control characters, single spaces inside lines, at
    most one blank line between paragraphs (paragraph breaks are what chunking keys on)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _PAGE_BREAK.sub("\n\n", _CONTROL.sub("", text))
    lines = (_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        sample = data[:8192]
        if b"\x00" in sample:
            raise IngestError(ErrorClass.BINARY,
                              "contains NUL bytes: this is binary data, not text")
        controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 11, 12, 13))
        if controls > len(sample) * 0.05:
            raise IngestError(
                ErrorClass.BINARY, f"{controls} control bytes in the first {len(sample)}: not text"
            )
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-16" if encoding == "utf-16" else "UTF-8"
        raise IngestError(
            ErrorClass.UNDECODABLE,
            f"not valid {name}: byte 0x{data[exc.start]:02x} at offset {exc.start}",
        ) from exc


class _HTMLText(HTMLParser):
    """Visible text of an HTML page, with block elements as paragraph breaks."""

    _BLOCKS = {
        "p", "div", "section", "article", "header", "footer", "li", "ul", "ol", "table",
        "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "main", "aside",
        "nav", "dl", "dt", "dd", "figure", "figcaption", "hr", "body", "form",
    }
    _HIDDEN = {"script", "style", "noscript", "template", "svg"}
    # Tags that can only be in the body: seeing one ends an unclosed <head>.
    _BODY_START = _BLOCKS | {"span", "a", "img", "table", "b", "i", "em", "strong"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._in_head = False
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "head":
            self._in_head = True
        elif self._in_head and tag in self._BODY_START:
            self._in_head = False
        if tag == "title" and not self._hidden:  # an SVG icon's <title> is not the page's
            self._in_title = True
        elif tag == "pre":
            self._pre += 1
            self.parts.append("\n\n")
        elif tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag == "head":
            self._in_head = False
        if tag == "title":
            self._in_title = False
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self.parts.append("\n\n")
        elif tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title_parts.append(data)
        elif not self._hidden and not self._in_head:
            # Outside <pre>, source line breaks are layout, not structure.
            self.parts.append(data if self._pre else data.replace("\n", " "))


def _html(data: bytes) -> Extracted:
    parser = _HTMLText()
    parser.feed(_decode(data))
    parser.close()
    text = "".join(parser.parts)
    title = normalize_text("".join(parser.title_parts)) or None
    return Extracted("html", text, title, None)


def _pdf(data: bytes) -> Extracted:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(ErrorClass.ENCRYPTED_PDF, "the PDF is encrypted with a password")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (FileNotDecryptedError, DependencyError) as exc:
        raise IngestError(
            ErrorClass.ENCRYPTED_PDF, f"the PDF is encrypted and cannot be opened: {exc}"
        ) from exc
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on broken files
        # (PdfReadError, ValueError, TypeError, AttributeError, LimitReachedError, ...)
        raise IngestError(
            ErrorClass.MALFORMED_PDF, f"not a readable PDF ({type(exc).__name__}: {exc})"
        ) from exc
    if not any(p.strip() for p in pages):
        raise IngestError(
            ErrorClass.NO_TEXT_LAYER,
            f"none of its {len(pages)} page(s) has a text layer (scanned? run OCR first)",
        )
    return Extracted("pdf", "\n\n".join(pages), title or None, len(pages))


def _first_heading(text: str) -> str | None:
    match = re.search(r"^#{1,3}\s+(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def extract(path: Path, data: bytes) -> Extracted:
    """Text of a document, normalised. Raises IngestError with a reason a user can act on."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(
            ErrorClass.UNSUPPORTED_FORMAT,
            f"unsupported file type {path.suffix or '(none)'}; expected one of "
            + ", ".join(sorted(set(FORMATS))),
        )
    if not data.strip():
        raise IngestError(ErrorClass.EMPTY,
                          "the file is empty" if not data else "the file is blank")
    if fmt == "pdf":
        raw = _pdf(data)
    elif fmt == "html":
        raw = _html(data)
    else:
        text = _decode(data)
        raw = Extracted(fmt, text, _first_heading(text) if fmt == "md" else None, None)
    text = normalize_text(raw.text)
    if not text:
        raise IngestError(ErrorClass.EMPTY, f"no text left after extracting the {fmt} content")
    return Extracted(raw.format, text, raw.title, raw.n_pages)
