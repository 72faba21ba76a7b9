"""The offline provider: an OpenAI-compatible ASGI app answering with deterministic
text analytics (heuristics, not a language model), and a simulator that serves it over
loopback with latency, limits and faults."""
