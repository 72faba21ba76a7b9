"""DOCGRAPH_GRAPH: one switch for whether a deployment writes the Neo4j graph, read the
same way by the CLI, the daily sweep (tests/test_schedules.py) and the graph's automation
condition, which is fixed where the definitions load (so checked in a fresh process)."""

import json
import subprocess
import sys

import pytest

from pipeline_defs import cli
from pipeline_defs.report import print_summary
from resources.neo4j.settings import GRAPH_VARIABLE, graph_written
from tests.conftest import REPO, SAMPLE_DIR


@pytest.mark.parametrize(("setting", "uri", "by_cli", "by_daemon"), [
    (None, None, False, True),                # the defaults: `make dev` writes the graph
    (None, "bolt://127.0.0.1:17687", True, True),
    ("off", "bolt://127.0.0.1:17687", False, False),
    ("OFF", None, False, False),
    ("on", None, True, True),
])
def test_who_writes_the_graph(monkeypatch, setting, uri, by_cli, by_daemon):
    for variable, value in ((GRAPH_VARIABLE, setting), ("NEO4J_URI", uri)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert (graph_written(by_daemon=False), graph_written(by_daemon=True)) == (by_cli, by_daemon)


def test_a_setting_other_than_on_or_off_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(GRAPH_VARIABLE, "no")
    with pytest.raises(ValueError, match="DOCGRAPH_GRAPH='no': expected on or off"):
        graph_written(by_daemon=True)


AUTOMATION = """
import json
import dagster as dg
from pipeline_defs.definitions import defs
graph = defs.resolve_asset_graph()
print(json.dumps({key.to_user_string(): graph.get(key).automation_condition is not None
                  for key in graph.materializable_asset_keys}))
"""


@pytest.mark.parametrize("setting", ["", "off"])
def test_automation_asks_for_the_graph_only_where_it_is_written(setting):
    env = {"PATH": "/usr/bin:/bin", GRAPH_VARIABLE: setting}
    loaded = subprocess.run([sys.executable, "-c", AUTOMATION], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    automated = {key for key, on in json.loads(loaded.stdout.strip().splitlines()[-1]).items()
                 if on}
    # ingestion is started by the inbox sensor, backfills and the sweep, never by automation
    assert automated == {"chunk_metadata", "chunk_embeddings", "graph_extraction",
                         "document_themes", "theme_catalog"} | (
        set() if setting == "off" else {"neo4j_graph"})


def test_off_keeps_the_cli_away_from_a_graph_it_was_pointed_at(instance, monkeypatch, capsys):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv(GRAPH_VARIABLE, "off")
    keys = [d.key for d in cli.add(instance, [SAMPLE_DIR / "support-email-okta-sso.txt"])]
    outcomes = cli.materialize(instance, keys)
    assert [o.status for o in outcomes] == ["ok"]
    assert "neo4j_graph" not in outcomes[0].stages
    print_summary(instance, outcomes)
    assert "graph: not written (DOCGRAPH_GRAPH=off)" in capsys.readouterr().out
