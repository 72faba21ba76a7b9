"""Reading one registered document: the file's bytes to a validated `Document`."""

import hashlib

import dagster as dg

from assets.failures import PartitionError
from assets.ingest import IngestError, extract, sha256_text
from assets.models import Document
from resources.errors import ErrorClass
from resources.registry import DocumentRegistry

INGEST_VERSION = "ingest-v1"


def read_document(key: str, registry: DocumentRegistry, max_bytes: int) -> Document:
    """The document behind partition `key`, or a PartitionError saying why not."""
    entry = registry.lookup(key)
    if entry is None:
        raise PartitionError(key, "?", ErrorClass.UNREGISTERED,
                             "no file is registered for this key")
    path = entry.path

    def fail(error_class: ErrorClass, reason: str) -> PartitionError:
        return PartitionError(key, str(path), error_class, reason)

    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise fail(ErrorClass.TOO_LARGE, f"{size:,} bytes is over the {max_bytes:,}-byte "
                                             "limit (config max_bytes)")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise fail(ErrorClass.VANISHED, "the file no longer exists") from exc
    except IsADirectoryError as exc:
        raise fail(ErrorClass.NOT_A_FILE, "the path is a directory") from exc
    except PermissionError as exc:
        raise fail(ErrorClass.UNREADABLE, f"permission denied: {exc}") from exc
    try:
        extracted = extract(path, data)
    except IngestError as exc:
        raise fail(exc.error_class, exc.reason) from exc
    return Document(
        key=key,
        path=str(path),
        format=extracted.format,
        title=extracted.title,
        text=extracted.text,
        n_chars=len(extracted.text),
        n_bytes=len(data),
        n_pages=extracted.n_pages,
        source_sha256=hashlib.sha256(data).hexdigest(),
        text_sha256=sha256_text(extracted.text),
    )


def document_metadata(document: Document) -> dict:
    return {
        "format": document.format,
        "title": document.title or "",
        "chars": dg.MetadataValue.int(document.n_chars),
        "bytes": dg.MetadataValue.int(document.n_bytes),
        "pages": dg.MetadataValue.int(document.n_pages or 0),
        "source": dg.MetadataValue.path(document.path),
        "source_sha256": document.source_sha256,
        "preview": dg.MetadataValue.md(_quote(document.text)),
    }


def _quote(text: str, limit: int = 600) -> str:
    excerpt = text[:limit] + ("…" if len(text) > limit else "")
    return "\n".join("> " + line if line else ">" for line in excerpt.split("\n"))
