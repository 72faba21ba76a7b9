"""The real `dagster-daemon` and `dagster-webserver`, as subprocesses of a test.

    home = sqlite_home(tmp_path / "dagster-home")      # or pg_instance.root_directory
    with dagster_servers(home, webserver=True) as servers:
        (servers.inbox / "a.md").write_text(...)
        servers.wait_for(lambda: ..., "the partition to appear", timeout=60)
        servers.graphql("{ version }")

Both processes get the test's environment (DOCGRAPH_HOME, NEO4J_URI, OPENAI_* as the
fixtures left them) plus DAGSTER_HOME, a DOCGRAPH_ROOT of their own (so the inbox is
`<root>/data/inbox`, never the checkout's) and short sensor intervals. They listen on
127.0.0.1 only, are started in their own process group and stopped by that id (SIGTERM,
then SIGKILL), so the code servers and runs they spawn go with them. Their output is kept
in `<home>/server-logs/` and its tail is part of every timeout's message.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dagster as dg
import requests

from pipeline_defs.intervals import INTERVAL_VARIABLE
from tests.conftest import REPO, instance_at

BIN = Path(sys.executable).parent
WORKSPACE = REPO / "workspace.yaml"
# The daemon's loops run every 5 s at best: a shorter sensor interval gains nothing.
SENSOR_INTERVAL_SECONDS = 5
STOP_TIMEOUT_SECONDS = 20
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sqlite_home(home: Path) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml as is (SQLite storage): `make dev`'s."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with status {self.proc.returncode}:\n"
                                 f"{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if it is not gone in time; then SIGKILL to
        what the group may have left behind (a run's process outlives a killed leader)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _start(name: str, args: list[str], env: Mapping[str, str], logs: Path) -> ServerProcess:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=REPO, env=dict(env),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return ServerProcess(name, proc, log)


@dataclass
class DagsterServers:
    home: Path
    root: Path
    env: dict[str, str]
    instance: dg.DagsterInstance
    processes: list[ServerProcess] = field(default_factory=list)
    url: str | None = None  # the webserver's, when there is one

    @property
    def inbox(self) -> Path:
        return self.root / "data" / "inbox"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST /graphql; the `data`, or an AssertionError with the errors."""
        assert self.url, "dagster_servers(..., webserver=True) for GraphQL"
        response = requests.post(f"{self.url}/graphql", timeout=60,
                                 json={"query": query, "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def wait_for(self, condition: Callable[[], T], what: str, timeout: float = 120,
                 interval: float = 1.0) -> T:
        """Poll `condition` until it returns something truthy, and return that. Fails at once
        if a server died, and after `timeout` s with the runs, ticks and logs so far."""
        deadline = time.monotonic() + timeout
        while True:
            for process in self.processes:
                process.check_alive()
            if result := condition():
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                     f"{self.diagnostics()}")
            time.sleep(interval)

    def diagnostics(self) -> str:
        parts = ["runs (newest first):", *self.run_lines(), "sensor ticks (newest first):",
                 *self.tick_lines()]
        for process in self.processes:
            parts += [f"--- {process.name} log (tail) ---", process.tail()]
        return "\n".join(parts)

    def run_lines(self, limit: int = 10) -> list[str]:
        lines = []
        for record in self.instance.get_run_records(limit=limit):
            run = record.dagster_run
            tags = {k.removeprefix("dagster/"): v for k, v in run.tags.items()
                    if k.startswith(("dagster/partition", "dagster/asset_partition"))
                    or k in ("dagster/sensor_name", "dagster/backfill")}
            took = (f" took {record.end_time - record.start_time:.0f} s"
                    if record.start_time and record.end_time else "")
            line = (f"  {_clock(record.create_timestamp.timestamp())} {run.run_id[:8]} "
                    f"{run.job_name} {run.status.value}{took} {tags}")
            if run.status == dg.DagsterRunStatus.FAILURE:
                line += "\n    " + "\n    ".join(self._failures(run.run_id))
            lines.append(line)
        return lines or ["  (none)"]

    def _failures(self, run_id: str) -> list[str]:
        records = self.instance.all_logs(run_id, of_type={
            dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE})
        return [(r.dagster_event.message or "")[:500] for r in records if r.dagster_event]

    def tick_lines(self, limit: int = 4) -> list[str]:
        ticks = [(tick, state.instigator_name) for state in self.instance.all_instigator_state()
                 for tick in self.instance.get_ticks(state.instigator_origin_id,
                                                     state.selector_id, limit=limit)]
        lines = []
        for tick, name in sorted(ticks, key=lambda t: -t[0].timestamp):
            reason = tick.skip_reason or (tick.error.message[:300] if tick.error else "")
            lines.append(f"  {_clock(tick.timestamp)} {name} {tick.status.value} "
                         f"runs={len(tick.run_ids)} {reason}".rstrip())
        return lines or ["  (none)"]

    def ticks(self, sensor: str) -> list:
        """The sensor's ticks recorded by the daemon, newest first."""
        return [tick for state in self.instance.all_instigator_state()
                if state.instigator_name == sensor
                for tick in self.instance.get_ticks(state.instigator_origin_id,
                                                    state.selector_id)]


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def _daemons_beating(instance: dg.DagsterInstance, since: float) -> bool:
    beats = instance.get_daemon_heartbeats()
    return all(t in beats and beats[t].timestamp >= since
               for t in instance.get_required_daemon_types())


def _webserver_up(url: str) -> bool:
    try:
        return requests.get(f"{url}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


@contextlib.contextmanager
def dagster_servers(home: Path | str, *, daemon: bool = True, webserver: bool = False,
                    root: Path | None = None, env: Mapping[str, str] | None = None,
                    workspace: Path = WORKSPACE, startup_timeout: float = 120
                    ) -> Iterator[DagsterServers]:
    """Start the daemon and/or the webserver on the instance in `home` (a folder with a
    dagster.yaml); ready when every daemon the instance needs has a heartbeat and the
    webserver answers /server_info. `root` (default `<home>/root`) is DOCGRAPH_ROOT; `env`
    is added to the test's environment and wins (e.g. a longer sensor interval)."""
    home = Path(home)
    root = root or home / "root"
    (root / "data" / "inbox").mkdir(parents=True, exist_ok=True)
    logs = home / "server-logs"  # not logs/: Dagster's telemetry folder, which it clears
    logs.mkdir(exist_ok=True)
    full_env = dict(os.environ, DAGSTER_HOME=str(home), DOCGRAPH_ROOT=str(root),
                    PYTHONUNBUFFERED="1", **{INTERVAL_VARIABLE: str(SENSOR_INTERVAL_SECONDS)})
    full_env.update(env or {})
    instance = instance_at(home)
    servers = DagsterServers(home, root, full_env, instance)
    try:
        started = time.time()
        if daemon:
            servers.processes.append(_start(
                "dagster-daemon", ["dagster-daemon", "run", "-w", str(workspace)],
                full_env, logs))
        if webserver:
            port = free_port()
            servers.url = f"http://127.0.0.1:{port}"
            servers.processes.append(_start(
                "dagster-webserver", ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port),
                                      "-w", str(workspace)], full_env, logs))
        if daemon:
            servers.wait_for(lambda: _daemons_beating(instance, started),
                             "every daemon's first heartbeat", startup_timeout)
        if webserver:
            servers.wait_for(lambda: _webserver_up(servers.url), "the webserver",
                             startup_timeout, interval=0.5)
        yield servers
    finally:
        for process in reversed(servers.processes):
            process.stop()
        instance.dispose()
