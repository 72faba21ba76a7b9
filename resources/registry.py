"""The document registry: which file each `documents` partition key stands for.

Dagster's dynamic partitions hold only keys. The registry keeps, per key, the path of the
source file (relative to the project root when inside it, so a moved checkout keeps
working) and the last size/mtime/sha256 seen, so the inbox sensor hashes a file only when
it changed. By default it is a small SQLite file in WAL mode beside the instance (the
sensor, the CLI and runs may open it at the same time); with `DOCGRAPH_REGISTRY_URL` (or
the resource's `url`) set to a PostgreSQL database, e.g. the instance's own, it lives
there, so that runs on other machines find the documents. One table, the same SQL on
both (SQLAlchemy Core; `INSERT ... ON CONFLICT` is SQLite's and PostgreSQL's alike).
"""

import contextlib
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from resources.engines import database, transaction
from resources.paths import docgraph_home, project_root, resolve

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
_SLUG_JUNK = re.compile(r"[^a-z0-9.]+")
URL_ENV = "DOCGRAPH_REGISTRY_URL"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    key       TEXT PRIMARY KEY,
    path      TEXT NOT NULL UNIQUE,
    added_at  TEXT NOT NULL,
    size      BIGINT,
    mtime_ns  BIGINT,
    sha256    TEXT
)
"""


@dataclass(frozen=True)
class RegisteredDocument:
    key: str
    path: Path
    sha256: str | None = None
    added_at: str | None = None  # ISO time of first registration: when docgraph first saw it


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _SLUG_JUNK.sub("-", ascii_name.lower())
    # no runs of dots (Dagster rejects "..." in keys) and no dashes hugging a dot
    slug = re.sub(r"-*\.[-.]*", ".", slug).strip("-.")
    return slug[:60].strip("-.") or "doc"


def document_key(relative_path: str) -> str:
    """A readable, unique, stable partition key: the file name's slug and a short hash
    of the whole relative path (two `Report 1.md` in different folders differ)."""
    normalized = unicodedata.normalize("NFC", relative_path).replace("\\", "/")
    digest = hashlib.sha256(normalized.encode()).hexdigest()[:8]
    return f"{_slug(Path(normalized).name)}-{digest}"


class DocumentRegistry(dg.ConfigurableResource):
    """Maps document partition keys to source files.

    `url` (a PostgreSQL database) defaults to $DOCGRAPH_REGISTRY_URL, and without one the
    registry is the SQLite file `db_path`, by default `<docgraph home>/registry.sqlite`;
    `inbox_dir` defaults to `data/inbox`
    in the project, `root` (what keys and stored paths are relative to) to the project
    root (resources.paths.project_root), so neither depends on the working directory.
    """

    db_path: str = ""
    url: str = ""  # a SQLAlchemy URL (postgresql://...); empty: $DOCGRAPH_REGISTRY_URL or db_path
    inbox_dir: str = "data/inbox"
    root: str = ""

    # -- locations -------------------------------------------------------------------
    def root_path(self) -> Path:
        return resolve(self.root, project_root())

    def inbox_path(self) -> Path:
        inbox = Path(self.inbox_dir).expanduser()
        return (inbox if inbox.is_absolute() else self.root_path() / inbox).resolve()

    def _relative(self, path: Path) -> str:
        path = path.expanduser().resolve()
        try:
            return path.relative_to(self.root_path()).as_posix()
        except ValueError:
            return path.as_posix()

    def _absolute(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root_path() / path

    def database_url(self) -> str:
        """Where the registry is: `url`, else $DOCGRAPH_REGISTRY_URL, else the SQLite file
        `db_path` (default <docgraph home>/registry.sqlite)."""
        if url := self.url or os.environ.get(URL_ENV, ""):
            return url
        return f"sqlite:///{resolve(self.db_path, docgraph_home() / 'registry.sqlite')}"

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[sa.Connection]:
        with transaction(_engine(self.database_url()), write) as conn:
            yield conn

    # -- reads -----------------------------------------------------------------------
    def lookup(self, key: str) -> RegisteredDocument | None:
        with self._db() as conn:
            row = conn.execute(sa.text(
                "SELECT key, path, sha256, added_at FROM documents WHERE key = :key"),
                {"key": key}).fetchone()
        return RegisteredDocument(row[0], self._absolute(row[1]), row[2], row[3]) if row else None

    def entries(self) -> list[RegisteredDocument]:
        with self._db() as conn:
            rows = conn.execute(sa.text(
                "SELECT key, path, sha256, added_at FROM documents ORDER BY key")).fetchall()
        return [RegisteredDocument(k, self._absolute(p), s, a) for k, p, s, a in rows]

    # -- writes ----------------------------------------------------------------------
    def register(self, paths: Iterable[Path]) -> list[RegisteredDocument]:
        """Register files (idempotent); refresh the stored hash of any that changed. The
        files are hashed between a read and a short write, not inside a transaction."""
        files = [(path, self._relative(path), path.stat()) for path in map(Path, paths)]
        keys = [document_key(relative) for _, relative, _ in files]
        known = {}
        with self._db() as conn:
            for start in range(0, len(keys), 500):  # below SQLite's bound-variable limit
                known.update((row[0], row[1:]) for row in conn.execute(sa.text(
                    "SELECT key, size, mtime_ns, sha256 FROM documents WHERE key IN :keys"
                ).bindparams(sa.bindparam("keys", expanding=True)),
                    {"keys": keys[start:start + 500]}))
        registered, changed = [], []
        for (path, relative, stat), key in zip(files, keys, strict=True):
            size, mtime_ns, sha = known.get(key, (None, None, None))
            if not (size == stat.st_size and mtime_ns == stat.st_mtime_ns and sha):
                sha = file_sha256(path)
                changed.append({"key": key, "path": relative, "size": stat.st_size,
                                "added_at": datetime.now(UTC).isoformat(),
                                "mtime_ns": stat.st_mtime_ns, "sha256": sha})
            registered.append(RegisteredDocument(key, path.resolve(), sha))
        if changed:
            with self._db(write=True) as conn:
                conn.execute(sa.text(
                    "INSERT INTO documents (key, path, added_at, size, mtime_ns, sha256)"
                    " VALUES (:key, :path, :added_at, :size, :mtime_ns, :sha256)"
                    " ON CONFLICT (key) DO UPDATE SET size = excluded.size,"
                    " mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256"), changed)
        return registered

    def remove(self, keys: Iterable[str]) -> None:
        with self._db(write=True) as conn:
            keys = [{"key": k} for k in keys]
            if keys:
                conn.execute(sa.text("DELETE FROM documents WHERE key = :key"), keys)


def _engine(url: str) -> sa.Engine:
    return database(url, (_SCHEMA,))


def supported_files(folder: Path) -> list[Path]:
    """Documents below `folder` in a stable order; hidden and partial files are skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()  # regular files only: a FIFO would block the hash forever
        and p.suffix.lower() in SUPPORTED_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
