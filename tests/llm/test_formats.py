"""The response_format ladder's bookkeeping: one probe per model, then everyone at once;
what a step's first engine learns, its later engines know."""

import asyncio
import logging

import httpx2
import openai

from resources.llm.formats import FormatModes, is_format_rejection


def test_once_a_mode_is_known_the_waiting_requests_go_together():
    modes = FormatModes(logging.getLogger("test"))
    in_flight, peak = 0, 0

    async def request():
        nonlocal in_flight, peak
        async with modes.probing("m"):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            modes.worked("m", modes.mode("m"))

    async def go():
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(request() for _ in range(16)))
        return asyncio.get_running_loop().time() - started

    elapsed = asyncio.run(go())
    assert peak == 15  # the probe alone, then the 15 that waited for it, all at once
    assert elapsed < 0.5  # not 16 requests one after another (0.8 s)


def test_a_later_engine_starts_on_the_rung_that_worked():
    learned: dict[str, str] = {}
    first = FormatModes(logging.getLogger("test"), learned)
    assert first.rejected("m", "json_schema") and first.mode("m") == "json_object"
    first.worked("m", "json_schema")  # a stale success in the old mode proves nothing
    assert learned == {}
    first.worked("m", "json_object")
    assert learned == {"m": "json_object"}
    assert FormatModes(logging.getLogger("test"), learned).mode("m") == "json_object"


def _bad_request(message: str, body: dict) -> openai.BadRequestError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(400, request=request)
    return openai.BadRequestError(message, response=response, body=body)


def test_only_a_400_about_the_format_is_a_format_rejection():
    request = {"response_format": {"type": "json_schema"}}
    echoed = {"detail": "temperature must be <= 2", "request": {"response_format": {
        "type": "json_schema"}}}
    assert not is_format_rejection(_bad_request("temperature must be <= 2", echoed), request)
    assert is_format_rejection(
        _bad_request("response_format json_schema is not supported", {}), request)
    assert is_format_rejection(_bad_request("invalid", {"param": "response_format"}), request)
    assert not is_format_rejection(
        _bad_request("response_format json_schema is not supported", {}), {})
