"""The schedules' decisions, evaluated as the daemon evaluates them (build_schedule_context
with the project's resources): what they request and what they skip."""

import dagster as dg

from assets.keys import CHUNK_METADATA, DOCUMENT_THEMES, GRAPH_EXTRACTION, NEO4J_GRAPH
from pipeline_defs import cli
from pipeline_defs.definitions import defs
from pipeline_defs.schedules import catalog_schedule, sweep_schedule
from resources.neo4j.settings import GRAPH_VARIABLE
from tests.conftest import SAMPLE_DIR
from tests.helpers import run_pipeline


def _evaluate(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance):
    with dg.build_schedule_context(instance=instance, resources={
            "store": defs.resources["store"], "registry": defs.resources["registry"]}) as ctx:
        return list(schedule.evaluate_tick(ctx).run_requests or [])


def test_the_catalog_schedule_rebuilds_only_when_themes_changed(instance):
    [doc] = cli.add(instance, [SAMPLE_DIR / "support-email-okta-sso.txt"])
    assert _evaluate(catalog_schedule, instance)  # never built
    assert [o.status for o in cli.materialize(instance, [doc.key])] == ["ok"]
    assert _evaluate(catalog_schedule, instance) == []  # built after the themes
    assert run_pipeline(instance, [doc.key], ["document_themes"]).success
    assert len(_evaluate(catalog_schedule, instance)) == 1


def test_the_sweep_requests_the_first_step_a_document_needs(instance, monkeypatch):
    monkeypatch.setenv(GRAPH_VARIABLE, "off")  # the enrichment's staleness alone
    docs = cli.add(instance, [SAMPLE_DIR / "support-email-okta-sso.txt",
                              SAMPLE_DIR / "support-chat-double-charge.txt"])
    keys = [d.key for d in docs]
    assert {o.status for o in cli.materialize(instance, keys)} == {"ok"}
    assert _evaluate(sweep_schedule, instance) == []  # everything current
    # one document is chunked again: its enrichment is stale, its ingestion is current
    assert run_pipeline(instance, [keys[0]], ["chunks"],
                        ingestion={"max_tokens": 64, "overlap_tokens": 0}).success
    [request] = _evaluate(sweep_schedule, instance)
    assert set(request.asset_selection) >= {CHUNK_METADATA, GRAPH_EXTRACTION, DOCUMENT_THEMES}
    assert request.tags["dagster/asset_partition_range_start"] == keys[0]
    assert request.tags["dagster/asset_partition_range_end"] == keys[0]


def test_the_sweep_writes_the_graph_unless_it_is_off(instance, monkeypatch):
    """The CLI without NEO4J_URI leaves the graph out; the daemon's side writes it (as its
    automation does) unless DOCGRAPH_GRAPH=off turns the graph off for the deployment."""
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR / "support-email-okta-sso.txt"])]
    assert [o.status for o in cli.materialize(instance, keys)] == ["ok"]
    [request] = _evaluate(sweep_schedule, instance)
    assert list(request.asset_selection) == [NEO4J_GRAPH]
    assert request.tags["dagster/asset_partition_range_start"] == keys[0]
    monkeypatch.setenv(GRAPH_VARIABLE, "off")
    assert _evaluate(sweep_schedule, instance) == []
