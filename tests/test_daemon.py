"""`make dev` with nothing toggled: the real daemon and webserver (tests/daemon.py).

Issue 10's acceptance: the automation sensor and the schedules run by default, and a file
dropped into the inbox reaches Neo4j and the theme catalog with no manual step.
Select with `-m daemon`.
"""

import os
import time

import dagster as dg
import pytest

from resources.registry import document_key
from tests.daemon import dagster_servers, sqlite_home

pytestmark = pytest.mark.daemon

SENSORS = {"inbox_sensor", "default_automation_condition_sensor"}
SCHEDULES = {"sweep_schedule", "catalog_schedule"}
INSTIGATORS_QUERY = """{ workspaceOrError { __typename ... on PythonError { message }
  ... on Workspace { locationEntries { name locationOrLoadError { __typename
    ... on PythonError { message }
    ... on RepositoryLocation { repositories { name
      sensors { name sensorType sensorState { status } }
      schedules { name scheduleState { status } } } } } } } } }"""
DOCUMENT = """# Payment retries

Priya Raman moved the payment retry queue to Kafka after the March incident.
Marcus Feld added an idempotency key to every charge, so a retried charge is charged once.
"""


def _instigators(servers) -> tuple[dict[str, str], dict[str, str]]:
    """{sensor: status}, {schedule: status} over every repository of the workspace."""
    workspace = servers.graphql(INSTIGATORS_QUERY)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    sensors, schedules = {}, {}
    for entry in workspace["locationEntries"]:
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", (entry["name"], location)
        for repo in location["repositories"]:
            sensors.update({s["name"]: s["sensorState"]["status"] for s in repo["sensors"]})
            schedules.update({s["name"]: s["scheduleState"]["status"]
                              for s in repo["schedules"]})
    return sensors, schedules


def test_every_sensor_and_schedule_runs_without_a_toggle(pg_instance):
    with dagster_servers(pg_instance.root_directory, daemon=False, webserver=True) as servers:
        sensors, schedules = _instigators(servers)
    assert sensors.keys() >= SENSORS, sensors
    assert schedules.keys() >= SCHEDULES, schedules
    not_running = {name: status for name, status in {**sensors, **schedules}.items()
                   if status != "RUNNING"}
    assert not_running == {}, f"sensors {sensors}, schedules {schedules}"
    # nobody toggled anything: the states are the definitions' defaults, none stored
    assert pg_instance.all_instigator_state() == []


def _latest(instance: dg.DagsterInstance, asset: str, partition: str | None = None):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                              asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0] if records else None


def _document_nodes(driver, key: str) -> int:
    records, _, _ = driver.execute_query(
        "MATCH (d:Document {key: $key}) RETURN count(d) AS n", key=key)
    return records[0]["n"]


def test_a_file_dropped_into_the_inbox_reaches_neo4j_and_the_catalog(tmp_path, chain_graph):
    """`make dev`'s instance (SQLite, the project's dagster.yaml), nothing toggled."""
    with dagster_servers(sqlite_home(tmp_path / "dagster-home")) as servers:
        instance = servers.instance
        # the daemon has loaded the code location and evaluated the inbox (still empty)
        servers.wait_for(lambda: servers.ticks("inbox_sensor"), "inbox_sensor's first tick",
                         timeout=90)
        dropped = servers.inbox / "payment-retries.md"
        dropped.write_text(DOCUMENT)
        settled = time.time() - 10  # as if written a while ago: the sensor waits 2 s
        os.utime(dropped, (settled, settled))
        key = document_key("data/inbox/payment-retries.md")

        servers.wait_for(lambda: key in instance.get_dynamic_partitions("documents"),
                         f"partition {key}", timeout=60)
        themes = servers.wait_for(lambda: _latest(instance, "document_themes", key),
                                  f"document_themes[{key}]", timeout=90)
        servers.wait_for(lambda: _latest(instance, "neo4j_graph", key),
                         f"neo4j_graph[{key}] (automation)", timeout=90)
        assert _document_nodes(chain_graph, key) == 1
        servers.wait_for(
            lambda: (c := _latest(instance, "theme_catalog")) and c.timestamp > themes.timestamp,
            "theme_catalog after the document's themes (automation)", timeout=60)
        assert servers.ticks("default_automation_condition_sensor"), servers.diagnostics()
        failed = [line for line in servers.run_lines() if " FAILURE " in line]
        assert failed == [], "\n".join(failed)
