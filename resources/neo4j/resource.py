"""The graph store as a Dagster resource: the only module of resources/neo4j that knows
Dagster. Fields left unset come from the environment (settings.py); the driver is built
once per run in `setup_for_execution` and closed after it."""

import dagster as dg
import neo4j
from pydantic import PrivateAttr

from resources.neo4j.settings import Neo4jSettings
from resources.neo4j.store import DEFAULT_BATCH_SIZE, GraphWriter


class Neo4jResource(dg.ConfigurableResource):
    uri: str | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    _driver: neo4j.Driver | None = PrivateAttr(default=None)

    def settings(self) -> Neo4jSettings:
        return Neo4jSettings.from_env(uri=self.uri, user=self.user, password=self.password,
                                      database=self.database)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._driver = self.settings().driver()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    @property
    def driver(self) -> neo4j.Driver:
        if self._driver is None:
            raise dg.DagsterInvariantViolationError(
                "Neo4jResource is used outside a run: use it through Dagster, or call "
                "setup_for_execution first")
        return self._driver

    def writer(self) -> GraphWriter:
        return GraphWriter(self.driver, database=self.settings().database,
                           batch_size=self.batch_size)
