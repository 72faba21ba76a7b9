"""Which failures are worth retrying, and when to try again."""

import email.utils
import random
import time

import httpx2
import openai

RETRYABLE = frozenset({"rate_limited", "server_error", "timeout", "connection"})
# Failures that say the provider is down (429 says it is up, and busy).
OUTAGE = frozenset({"server_error", "timeout", "connection"})
ERROR_CLASSES = (
    "rate_limited", "server_error", "timeout", "connection", "invalid_output",
    "client_error", "circuit_open", "internal_error",
)


def classify(exc: BaseException) -> str:
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | ConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in (408, 409):  # request timeout, lock conflict: try again
            return "timeout" if exc.status_code == 408 else "server_error"
        return "server_error" if exc.status_code >= 500 else "client_error"
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return "server_error"  # the body was not what the API promised
    return "client_error"


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0.0, min(cap, base * 2.0**attempt))


def retry_after_seconds(
    headers: httpx2.Headers | dict | None, now: float | None = None
) -> float | None:
    """`retry-after-ms`, else `retry-after` as seconds or an HTTP date."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - (now if now is not None else time.time()))
