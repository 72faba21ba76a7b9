"""The offline provider: an OpenAI-compatible ASGI app answering with deterministic
text analytics (heuristics, not a language model), the embedded default when no endpoint
is configured. The simulator that serves it over loopback with latency, limits and faults
is dev tooling, in simulator/ at the top of the repository."""
