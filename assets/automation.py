"""How a document moves from one step to the next across runs: Declarative Automation.

Each downstream asset of the chain carries `chained()`. The automation sensor (on by
default: pipeline_defs/sensors.py) requests a document's partition when its inputs
were updated, or when it is missing (so partitions missed while the sensor was off are
caught up), once every upstream blocking check passed for that partition - a document
whose gate failed is held back here, by Dagster, and shows as not requested. A partition
whose last run failed is left to the daily sweep (pipeline_defs/schedules.py) rather than
retried on every tick, and one whose calls are in an open batch (the batch route:
assets/batch_route.py) to batch_sensor: its run ended without recording it, and it is
still missing, which would otherwise request it again on every tick. That condition reads
the batch records (`WaitingForBatch`), so the automation sensor evaluates in the code
server (`use_user_code_server`: pipeline_defs/sensors.py).
"""

import datetime
import functools

import dagster as dg

from resources.llm.batch_store import BatchStore
from resources.llm.settings import LLMSettings


class WaitingForBatch(dg.AutomationCondition):
    """The partitions of this asset whose calls are in a batch not collected yet."""

    @property
    def name(self) -> str:
        return "waiting_for_batch"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        waiting = waiting_documents(context.evaluation_time).get(context.key.to_user_string())
        if not waiting or not context.candidate_subset.is_partitioned:
            return dg.AutomationResult(context, true_subset=context.get_empty_subset())
        return dg.AutomationResult(context, true_subset=context.candidate_subset
                                   .compute_intersection_with_partition_keys(waiting))


@functools.lru_cache(maxsize=1)
def waiting_documents(evaluation_time: datetime.datetime) -> dict[str, set[str]]:
    """{stage: documents in its open batches}, read once per tick (each asset's condition
    asks for its own stage)."""
    location = LLMSettings.from_env().resolved_cache_path()
    waiting: dict[str, set[str]] = {}
    for submission in BatchStore(location).open_submissions() if location else ():
        waiting.setdefault(submission.stage, set()).update(submission.partitions)
    return waiting


def chained(*, with_inputs: bool = False) -> dg.AutomationCondition:
    """`with_inputs`: the asset may be requested on the same tick as its inputs - for
    document_themes, which the enrichment step computes in the same stream as its inputs
    and gates itself (assets/enrichment.py). Otherwise it waits for a tick on which its
    inputs' blocking checks have passed."""
    gates = dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(),
                                                    blocking_only=True)
    if with_inputs:
        gates = dg.AutomationCondition.will_be_requested() | gates
    return (
        dg.AutomationCondition.eager().replace("newly_missing", dg.AutomationCondition.missing())
        & ~dg.AutomationCondition.execution_failed()
        & ~WaitingForBatch()
        & dg.AutomationCondition.all_deps_match(gates).with_label("inputs_passed_their_gates")
    )
