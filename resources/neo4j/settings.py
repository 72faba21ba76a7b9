"""Where the graph lives, read from the environment in this one place.

| variable | default | meaning |
|---|---|---|
| NEO4J_URI | bolt://127.0.0.1:17687 | the server (scripts/neo4j.sh prints it) |
| NEO4J_USER | neo4j | |
| NEO4J_PASSWORD | docgraph-local | the default of scripts/neo4j.sh's loopback server |
| NEO4J_DATABASE | (the server's default) | |
| DOCGRAPH_GRAPH | (unset) | `off`: no graph at all; `on`: the CLI writes it without NEO4J_URI |

Whether a deployment writes the graph at all (`graph_written`): DOCGRAPH_GRAPH decides when
set; unset, the daemon's automation and daily sweep write it (to NEO4J_URI, else the
loopback default) and the CLI only when NEO4J_URI is set (`make demo` sets it when it could
start a server).
"""

import os
from dataclasses import dataclass

import neo4j
import neo4j.exceptions

_ENV = {"uri": "NEO4J_URI", "user": "NEO4J_USER", "password": "NEO4J_PASSWORD",
        "database": "NEO4J_DATABASE"}
_DEFAULTS = {"uri": "bolt://127.0.0.1:17687", "user": "neo4j", "password": "docgraph-local",
             "database": None}


GRAPH_VARIABLE = "DOCGRAPH_GRAPH"


def graph_setting() -> str | None:
    """DOCGRAPH_GRAPH as "on" or "off", None when unset."""
    setting = os.environ.get(GRAPH_VARIABLE, "").strip().lower()
    if setting not in ("", "on", "off"):
        raise ValueError(f"{GRAPH_VARIABLE}={os.environ[GRAPH_VARIABLE]!r}: expected on or off")
    return setting or None


def graph_written(*, by_daemon: bool) -> bool:
    """Whether the chain includes `neo4j_graph` here (see the module's table)."""
    if setting := graph_setting():
        return setting == "on"
    return by_daemon or bool(os.environ.get("NEO4J_URI"))


# What a server that is down, unreachable or refusing us looks like through the driver.
CONNECTION_ERRORS = (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError)


@dataclass(frozen=True)
class Neo4jSettings:
    uri: str
    user: str
    password: str
    database: str | None = None

    @classmethod
    def from_env(cls, **overrides: str | None) -> "Neo4jSettings":
        """Explicit values first, then the environment, then the defaults."""
        values = {}
        for field, variable in _ENV.items():
            value = overrides.get(field)
            if value is None:
                value = os.environ.get(variable) or _DEFAULTS[field]
            values[field] = value
        return cls(**values)

    def driver(self) -> neo4j.Driver:
        # Our statements are static and name every label and property before any data
        # exists: "unknown property key" warnings on an empty graph are noise, not news.
        return neo4j.GraphDatabase.driver(
            self.uri, auth=(self.user, self.password),
            notifications_disabled_classifications=[
                neo4j.NotificationDisabledClassification.UNRECOGNIZED])

    def __repr__(self) -> str:  # never print the password
        return f"Neo4jSettings(uri={self.uri!r}, user={self.user!r}, database={self.database!r})"
