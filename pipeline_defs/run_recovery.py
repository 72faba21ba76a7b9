"""Runs whose process died: marked failed, their pool slots given back.

A process killed with SIGKILL (OOM, reboot, `kill -9`) leaves its run STARTED and its
pool slots claimed: without the daemon's run monitoring nothing ever ends it, and two such
runs block the `llm` pool (limit 2) for good. Before docgraph launches a run it looks for
runs that it launched itself (run_owner's tags) on this host, whose process is gone, marks
them failed with the reason, and frees their slots. Runs of another host, or without our
tags (the UI, the daemon), are not ours to judge: they are left alone, and named if they
hold slots. Slots still held by runs that already ended (or no longer exist) are freed
too: that is what `free_slots_after_run_end_seconds` would do if the daemon were running.
"""

import os
from collections import Counter
from dataclasses import dataclass, field

import dagster as dg

from pipeline_defs.run_owner import Owner

# A docgraph process creates its run (NOT_STARTED), starts it, then runs it; a run of ours
# in any of these states whose process is gone will never move on.
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED}


@dataclass
class Recovery:
    """What one recovery pass did and saw."""

    recovered: list[str] = field(default_factory=list)  # run ids marked failed or canceled
    freed: Counter = field(default_factory=Counter)  # pool -> slots given back
    foreign: dict[str, str] = field(default_factory=dict)  # run id -> who holds its slots

    @property
    def changed(self) -> bool:
        return bool(self.recovered or self.freed)

    def line(self) -> str | None:
        """The one line the CLI prints, or None if there was nothing to say."""
        parts = []
        if self.recovered:
            ids = ", ".join(r[:8] for r in self.recovered)
            parts.append(f"{len(self.recovered)} run(s) whose process is gone (killed or "
                         f"crashed) marked ended ({ids})")
        if self.freed:
            pools = ", ".join(f"{n} in pool {p}" for p, n in sorted(self.freed.items()))
            parts.append(f"freed {sum(self.freed.values())} slot(s): {pools}")
        if self.foreign:
            held = "; ".join(f"run {r[:8]} ({who})" for r, who in self.foreign.items())
            parts.append(f"left alone, holding slots: {held}")
        return f"docgraph: recovery: {'; '.join(parts)}" if parts else None


def holder(run: dg.DagsterRun | None) -> str:
    """Who a slot-holding run belongs to, as the CLI names it."""
    if run is None:
        return "no such run"
    owner = Owner.of(run.tags)
    if owner is None:
        return f"{run.status.value}, not launched by docgraph"
    return f"{run.status.value}, {owner}"


def recover(instance: dg.DagsterInstance, actor: str) -> Recovery:
    """Mark our dead runs ended, free the slots of runs that will never free them, and
    list who else holds slots. `actor` names the command doing it, for the run's log."""
    result = Recovery()
    me = os.getpid()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        owner = Owner.of(run.tags)
        if owner is None or not owner.here() or owner.alive():
            continue
        canceling = run.status == dg.DagsterRunStatus.CANCELING
        message = (f"docgraph: {owner} that ran this run is gone (killed or crashed); "
                   f"marked {'canceled' if canceling else 'failed'} by {actor} (pid {me})")
        if canceling:  # it was being stopped already
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
        result.recovered.append(run.run_id)
    free_ended(instance, result)
    return result


def free_ended(instance: dg.DagsterInstance, result: Recovery) -> None:
    """Free every slot (claimed or assigned) whose run has ended or does not exist; note
    the runs still holding slots that are not ours to judge."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    held: dict[str, Counter] = {}
    for pool, info in infos.items():
        for slot in info.claimed_slots:
            held.setdefault(slot.run_id, Counter())[pool] += 1
        for step in info.pending_steps:  # assigned but not yet claimed also blocks others
            if step.assigned_timestamp and not any(
                    s.run_id == step.run_id and s.step_key == step.step_key
                    for s in info.claimed_slots):
                held.setdefault(step.run_id, Counter())[pool] += 1
        for step in info.pending_steps:
            held.setdefault(step.run_id, Counter())
    for run_id, pools in held.items():
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in FINISHED:
            storage.free_concurrency_slots_for_run(run_id)
            result.freed.update(pools)
        elif pools and run.run_id not in result.recovered and _not_ours(run):
            result.foreign[run_id] = holder(run)


def _not_ours(run: dg.DagsterRun) -> bool:
    owner = Owner.of(run.tags)
    return owner is None or not owner.here()
