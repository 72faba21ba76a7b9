"""Stopping a step from outside: the engine's event loop is cancelled, the step ends as
interrupted.

The CLI runs each job in a worker thread and keeps the signals in its main thread
(pipeline_defs/run_launch.py). On SIGINT or SIGTERM it calls `request_stop()`, which
cancels every event loop running `run_interruptible` (its workers and their HTTP requests
with it), and later stage boundaries check `raise_if_stopped()`. Either way the step
raises Dagster's `DagsterExecutionInterruptedError`, which Dagster records as an
interrupted step, and the run as CANCELED once the CLI has marked it canceling.
"""

import asyncio
import threading
from collections.abc import Coroutine
from typing import TypeVar

import dagster as dg

T = TypeVar("T")

_stop = threading.Event()
_lock = threading.Lock()
_running: set[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = set()


def request_stop() -> None:
    """Ask every running step of this process to stop as soon as it can."""
    _stop.set()
    with _lock:
        for loop, task in list(_running):
            loop.call_soon_threadsafe(task.cancel)


def raise_if_stopped() -> None:
    if _stop.is_set():
        raise dg.DagsterExecutionInterruptedError("docgraph: stop requested")


def run_interruptible(main: Coroutine[object, object, T]) -> T:
    """`asyncio.run(main)`, cancelled by `request_stop()`."""

    async def guarded() -> T:
        entry = (asyncio.get_running_loop(), asyncio.current_task())
        with _lock:
            _running.add(entry)
        try:
            raise_if_stopped()  # a stop that came before this loop existed
            return await main
        finally:
            with _lock:
                _running.discard(entry)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if _stop.is_set():
            raise dg.DagsterExecutionInterruptedError("docgraph: stop requested") from None
        raise
    finally:
        main.close()  # never awaited if the stop came first
