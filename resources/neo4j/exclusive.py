"""One destructive user of a Neo4j server at a time.

Test sessions and benchmarks empty the database and drop the schema. Two of them on one
server (two checkouts using the same scripts/neo4j.sh directory, or a benchmark started
during a test run) would delete each other's data mid-run, and the one that started the
server could stop it under the other. Each takes this lock, named after the server, before
it even checks whether the server runs, and holds it until it is done: they queue instead.
"""

import contextlib
import fcntl
import hashlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_use(server: str, wait_seconds: float = 3600) -> Iterator[None]:
    """`server`: the server's URI, or the directory scripts/neo4j.sh runs it from."""
    digest = hashlib.sha256(server.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"docgraph-neo4j-{digest}.lock"
    with path.open("a") as handle:
        deadline = time.monotonic() + wait_seconds
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{server} stayed in use by another test run or "
                                       f"benchmark for {wait_seconds:.0f} s ({path})") from None
                if not announced:
                    print(f"waiting for another test run or benchmark using {server} "
                          f"({path})", file=sys.stderr)
                    announced = True
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
