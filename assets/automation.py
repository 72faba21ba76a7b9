"""How a document moves from one step to the next across runs: Declarative Automation.

Each downstream asset of the chain carries `chained()`. The automation sensor (on by
default: pipeline_defs/definitions.py) requests a document's partition when its inputs
were updated, or when it is missing (so partitions missed while the sensor was off are
caught up), once every upstream blocking check passed for that partition - a document
whose gate failed is held back here, by Dagster, and shows as not requested. A partition
whose last run failed is left to the daily sweep (pipeline_defs/schedules.py) rather than
retried on every tick.
"""

import dagster as dg


def chained() -> dg.AutomationCondition:
    return (
        dg.AutomationCondition.eager().replace("newly_missing", dg.AutomationCondition.missing())
        & ~dg.AutomationCondition.execution_failed()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    )
