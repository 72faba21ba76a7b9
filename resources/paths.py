"""Where docgraph keeps its own state on this machine.

Resolved when a resource is used, never at import time, so that one code location can be
pointed elsewhere by the environment of the process that runs it.
"""

import os
from pathlib import Path


def docgraph_home() -> Path:
    """$DOCGRAPH_HOME, else $DAGSTER_HOME/docgraph, else .dagster/docgraph in the cwd."""
    explicit = os.environ.get("DOCGRAPH_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    dagster_home = os.environ.get("DAGSTER_HOME")
    base = Path(dagster_home).expanduser() if dagster_home else Path(".dagster")
    return (base / "docgraph").resolve()


def resolve(path: str, default: Path) -> Path:
    """An explicit path (relative to the cwd) or the default."""
    return Path(path).expanduser().resolve() if path else default
