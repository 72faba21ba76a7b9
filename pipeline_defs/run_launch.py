"""Launching a job in-process so that a crash, a full pool or a signal never leaves it stuck.

Every run the CLI launches goes through `launch`:
  1. once per process, recovery (pipeline_defs/run_recovery.py): our runs whose process
     died are marked failed and their slots freed; one line says so;
  2. for each pool the job's steps need, a loud, sleeping, bounded wait for a free slot
     (pipeline_defs/slot_wait.py);
  3. the run, tagged with its owner (pipeline_defs/run_owner.py), executes in a worker
     thread. Dagster takes over SIGINT/SIGTERM only when it runs in the main thread (its
     `capture_interrupts` then turns them into a flag that its executor never reads while
     it waits for a slot); in a worker thread it leaves them to us. The main thread
     watches the run and, on SIGINT/SIGTERM, marks it canceling, cancels the step's event
     loop (assets/interrupts.py), waits a few seconds for Dagster to end it CANCELED,
     makes sure it is CANCELED with no slot held, and exits 130 / 143.
"""

import os
import signal
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass

import dagster as dg

from assets.interrupts import request_stop
from pipeline_defs.run_owner import owner_tags
from pipeline_defs.run_recovery import FINISHED, recover
from pipeline_defs.slot_wait import (
    REPRINT_SECONDS,
    SlotWaitTimeout,
    holders_text,
    job_pools,
    wait_for_slot,
)

STOP_GRACE_SECONDS = 7.0  # then the process ends anyway: a stop takes < 10 s
WATCH_SECONDS = 2.0


@dataclass
class LaunchSettings:
    slot_wait_seconds: float = 600.0  # 0: wait for a slot as long as it takes
    actor: str = "docgraph"  # the command, named in what recovery writes to a run's log


settings = LaunchSettings()
launched: list[str] = []  # run ids this process launched, in order
_recovered: "weakref.WeakSet[dg.DagsterInstance]" = weakref.WeakSet()


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the CLI. A signal to stop, not an error: so not a
    DocgraphError (resources/errors.py) but a BaseException, like KeyboardInterrupt, which
    no `except Exception` on the way to the CLI swallows."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM


_signalled: list[int] = []


def install_stop_handlers() -> None:
    """SIGTERM behaves like SIGINT; the first one raises Interrupted in the main thread,
    later ones are ignored while we stop."""
    def handler(signum, _frame):
        if _signalled:
            return
        _signalled.append(signum)
        raise Interrupted(signum)

    _signalled.clear()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def launch(instance: dg.DagsterInstance, job: dg.JobDefinition, **kwargs
           ) -> dg.ExecuteInProcessResult:
    """`job.execute_in_process(instance=instance, **kwargs)`, safely (see the module)."""
    if instance not in _recovered:
        _recovered.add(instance)
        if line := recover(instance, settings.actor).line():
            print(line, flush=True)
    pools = job_pools(job)
    for pool in sorted(set(pools.values())):
        wait_for_slot(instance, pool, settings.slot_wait_seconds, settings.actor)
    run_id = str(uuid.uuid4())  # as Dagster makes them; ours to know before the run exists
    tags = {**kwargs.pop("tags", {}), **owner_tags()}
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = job.execute_in_process(
                instance=instance, run_id=run_id, tags=tags, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc
        finally:
            done.set()

    # An Event, not Thread.join: a join interrupted by a signal can leave is_alive() False
    # while the thread still runs (Python < 3.13).
    done = threading.Event()
    thread = threading.Thread(target=work, name=f"docgraph {job.name}", daemon=True)
    launched.append(run_id)
    try:
        thread.start()
        _watch(instance, done, run_id, pools)
    except (Interrupted, SlotWaitTimeout) as reason:
        _stop(instance, done, run_id, reason)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _watch(instance: dg.DagsterInstance, done: threading.Event, run_id: str,
           pools: dict[str, str]) -> None:
    """Wait for the run; if one of its steps is left waiting for a slot (another process
    took the one we saw free), say so, recover dead holders, and give up in time."""
    waiting_since: float | None = None
    said = 0.0
    watching = bool(pools) and instance.event_log_storage.supports_global_concurrency_limits
    next_look = time.monotonic() + WATCH_SECONDS
    while not done.wait(0.2):
        if not watching or time.monotonic() < next_look:
            continue
        next_look = time.monotonic() + WATCH_SECONDS
        pending = _unassigned_pool(instance, run_id, pools)
        if pending is None:
            if waiting_since is None:  # claimed at once: nothing left to watch
                watching = _pool_steps_left(instance, run_id, pools)
            waiting_since = None
            continue
        now = time.monotonic()
        waiting_since = waiting_since or now
        if (found := recover(instance, settings.actor)).changed:
            print(found.line(), flush=True)
        if now - said >= REPRINT_SECONDS:
            print(f"docgraph: run {run_id[:8]} waits for a slot of pool {pending} "
                  f"({holders_text(instance, pending)})", flush=True)
            said = now
        if settings.slot_wait_seconds and now - waiting_since >= settings.slot_wait_seconds:
            raise SlotWaitTimeout(
                f"docgraph: gave up after {now - waiting_since:.0f} s waiting for a slot of "
                f"pool {pending} ({holders_text(instance, pending)})")


def _unassigned_pool(instance: dg.DagsterInstance, run_id: str, pools: dict[str, str]
                     ) -> str | None:
    """The pool in which a step of the run is queued without a slot, if any."""
    storage = instance.event_log_storage
    for pool in sorted(set(pools.values())):
        info = storage.get_concurrency_info(pool)
        if any(p.run_id == run_id and not p.assigned_timestamp for p in info.pending_steps):
            return pool
    return None


def _pool_steps_left(instance: dg.DagsterInstance, run_id: str, pools: dict[str, str]) -> bool:
    """Whether a pool step of the run has not claimed its slot yet (its claim comes when the
    step starts, after the steps before it)."""
    storage = instance.event_log_storage
    claimed = {s.step_key for pool in set(pools.values())
               for s in storage.get_concurrency_info(pool).claimed_slots if s.run_id == run_id}
    return bool(set(pools) - claimed)


def _stop(instance: dg.DagsterInstance, done: threading.Event, run_id: str,
          reason: BaseException) -> None:
    """End the run CANCELED with no slot held, within STOP_GRACE_SECONDS."""
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    why = (f"{reason} received by docgraph (pid {os.getpid()})"
           if isinstance(reason, Interrupted) else str(reason))
    run = instance.get_run_by_id(run_id)
    finished = run.status if run is not None and run.status in FINISHED else None
    if run is not None and finished is None:
        instance.report_run_canceling(run, f"docgraph: stopping: {why}")
    request_stop()
    done.wait(max(0.0, deadline - time.monotonic()))
    run = instance.get_run_by_id(run_id)
    if run is not None and finished is None and run.status != dg.DagsterRunStatus.CANCELED:
        instance.report_run_canceled(run, f"docgraph: canceled: {why}")
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    what = f"had already ended {finished.value}" if finished else "canceled"
    print(f"docgraph: run {run_id[:8]} {what} ({why}); its pool slots are free. Answers "
          "received so far are in the response cache: the next run pays only for the rest.",
          flush=True)
    if not done.is_set():  # stuck outside our code (e.g. in Dagster's claim loop)
        sys.stderr.flush()
        os._exit(getattr(reason, "exit_code", 1))
