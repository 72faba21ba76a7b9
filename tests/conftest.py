"""Shared fixtures: an isolated docgraph home per test and real Dagster instances.

`pg_url` is the real PostgreSQL server started by scripts/postgres.sh (by `make test`, or
here when pytest runs alone). It is never skipped: no server, no green run.
"""

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import neo4j
import psycopg2
import pytest
import yaml

from resources.engines import sqlalchemy_url
from resources.neo4j import Neo4jSettings, delete_all, drop_schema
from resources.neo4j.exclusive import exclusive_use

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"
NEO4J_SCRIPT = REPO / "scripts" / "neo4j.sh"


def instance_at(home: Path) -> dg.DagsterInstance:
    """The instance whose dagster.yaml is in `home`, opened as Dagster's own tools open
    one: through $DAGSTER_HOME (the project's dagster.yaml reads its SQLite storage's
    base_dir from it: resources/instance_storage.py)."""
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return dg.DagsterInstance.get()
    finally:
        if before is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = before


@pytest.fixture(autouse=True)
def docgraph_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own registry, asset storage and inbox."""
    home = tmp_path / "docgraph-home"
    monkeypatch.setenv("DOCGRAPH_HOME", str(home))
    # a developer's graph, provider or shared stores must not leak in: tests that want
    # them set them
    for variable in ("NEO4J_URI", "OPENAI_BASE_URL", "DOCGRAPH_ASSETS",
                     "DOCGRAPH_REGISTRY_URL", "DOCGRAPH_GRAPH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(REPO)
    return home


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("DOCGRAPH_PG_URL")
    if url:
        yield url
        return
    script = REPO / "scripts" / "postgres.sh"
    was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
    url = subprocess.run([script, "start"], capture_output=True, text=True, check=True)
    yield url.stdout.strip()
    if not was_running:
        subprocess.run([script, "stop"], check=True)


def _admin(url: str, sql: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_database(pg_url: str, request, purpose: str = "instance") -> Iterator[str]:
    """A new, empty database of the real server for this test and purpose (dropped after
    it): its SQLAlchemy URL."""
    test = f"{os.getpid()}:{request.node.nodeid}:{purpose}"
    name = "dg_" + hashlib.sha256(test.encode()).hexdigest()[:16]
    _admin(pg_url, f"DROP DATABASE IF EXISTS {name}")
    _admin(pg_url, f"CREATE DATABASE {name}")
    try:
        yield sqlalchemy_url(f"{pg_url.rsplit('/', 1)[0]}/{name}")
    finally:
        _admin(pg_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pooled_postgres_storage(db_url: str) -> dict:
    """dagster.yaml's `storage` for the production storage on `db_url`."""
    return {"custom": {"module": "resources.postgres_storage", "class": "PooledPostgresStorage",
                       "config": {"postgres_url": db_url}}}


@pytest.fixture
def pg_instance(pg_url: str, tmp_path: Path, request) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on a fresh database of the real server, with our dagster.yaml and
    the production storage (scripts/prod.sh: resources/postgres_storage.py)."""
    with fresh_database(pg_url, request) as db_url:
        settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
        settings["storage"] = pooled_postgres_storage(db_url)
        home = tmp_path / "dagster-home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield instance
        finally:
            instance.dispose()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway local instance for tests whose subject is not the storage."""
    with dg.instance_for_test() as inst:
        yield inst


# One session-wide Neo4j for every test that needs one (tests/graph/conftest.py says how it is
# chosen): defined once, here, so that two definitions never queue on the server's lock.
@pytest.fixture(scope="session")
def neo4j_settings() -> Iterator[Neo4jSettings]:
    uri = os.environ.get("DOCGRAPH_TEST_NEO4J_URI")
    server = uri or os.environ.get("DOCGRAPH_NEO4J_DIR", "/tmp/docgraph-neo4j")
    with exclusive_use(server):  # another session would empty the database under us
        if uri:
            yield Neo4jSettings.from_env(uri=uri)
            return
        was_running = subprocess.run([NEO4J_SCRIPT, "status"],
                                     capture_output=True).returncode == 0
        started = subprocess.run([NEO4J_SCRIPT, "start"], capture_output=True, text=True)
        if started.returncode != 0:
            pytest.fail(f"scripts/neo4j.sh start failed:\n{started.stderr}", pytrace=False)
        try:
            yield Neo4jSettings.from_env(uri=started.stdout.strip())
        finally:
            if not was_running:
                subprocess.run([NEO4J_SCRIPT, "stop"], check=True)


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_settings: Neo4jSettings) -> Iterator[neo4j.Driver]:
    driver = neo4j_settings.driver()
    try:
        driver.verify_connectivity()
        delete_all(driver)
        drop_schema(driver)
        yield driver
    finally:
        driver.close()


@pytest.fixture
def chain_graph(neo4j_settings: Neo4jSettings, neo4j_driver: neo4j.Driver,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[neo4j.Driver]:
    """An empty database without a schema that the pipeline writes to (NEO4J_URI set, as
    `make demo` does; subprocesses take `neo4j_settings.uri`), left the same way: the
    pipeline's vector index has another size than the store tests' one."""
    monkeypatch.setenv("NEO4J_URI", neo4j_settings.uri)
    monkeypatch.setenv("NEO4J_PASSWORD", neo4j_settings.password)
    delete_all(neo4j_driver)
    drop_schema(neo4j_driver)
    yield neo4j_driver
    delete_all(neo4j_driver)
    drop_schema(neo4j_driver)
