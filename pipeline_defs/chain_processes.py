"""`docgraph materialize --processes N`: the chain in N processes at once.

One process runs its LLM calls on one core: at ~7-10 ms of client CPU per call
(bench/pipeline.py), 32 calls in flight at 200 ms want more than a core while the other
core waits. With N > 1, batches of documents are dealt round-robin to this process and
N-1 helpers (`python -m pipeline_defs.chain_processes FD`: pipeline_defs/helper_process.py),
each running the whole chain for its documents on the same instance, with 1/N of
LLM_MAX_CONCURRENCY and, unless LLM_BUDGET_URL gives every process one shared budget,
1/N of LLM_RPM and LLM_TPM: the provider sees the limits one process would keep. Each
helper sends back its documents' outcomes and the runs it launched; the theme catalog is
rebuilt once, by this process, at the end. A helper that dies is said once, its dead runs
are marked ended, and its documents are run here.
"""

import dataclasses
import json
import os
import sys

import dagster as dg

from pipeline_defs import run_launch
from pipeline_defs.helper_process import HelperProcess, read_job
from pipeline_defs.outcomes import Outcome, StageOutcome
from pipeline_defs.slot_wait import SlotWaitTimeout
from resources.errors import ErrorClass
from resources.llm.resource import LLMResource
from resources.llm.settings import LLMSettings

HELPER = [sys.executable, "-m", "pipeline_defs.chain_processes"]  # + the pipe's fd


def deal(keys: list[str], batch_size: int, processes: int) -> list[list[str]]:
    """`keys` (in partition order) in batches of `batch_size`, dealt round-robin to at most
    `processes` processes: the documents of each."""
    batches = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
    shares: list[list[str]] = [[] for _ in range(min(processes, len(batches)))]
    for number, batch in enumerate(batches):
        shares[number % len(shares)].extend(batch)
    return shares


def llm_share(processes: int) -> LLMResource:
    """One process's LLM resource out of `processes`: its share of the concurrency (rounded
    down, at least 1), and of the rates unless the budget is shared (fields left None come
    from the environment)."""
    settings = LLMSettings.from_env()
    local = not settings.budget_url
    return LLMResource(
        max_concurrency=max(1, settings.max_concurrency // processes),
        rpm=settings.rpm / processes if local and settings.rpm else None,
        tpm=settings.tpm / processes if local and settings.tpm else None)


class ChainHelpers:
    """The helpers, one per share of documents after this process's own."""

    def __init__(self, instance: dg.DagsterInstance, shares: list[list[str]],
                 first: dict[str, int], processes: int, options: dict, actor: str):
        """`first`: each document's first stale job (runs.first_stale_jobs)."""
        self._instance, self._actor, self._shares = instance, actor, shares
        self._helpers = [HelperProcess(HELPER, {
            "instance": dg.serialize_value(instance.get_ref()), "keys": keys,
            "first": {key: first[key] for key in keys},
            "processes": processes, "options": options, "actor": f"{actor} (process {n})",
            "slot_wait_seconds": run_launch.settings.slot_wait_seconds})
            for n, keys in enumerate(shares, start=2)]

    def results(self) -> list[tuple[list[str], dict | None]]:
        """Each helper's documents and its answer ({"outcomes", "runs"}), once it has
        ended; None for a helper that died (said once, its dead runs marked ended)."""
        results = []
        for keys, helper in zip(self._shares, self._helpers, strict=True):
            answer = helper.readline()
            if not answer:
                helper.say_gone(self._instance, self._actor, "a chain process",
                                f" before its {len(keys)} documents were done; running "
                                "them here")
            results.append((keys, json.loads(answer) if answer else None))
        return results

    def close(self) -> None:
        for helper in self._helpers:
            helper.terminate()
        for helper in self._helpers:
            helper.close()


def outcome_to_json(outcome: Outcome) -> dict:
    return dataclasses.asdict(outcome)


def outcome_from_json(data: dict) -> Outcome:
    def error_class(value: str | None) -> ErrorClass | None:
        return ErrorClass(value) if value else None

    detail = dict(data["detail"])
    if "error_class" in detail:
        detail["error_class"] = error_class(detail["error_class"])
    return Outcome(data["key"], data["status"], detail, {
        name: StageOutcome(s["state"], error_class(s["error_class"]), s["reason"])
        for name, s in data["stages"].items()})


def _helper(fd: int) -> int:
    job = read_job()
    from pipeline_defs.runs import chain  # here: runs imports this module

    run_launch.install_stop_handlers()
    run_launch.settings.actor = job["actor"]
    run_launch.settings.slot_wait_seconds = job["slot_wait_seconds"]
    try:
        with (dg.DagsterInstance.from_ref(dg.deserialize_value(job["instance"])) as instance,
              os.fdopen(fd, "w", buffering=1) as answer):
            outcomes = chain(instance, job["keys"], job["first"],
                             llm=llm_share(job["processes"]),
                             **job["options"])
            answer.write(json.dumps({"outcomes": [outcome_to_json(o) for o in outcomes],
                                     "runs": run_launch.launched}) + "\n")
    except (run_launch.Interrupted, SlotWaitTimeout) as stop:
        print(f"docgraph: {job['actor']}: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(_helper(int(sys.argv[1])))
