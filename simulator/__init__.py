"""The fault-injecting simulator: the offline provider (resources/llm/offline) served on
127.0.0.1 with latency, limits, faults and a loose model. Dev tooling, not part of the
product (not installed with it): tests, bench/ and `make simulator` use it from the
checkout, e.g. `python -m simulator.server --port 8765`."""
