"""The README's entry points, run as a user runs them: subprocesses on a fresh home."""

import os
import shutil
import signal
import subprocess
import sys

from pipeline_defs import cli
from tests.conftest import REPO

BIN = os.path.dirname(sys.executable)


def _run(args, home, **kwargs):
    env = dict(os.environ, DAGSTER_HOME=str(home), DOCGRAPH_HOME=str(home / "docgraph"))
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, **kwargs)


def test_definitions_validate(tmp_path):
    out = _run([f"{BIN}/dagster", "definitions", "validate", "-w", "workspace.yaml"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "All code locations passed validation" in out.stderr + out.stdout


def test_demo_twice_then_list(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "one.md").write_text("# One\n\nElena Petrova announced Smart Reconciliation.")
    (docs / "two.txt").write_text("Tomás Alvarez reviewed webhook signatures.")
    (docs / "empty.txt").write_text("")

    first = _run([f"{BIN}/docgraph", "demo", str(docs)], home)
    assert first.returncode == 1, first.stderr  # one bad document: reported, not hidden
    assert "3 documents: 2 materialized through every stage, 0 up to date, 1 failed" \
        in first.stdout
    assert "FAILED     empty: " in first.stdout
    assert "empty.txt: the file is empty" in first.stdout

    (docs / "empty.txt").unlink()
    second = _run([sys.executable, "-m", "pipeline_defs.cli", "demo", str(docs)], home)
    assert second.returncode == 0, second.stderr
    assert "0 materialized through every stage, 2 up to date, 0 failed" in second.stdout

    listing = _run([f"{BIN}/docgraph", "list"], home)
    assert listing.returncode == 0
    assert listing.stdout.count("1 chunks") == 2


def test_calling_the_cli_in_process_leaves_the_callers_signal_handling_alone(instance):
    """main() sets SIGPIPE to its default (and SIGINT/SIGTERM to stop runs) for the command
    line; left set in a caller's process, a write to a closed pipe would kill the caller
    (it killed pytest once, with exit 141)."""
    watched = (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in watched}
    assert cli.main(["list"]) == 0
    assert {sig: signal.getsignal(sig) for sig in watched} == before
