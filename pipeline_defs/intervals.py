"""How often the sensors tick: their defaults, or DOCGRAPH_SENSOR_INTERVAL_SECONDS.

A sensor's `minimum_interval_seconds` is part of its definition, so it is read when the
code location loads (the daemon's code server), not per tick. The tests that drive the real
daemon set it to a few seconds so that a file reaches Neo4j in about a minute rather than
several; the daemon's loops run every 5 s at best, so less than 5 changes nothing.
"""

import os

INTERVAL_VARIABLE = "DOCGRAPH_SENSOR_INTERVAL_SECONDS"


def sensor_interval(default: int) -> int:
    """`default`, or the positive whole number of seconds in $DOCGRAPH_SENSOR_INTERVAL_SECONDS."""
    value = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not value:
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"{INTERVAL_VARIABLE}={value!r}: expected whole seconds") from None
    if seconds < 1:
        raise ValueError(f"{INTERVAL_VARIABLE}={value!r}: expected at least 1 second")
    return seconds
