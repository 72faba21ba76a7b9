"""Where docgraph keeps its own state on this machine.

Resolved when a resource is used, never at import time, so that one code location can be
pointed elsewhere by the environment of the process that runs it. What a setting resolves
to is remembered per setting (`_absolute`): the asset store asks for its root on every
read and write, and resolving costs a system call per path component (1.5 s of the theme
catalog's 2.3 s over 200 documents went there).
"""

import functools
import os
from pathlib import Path


def _absolute(path: str) -> Path:
    return _absolute_from(path, os.getcwd())  # a relative setting is relative to the cwd


@functools.lru_cache(maxsize=64)
def _absolute_from(path: str, cwd: str) -> Path:
    return (Path(cwd) / Path(path).expanduser()).resolve()


@functools.lru_cache(maxsize=64)
def _project_root(explicit: str | None, cwd: str) -> Path:
    if explicit:
        return _absolute_from(explicit, cwd)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "workspace.yaml").exists():
        return checkout
    here = Path(cwd).resolve()
    return next((p for p in (here, *here.parents) if (p / "workspace.yaml").exists()), here)


def project_root() -> Path:
    """The project documents are registered relative to, whatever the working directory:
    $DOCGRAPH_ROOT, else the checkout this code runs from (the folder holding
    workspace.yaml), else the nearest folder above the cwd that holds one, else the cwd."""
    return _project_root(os.environ.get("DOCGRAPH_ROOT"), os.getcwd())  # cwd: a cache key


def dagster_home() -> Path:
    """$DAGSTER_HOME (made absolute), else .dagster in the project."""
    explicit = os.environ.get("DAGSTER_HOME")
    return _absolute(explicit) if explicit else project_root() / ".dagster"


def docgraph_home() -> Path:
    """$DOCGRAPH_HOME, else the Dagster home's docgraph/ folder."""
    explicit = os.environ.get("DOCGRAPH_HOME")
    return _absolute(explicit) if explicit else dagster_home() / "docgraph"


def resolve(path: str, default: Path) -> Path:
    """An explicit path (relative to the cwd) or the default."""
    return Path(path).expanduser().resolve() if path else default
