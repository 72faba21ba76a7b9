"""Where docgraph keeps its own state on this machine.

Resolved when a resource is used, never at import time, so that one code location can be
pointed elsewhere by the environment of the process that runs it.
"""

import os
from pathlib import Path


def project_root() -> Path:
    """The project documents are registered relative to, whatever the working directory:
    $DOCGRAPH_ROOT, else the checkout this code runs from (the folder holding
    workspace.yaml), else the nearest folder above the cwd that holds one, else the cwd."""
    explicit = os.environ.get("DOCGRAPH_ROOT")
    if explicit:
        return Path(explicit).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "workspace.yaml").exists():
        return checkout
    cwd = Path.cwd().resolve()
    return next((p for p in (cwd, *cwd.parents) if (p / "workspace.yaml").exists()), cwd)


def dagster_home() -> Path:
    """$DAGSTER_HOME (made absolute), else .dagster in the project."""
    explicit = os.environ.get("DAGSTER_HOME")
    return Path(explicit).expanduser().resolve() if explicit else project_root() / ".dagster"


def docgraph_home() -> Path:
    """$DOCGRAPH_HOME, else the Dagster home's docgraph/ folder."""
    explicit = os.environ.get("DOCGRAPH_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return dagster_home() / "docgraph"


def resolve(path: str, default: Path) -> Path:
    """An explicit path (relative to the cwd) or the default."""
    return Path(path).expanduser().resolve() if path else default
