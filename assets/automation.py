"""How a document moves from one step to the next across runs: Declarative Automation.

Each downstream asset of the chain carries `chained()`. The automation sensor (on by
default: pipeline_defs/sensors.py) requests a document's partition when its inputs
were updated, or when it is missing (so partitions missed while the sensor was off are
caught up), once every upstream blocking check passed for that partition - a document
whose gate failed is held back here, by Dagster, and shows as not requested. A partition
whose last run failed is left to the daily sweep (pipeline_defs/schedules.py) rather than
retried on every tick.
"""

import dagster as dg


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
        & dg.AutomationCondition.all_deps_match(gates).with_label("inputs_passed_their_gates")
    )
