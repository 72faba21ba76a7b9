"""The one client path: the openai SDK's async client, against a base_url or against the
offline provider in-process."""

import functools
import ssl

import httpx2
import openai

from resources.llm.settings import LLMSettings

OFFLINE_BASE_URL = "http://offline.docgraph/v1"


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx2's default TLS context, built once per process: building it loads the CA
    bundle (~0.2 s), and every enrichment step makes a client."""
    return httpx2.create_ssl_context()


def make_client(settings: LLMSettings,
                transport: httpx2.AsyncBaseTransport | None = None) -> openai.AsyncOpenAI:
    s = settings
    timeout = httpx2.Timeout(s.timeout_seconds, connect=min(10.0, s.timeout_seconds))
    if s.offline:
        from resources.llm.offline.app import create_app

        # raise_app_exceptions=False: a bug in the offline app answers 500, like a server
        # would, instead of escaping into the engine.
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=create_app(), raise_app_exceptions=False),
            timeout=timeout,
        )
        base_url, api_key = OFFLINE_BASE_URL, "offline"
    else:
        # The gate bounds requests in flight (per batch ceiling), so the pool itself is
        # unbounded: a request let through never waits for a socket (no pool timeouts).
        http = httpx2.AsyncClient(
            timeout=timeout, transport=transport, verify=_tls(),
            limits=httpx2.Limits(max_connections=None,
                                 max_keepalive_connections=s.max_concurrency),
        )
        base_url, api_key = s.base_url, s.api_key or "unused"
    # max_retries=0: the engine owns retries, so every HTTP call is counted.
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout, http_client=http
    )
