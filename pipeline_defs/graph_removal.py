"""Taking documents out of the Neo4j graph, and remembering that they are out.

Dagster cannot wipe one partition's history on SQL storage, so a removal is recorded as an
observation of `neo4j_graph` for the partition: a document is in the graph if its latest
materialization is newer than its latest removal. The CLI's up-to-date check uses that, so
a document removed and added again is written again.
"""

import dagster as dg

from assets.keys import NEO4J_GRAPH
from resources.neo4j.store import GraphWriter

REMOVED = "removed_from_graph"


def _latest(fetch, key: str):
    records = fetch(dg.AssetRecordsFilter(asset_key=NEO4J_GRAPH, asset_partitions=[key]),
                    limit=1).records
    return records[0] if records else None


def removed_since(instance: dg.DagsterInstance, key: str, storage_id: int) -> bool:
    """Whether `key` was removed from the graph after the event `storage_id`."""
    removed = _latest(instance.fetch_observations, key)
    return removed is not None and removed.storage_id > storage_id


def in_graph(instance: dg.DagsterInstance, key: str) -> bool:
    written = _latest(instance.fetch_materializations, key)
    return written is not None and not removed_since(instance, key, written.storage_id)


def remove_from_graph(instance: dg.DagsterInstance, writer: GraphWriter,
                      keys: list[str]) -> list[str]:
    """Delete the contribution of each of `keys` that is in the graph, and record it; the
    keys removed. The driver's errors propagate: nothing is recorded for a key not removed."""
    removed = []
    for key in keys:
        if in_graph(instance, key):
            writer.delete_document(key)
            instance.report_runless_asset_event(dg.AssetObservation(
                NEO4J_GRAPH, partition=key, metadata={REMOVED: True}))
            removed.append(key)
    return removed
