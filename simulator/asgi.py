"""Plain ASGI plumbing for the simulator: read a request body, sleep unless the client
goes away, send a JSON (or raw) response."""

import asyncio
import json


class Disconnected(Exception):
    pass


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def sleep_or_disconnect(receive, seconds: float) -> None:
    """Sleep, but stop (raise) if the client goes away meanwhile, so requests a client
    abandoned do not count as in flight."""
    if seconds <= 0:
        return
    waiter = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
        if done and waiter.result()["type"] == "http.disconnect":
            raise Disconnected
    finally:
        waiter.cancel()


async def send_raw(send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(send, status: int, payload: dict, headers: dict | None = None) -> None:
    await send_raw(send, status, json.dumps(payload).encode(), headers or {})
