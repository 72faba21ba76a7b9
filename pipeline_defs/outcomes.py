"""What came of each document in a CLI run: every stage's outcome, and the document's.

A stage of a document is `ok` (materialized, its gate passed), `gate_failed` (materialized,
but too many of its items failed: the stages that read it hold the document back),
`failed` (not materialized, with the error class and reason its step gave), or `not_run`
(an earlier stage it needs did not come through). A document is `ok` only if every stage
of the chain is; `up-to-date` documents were not run at all.
"""

from dataclasses import dataclass, field

import dagster as dg

from assets.dagster_compat import check_states, materialized_in_run
from assets.keys import GATED, success_rate_key
from assets.upstream import latest_upstream
from resources.errors import ErrorClass

STAGE_STATES = ("ok", "gate_failed", "failed", "not_run")
# failures given to every asset of a run or step
CATCH_ALL = (ErrorClass.RUN_ERROR, ErrorClass.STEP_ERROR)


@dataclass(frozen=True)
class StageOutcome:
    state: str  # one of STAGE_STATES
    error_class: ErrorClass | None = None
    reason: str | None = None


@dataclass
class Outcome:
    key: str
    status: str  # ok | up-to-date | failed
    detail: dict  # the first failure: {error_class, reason}; {} when ok
    stages: dict[str, StageOutcome] = field(default_factory=dict)  # asset name -> outcome


def materialized_in(instance: dg.DagsterInstance, run_id: str) -> dict[str, set[str]]:
    """{document: assets materialized by the run}: batch steps log them one by one."""
    done: dict[str, set[str]] = {}
    for asset, partition in materialized_in_run(instance, run_id):
        done.setdefault(partition, set()).add(asset)
    return done


def run_failures(instance: dg.DagsterInstance, run_id: str, keys: list[str], assets: list[str]
                 ) -> dict[str, dict[str, StageOutcome]]:
    """{document: {asset: failed outcome}} for the documents of a run that failed: from each
    step's Failure metadata (which names the stage's assets), or, when a step crashed or the
    run failed before any step ran, the error itself for every asset of the run. Read from
    the instance, so a run of another process (pipeline_defs/ingest_ahead.py) counts alike."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
        return {}
    failures: dict[str, dict[str, StageOutcome]] = {}

    def fail(key: str, names, error_class: ErrorClass, reason: str) -> None:
        for name in names:
            failures.setdefault(key, {}).setdefault(name, StageOutcome("failed", error_class,
                                                                      reason))

    step_failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    if not step_failures:
        for key in keys:
            fail(key, assets, ErrorClass.RUN_ERROR, f"run {run_id} failed; see its logs")
    for entry in step_failures:
        data = entry.dagster_event.step_failure_data
        user = data.user_failure_data
        if user is not None and "failures" in user.metadata:
            for item in user.metadata["failures"].value:
                fail(item["document"], item.get("assets") or assets,
                     ErrorClass(item["error_class"]), f"{item['path']}: {item['reason']}")
        else:
            message = user.description if user else data.error.message if data.error else "?"
            for key in keys:
                fail(key, assets, ErrorClass.STEP_ERROR, message.strip().splitlines()[0])
    return failures


def stage_outcomes(instance: dg.DagsterInstance, key: str, chain: list[str],
                   materialized: set[str], failures: dict[str, StageOutcome],
                   gates: dict[str, bool | None]) -> dict[str, StageOutcome]:
    """Each stage's outcome for `key`. `gates`: {asset: Dagster's verdict on its
    success-rate check for this document}, read for many documents at once (gate_states)."""
    stages: dict[str, StageOutcome] = {}
    for name in chain:
        failure = failures.get(name)
        # a crashed step fails all its assets, but not the ones it stored before it crashed
        if failure and not (failure.error_class in CATCH_ALL and name in materialized):
            stages[name] = failure
        elif name not in materialized:
            stages[name] = StageOutcome("not_run", None, "an earlier stage did not come through")
        elif gates.get(name) is False:
            latest = latest_upstream(instance, dg.AssetKey(name), key)
            meta = latest.metadata if latest else {}
            stages[name] = StageOutcome(
                "gate_failed", ErrorClass.GATE_FAILED,
                f"{name}_success_rate failed: {meta.get('failed_items_count', '?')} of "
                f"{meta.get('items', '?')} items failed {meta.get('failed_by_class', '')}"
                .rstrip())
        else:
            stages[name] = StageOutcome("ok")
    return stages


def gate_states(instance: dg.DagsterInstance, chain: list[str], keys: list[str]
                ) -> dict[str, dict[str, bool | None]]:
    """{document: {gated asset: Dagster's verdict}}, one query per asset."""
    states: dict[str, dict[str, bool | None]] = {key: {} for key in keys}
    for name in chain:
        if (asset_key := dg.AssetKey(name)) in GATED:
            for key, state in check_states(instance, success_rate_key(asset_key), keys).items():
                states[key][name] = state
    return states


def outcome(key: str, stages: dict[str, StageOutcome]) -> Outcome:
    """The document's outcome: ok only if every stage is; else its first failure (a
    stage that failed outright before a gate that failed, as that is what held it back)."""
    if all(s.state == "ok" for s in stages.values()):
        return Outcome(key, "ok", {}, stages)
    first = next((s for s in stages.values() if s.state == "failed"), None) or next(
        (s for s in stages.values() if s.state == "gate_failed"), None)
    detail = {"error_class": first.error_class, "reason": first.reason} if first else {
        "error_class": ErrorClass.NOT_MATERIALIZED,
        "reason": "its run ended without materializing it"}
    return Outcome(key, "failed", detail, stages)
