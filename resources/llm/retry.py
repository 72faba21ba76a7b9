"""Which failures are worth retrying, and when to try again."""

import email.utils
import random
import time

import httpx2
import openai

from resources.errors import ErrorClass

RETRYABLE = frozenset({ErrorClass.RATE_LIMITED, ErrorClass.SERVER_ERROR, ErrorClass.TIMEOUT,
                       ErrorClass.CONNECTION})
# Failures that say the provider is down (429 says it is up, and busy).
OUTAGE = frozenset({ErrorClass.SERVER_ERROR, ErrorClass.TIMEOUT, ErrorClass.CONNECTION})
# What an LLM item can fail with, in the order `failed_by_class` lists them.
ITEM_ERROR_CLASSES = (
    ErrorClass.RATE_LIMITED, ErrorClass.SERVER_ERROR, ErrorClass.TIMEOUT,
    ErrorClass.CONNECTION, ErrorClass.INVALID_OUTPUT, ErrorClass.CLIENT_ERROR,
    ErrorClass.CIRCUIT_OPEN, ErrorClass.BATCH_FAILED, ErrorClass.BATCH_EXPIRED,
    ErrorClass.INTERNAL_ERROR,
)


def classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, openai.RateLimitError):
        return ErrorClass.RATE_LIMITED
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | ConnectionError):
        return ErrorClass.CONNECTION
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in (408, 409):  # request timeout, lock conflict: try again
            return ErrorClass.TIMEOUT if exc.status_code == 408 else ErrorClass.SERVER_ERROR
        return ErrorClass.SERVER_ERROR if exc.status_code >= 500 else ErrorClass.CLIENT_ERROR
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return ErrorClass.SERVER_ERROR  # the body was not what the API promised
    return ErrorClass.CLIENT_ERROR


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
