"""The sensors, on by default: `inbox_sensor` (the inbox folder is the queue of new and
changed documents: it requests their ingestion; it also ends the runs of a killed
`docgraph` command, pipeline_defs/run_recovery.py), the automation sensor (it takes each
document on from step to step: assets/automation.py) and `batch_sensor`
(pipeline_defs/batch_sensor.py)."""

import json
import time
import warnings
from pathlib import Path

import dagster as dg

from assets.batch import data_version, partition_batches
from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
from assets.keys import DOCUMENTS_PER_RUN
from assets.partitions import documents_partitions
from pipeline_defs.graph_removal import in_graph, remove_from_graph
from pipeline_defs.intervals import sensor_interval
from pipeline_defs.jobs import ingestion_job
from pipeline_defs.run_recovery import recover
from resources.neo4j.resource import Neo4jResource
from resources.neo4j.settings import CONNECTION_ERRORS
from resources.registry import DocumentRegistry, supported_files

# A file modified this recently may still be being written: wait for the next tick.
SETTLE_SECONDS = 2.0

# The automation sensor evaluates in the code server (below): a beta parameter of
# Dagster's, warned about on every load.
warnings.filterwarnings("ignore", message="Parameter `use_user_code_server`",
                        category=dg.BetaWarning)

# Every asset with an automation condition; requests are batched into runs by the assets'
# backfill policies (DOCUMENTS_PER_RUN documents per run).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval(30),
    description="Takes each document from step to step once its inputs are in and their "
    "gates passed; catches up partitions missed while it was off.",
    # evaluated in the code server: WaitingForBatch reads the batch records
    use_user_code_server=True,
)


@dg.sensor(
    job=ingestion_job,
    minimum_interval_seconds=sensor_interval(30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers new files in the inbox as `documents` partitions, requests a run "
    "when a file's content changes, and removes the partitions of deleted files.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, registry: DocumentRegistry,
                 neo4j_db: Neo4jResource):
    # A `docgraph` command killed mid-run leaves its run STARTED: the daemon's run
    # monitoring cannot see it (no run launcher started it), and it holds the run queue
    # and its pool slots until someone ends it.
    if (found := recover(context.instance, "inbox_sensor")).changed:
        context.log.warning(found.line())  # the daemon's own runs holding slots: no news
    inbox = registry.inbox_path()
    if not inbox.is_dir():
        return dg.SkipReason(f"inbox {inbox} does not exist; create it and drop documents in")

    # cursor: {partition key: [sha256 prefix last requested, revision]}, committed with the
    # tick. The revision counts changes, so a file edited back to an earlier content gets a
    # new run key: Dagster skips a run key it has seen before.
    requested: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    files = [p for p in supported_files(inbox) if _settled(p, now)]
    current = registry.register(files)
    ordered = context.instance.get_dynamic_partitions(documents_partitions.name)
    partitions = set(ordered)

    new_keys = [d.key for d in current if d.key not in partitions]
    changed = {}
    for doc in current:
        version, revision = requested.get(doc.key, [None, 0])
        # a partition removed meanwhile (`docgraph remove`) and back again needs a run too
        if version != doc.sha256[:16] or doc.key not in partitions:
            requested[doc.key] = [doc.sha256[:16], revision + 1]
            changed[doc.key] = f"{revision + 1}:{doc.sha256[:16]}"
    # New partitions are appended in this order, so new files batch into few runs.
    run_requests = [
        _run_request(keys, changed)
        for keys in partition_batches(list(ordered) + new_keys, list(changed), DOCUMENTS_PER_RUN)
    ]

    present = {d.key for d in current}
    gone = [
        d for d in registry.entries()
        if d.path.is_relative_to(inbox) and d.key not in present and not d.path.exists()
    ]
    kept = _remove_from_graph(context, neo4j_db, [d.key for d in gone])
    gone = [d for d in gone if d.key not in kept]
    for doc in gone:
        context.log.info(f"{doc.path} was deleted: removing partition {doc.key}")
        requested.pop(doc.key, None)
    registry.remove(d.key for d in gone)
    deleted = [d.key for d in gone if d.key in partitions]

    partition_requests = []
    if new_keys:
        partition_requests.append(documents_partitions.build_add_request(new_keys))
    if deleted:
        partition_requests.append(documents_partitions.build_delete_request(deleted))
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        cursor=json.dumps(requested, sort_keys=True),
    )


def _remove_from_graph(context: dg.SensorEvaluationContext, neo4j_db: Neo4jResource,
                       keys: list[str]) -> set[str]:
    """Remove deleted documents' contribution from the graph, if it is there; the keys it
    could not remove (server down) are kept, so the next tick tries again rather than leave
    their facts in the graph for good."""
    written = [k for k in keys if in_graph(context.instance, k)]
    if not written:
        return set()
    try:
        neo4j_db.driver.verify_connectivity()  # fails at once; writes would retry for 30 s
        for key in remove_from_graph(context.instance, neo4j_db.writer(), written):
            context.log.info(f"removed document {key} from the graph")
    except CONNECTION_ERRORS as exc:
        context.log.warning(f"could not remove {len(written)} deleted document(s) from the "
                            f"graph at {neo4j_db.settings().uri} ({exc}); keeping their "
                            "partitions until the next tick")
        return {k for k in written if in_graph(context.instance, k)}
    return set()


def _run_request(keys: list[str], versions: dict[str, str]) -> dg.RunRequest:
    # The run key names the exact content: the same files never run twice, an edit does.
    if len(keys) == 1:
        return dg.RunRequest(run_key=f"{keys[0]}:{versions[keys[0]]}", partition_key=keys[0])
    run_key = "ingest:" + data_version(*(f"{k}={versions[k]}" for k in keys))
    return dg.RunRequest(
        run_key=run_key, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    )


def _settled(path: Path, now: float) -> bool:
    try:
        return now - path.stat().st_mtime >= SETTLE_SECONDS
    except FileNotFoundError:  # deleted since it was listed: the next tick sees that
        return False
