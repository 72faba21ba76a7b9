"""Waiting for a pool slot out loud, before a run is launched.

Dagster's in-process executor waits for a slot by polling in a loop without sleeping (its
`InstanceConcurrencyContext.interval_to_next_pending_claim_check` is never positive), and
only ever logs it: a user saw nothing but 100% CPU. So before launching a run whose step
needs pool P, docgraph checks P itself: while no slot is free it says which runs hold them,
sleeps between looks (re-running recovery: a holder may die while we wait), and gives up
after `--slot-wait-seconds` with a clear error. Once a slot is free the run is launched at
once, so Dagster's own claim then finds it free too (unless another process took it in
the meantime; pipeline_defs/run_launch.py watches for that).
"""

import time
from collections.abc import Callable

import dagster as dg

from pipeline_defs.run_recovery import holder, recover
from resources.errors import DocgraphError, ErrorClass

POLL_SECONDS = 1.0
REPRINT_SECONDS = 60.0
EXIT_SLOT_TIMEOUT = 75  # EX_TEMPFAIL: try again later


class SlotWaitTimeout(DocgraphError):
    """No slot of the pool came free in time; the CLI exits with `exit_code`."""

    exit_code = EXIT_SLOT_TIMEOUT

    def __init__(self, message: str):
        super().__init__(ErrorClass.SLOT_WAIT_TIMEOUT, message)


def job_pools(job: dg.JobDefinition) -> dict[str, str]:
    """{step key: pool} of the job's steps that need a pool."""
    return {node.name: node.definition.pool for node in job.graph.nodes
            if getattr(node.definition, "pool", None)}


def taken(info) -> set[tuple[str, str]]:
    """The (run, step) pairs holding a slot: claimed, or assigned and about to claim."""
    held = {(s.run_id, s.step_key) for s in info.claimed_slots}
    held.update((p.run_id, p.step_key) for p in info.pending_steps if p.assigned_timestamp)
    return held


def has_free_slot(instance: dg.DagsterInstance, pool: str) -> bool:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return True
    info = storage.get_concurrency_info(pool)
    return info.limit is None or len(taken(info)) < info.limit


def holders_text(instance: dg.DagsterInstance, pool: str) -> str:
    info = instance.event_log_storage.get_concurrency_info(pool)
    runs = sorted({run_id for run_id, _ in taken(info)})
    listed = "; ".join(f"run {r} ({holder(instance.get_run_by_id(r))})" for r in runs)
    return f"{len(taken(info))} of {info.limit} held by {listed or 'nobody'}"


def wait_for_slot(instance: dg.DagsterInstance, pool: str, timeout: float, actor: str,
                  say: Callable[[str], None] = print) -> None:
    """Return once `pool` has a free slot; raise SlotWaitTimeout after `timeout` seconds
    (0: wait as long as it takes)."""
    if has_free_slot(instance, pool):
        return
    started = time.monotonic()
    limit = f"up to {timeout:.0f} s" if timeout else "with no time limit"
    said = None
    while not has_free_slot(instance, pool):
        waited = time.monotonic() - started
        if timeout and waited >= timeout:
            raise SlotWaitTimeout(
                f"docgraph: gave up after {waited:.0f} s waiting for a slot of pool {pool} "
                f"({holders_text(instance, pool)}); end those runs (the UI: make dev), or "
                f"raise the pool's limit (`dagster instance concurrency set {pool} N`), or "
                "wait longer with --slot-wait-seconds")
        if said is None or time.monotonic() - said >= REPRINT_SECONDS:
            say(f"docgraph: pool {pool} has no free slot ({holders_text(instance, pool)}); "
                f"waiting {limit} (--slot-wait-seconds)")
            said = time.monotonic()
        time.sleep(POLL_SECONDS)
        if (found := recover(instance, actor)).changed:
            say(found.line())
    say(f"docgraph: pool {pool}: a slot is free after {time.monotonic() - started:.0f} s")
