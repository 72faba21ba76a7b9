"""The docgraph code location (workspace.yaml loads `pipeline_defs.defs`)."""

from pipeline_defs.definitions import defs

__all__ = ["defs"]
