"""Where the batch lane keeps its submissions, durably: in the response cache's database.

A submission is one input file sent as one provider batch: its row (`llm_batches`) is
written, with one row per item (`llm_batch_items`, custom_id = the item's cache key),
before the batch is created at the provider, and gets the batch id once it is; so a
re-run, a retried run or another process finds every item already on its way and never
sends it again, and a submission whose process died between the two is finished (the
provider's batch adopted by the submission id in its metadata, or created then) instead of
sent twice. Answered items are known by their cached answers; an item's row keeps why it
was not answered (`failed`, `expired`, `invalid` with the answer to repair, `missing` when
a cancelled batch never reached it).
"""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from resources.engines import database, is_postgres, transaction

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS llm_batches (
        submission    TEXT PRIMARY KEY,
        batch_id      TEXT UNIQUE,
        endpoint      TEXT NOT NULL,
        schema_name   TEXT NOT NULL,
        stage         TEXT NOT NULL,
        requests      INTEGER NOT NULL,
        input_file_id TEXT NOT NULL,
        status        TEXT NOT NULL,
        completed     INTEGER NOT NULL DEFAULT 0,
        failed        INTEGER NOT NULL DEFAULT 0,
        partitions    TEXT NOT NULL,
        created_at    DOUBLE PRECISION NOT NULL,
        updated_at    DOUBLE PRECISION NOT NULL,
        collected_at  DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS llm_batch_items (
        custom_id  TEXT NOT NULL,
        submission TEXT NOT NULL,
        state      TEXT NOT NULL,
        detail     TEXT,
        PRIMARY KEY (custom_id, submission)
    )""",
    "CREATE INDEX IF NOT EXISTS llm_batch_items_by_key ON llm_batch_items (custom_id)",
)
CHUNK = 500  # keys per statement


@dataclass(frozen=True)
class Submission:
    submission: str
    batch_id: str | None
    endpoint: str
    schema_name: str
    stage: str
    requests: int
    input_file_id: str
    status: str
    completed: int
    failed: int
    partitions: tuple[str, ...]
    created_at: float
    updated_at: float
    collected_at: float | None

    @property
    def collected(self) -> bool:
        return self.collected_at is not None


def _submission(row: sa.Row) -> Submission:
    values = dict(row._mapping)
    values["partitions"] = tuple(json.loads(values["partitions"]))
    return Submission(**values)


class BatchStore:
    def __init__(self, cache_location: str):
        """`cache_location`: the response cache's (a SQLite file, or postgresql://…)."""
        url = cache_location if is_postgres(cache_location) else f"sqlite:///{cache_location}"
        self.engine = database(url, _SCHEMA)

    def record(self, submission: Submission, keys: Iterable[str]) -> None:
        """The submission and its items, in one transaction, before the batch exists."""
        row = {**submission.__dict__, "partitions": json.dumps(list(submission.partitions))}
        with transaction(self.engine, write=True) as conn:
            conn.execute(sa.text(
                "INSERT INTO llm_batches (submission, batch_id, endpoint, schema_name, stage,"
                " requests, input_file_id, status, completed, failed, partitions, created_at,"
                " updated_at, collected_at) VALUES (:submission, :batch_id, :endpoint,"
                " :schema_name, :stage, :requests, :input_file_id, :status, :completed,"
                " :failed, :partitions, :created_at, :updated_at, :collected_at)"), row)
            chunk: list[dict] = []
            for key in keys:
                chunk.append({"custom_id": key, "submission": submission.submission})
                if len(chunk) == CHUNK:
                    self._insert_items(conn, chunk)
                    chunk = []
            if chunk:
                self._insert_items(conn, chunk)

    @staticmethod
    def _insert_items(conn: sa.Connection, rows: list[dict]) -> None:
        conn.execute(sa.text("INSERT INTO llm_batch_items (custom_id, submission, state)"
                             " VALUES (:custom_id, :submission, 'submitted')"), rows)

    def fresh_id(self, digest: str) -> str:
        """A submission id from its file's content: the digest, then `digest-N` for the
        N-th time the same lines are sent again (after an expired or failed batch)."""
        with transaction(self.engine, write=False) as conn:
            sent = conn.execute(sa.text("SELECT count(*) FROM llm_batches WHERE submission = :d"
                                        " OR submission LIKE :repeat"),
                                {"d": digest, "repeat": f"{digest}-%"}).scalar()
        return f"{digest}-{sent}" if sent else digest

    def update(self, submission: str, **values: object) -> None:
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        with transaction(self.engine, write=True) as conn:
            conn.execute(sa.text(f"UPDATE llm_batches SET {assignments}"  # noqa: S608 - names are ours
                                 " WHERE submission = :submission"),
                         {**values, "submission": submission})

    def get(self, submission: str) -> Submission | None:
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(sa.text("SELECT * FROM llm_batches WHERE submission = :s"),
                               {"s": submission}).first()
        return _submission(row) if row else None

    def open_for(self, keys: list[str]) -> dict[str, str]:
        """key -> the uncollected submission it is in, for those of `keys` in one."""
        query = sa.text(
            "SELECT i.custom_id, i.submission FROM llm_batch_items i JOIN llm_batches b"
            " ON b.submission = i.submission WHERE b.collected_at IS NULL"
            " AND i.custom_id IN :keys").bindparams(sa.bindparam("keys", expanding=True))
        found: dict[str, str] = {}
        with transaction(self.engine, write=False) as conn:
            for start in range(0, len(keys), CHUNK):
                found.update(conn.execute(query, {"keys": keys[start:start + CHUNK]}).all())
        return found

    def open_submissions(self, stale_after: float | None = None) -> list[Submission]:
        """Submissions not collected yet; with `stale_after`, only those without a batch
        id that no one has touched for that many seconds (their process died)."""
        sql = "SELECT * FROM llm_batches WHERE collected_at IS NULL"
        params: dict = {}
        if stale_after is not None:
            sql += " AND batch_id IS NULL AND updated_at < :before"
            params["before"] = time.time() - stale_after
        with transaction(self.engine, write=False) as conn:
            return [_submission(r) for r in conn.execute(sa.text(sql + " ORDER BY created_at"),
                                                         params)]

    def mark_items(self, submission: str, outcomes: list[tuple[str, str, str | None]]) -> None:
        """(key, state, detail) of items a batch did not answer."""
        with transaction(self.engine, write=True) as conn:
            for start in range(0, len(outcomes), CHUNK):
                conn.execute(sa.text(
                    "UPDATE llm_batch_items SET state = :state, detail = :detail"
                    " WHERE custom_id = :key AND submission = :submission"),
                    [{"key": k, "state": s, "detail": d, "submission": submission}
                     for k, s, d in outcomes[start:start + CHUNK]])

    def mark_missing(self, submission: str) -> int:
        """Items still `submitted` in a collected batch: it never reached them."""
        with transaction(self.engine, write=True) as conn:
            return conn.execute(sa.text(
                "UPDATE llm_batch_items SET state = 'missing' WHERE submission = :s"
                " AND state = 'submitted'"), {"s": submission}).rowcount

    def outcome(self, key: str) -> tuple[str, str | None, str] | None:
        """(state, detail, batch id) of the key in the newest collected submission that
        did not answer it; None if none."""
        with transaction(self.engine, write=False) as conn:
            row = conn.execute(sa.text(
                "SELECT i.state, i.detail, b.batch_id FROM llm_batch_items i JOIN llm_batches b"
                " ON b.submission = i.submission WHERE i.custom_id = :key AND"
                " b.collected_at IS NOT NULL AND i.state <> 'submitted'"
                " ORDER BY b.collected_at DESC LIMIT 1"), {"key": key}).first()
        return tuple(row) if row else None
