"""scripts/neo4j.sh: safe to run twice, loopback only, a free port when its own is taken,
a stale pid file ignored, and stop really stops."""

import os
import socket
import subprocess
from pathlib import Path

from tests.graph.conftest import NEO4J_SCRIPT

DEFAULT_DIR = Path(os.environ.get("DOCGRAPH_NEO4J_DIR", "/tmp/docgraph-neo4j"))


def script(command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([NEO4J_SCRIPT, command], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on `port`, from /proc/net/tcp{,6} (hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::ffff:127.0.0.1


def test_start_twice_reuses_the_running_server(neo4j_settings):
    was_running = script("status").returncode == 0
    first = script("start")
    assert first.returncode == 0, first.stderr
    pid = (DEFAULT_DIR / "neo4j.pid").read_text()
    second = script("start")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert (DEFAULT_DIR / "neo4j.pid").read_text() == pid  # the same process
    status = script("status")
    assert (status.returncode, status.stdout) == (0, first.stdout)
    assert script("uri").stdout == first.stdout
    port = int(first.stdout.strip().rsplit(":", 1)[1])
    assert listening_addresses(port) and listening_addresses(port) <= LOOPBACK
    if not was_running:
        script("stop")


def test_a_taken_port_and_a_stale_pid_file(neo4j_settings, tmp_path: Path):
    """A second server in its own directory (sharing the fetched jars): its Bolt port is
    held by another listener and its pid file names a live process that is not Neo4j."""
    home = tmp_path / "neo4j"
    home.mkdir()
    (home / "lib").symlink_to(DEFAULT_DIR / "lib")
    (home / "neo4j.pid").write_text(f"{os.getpid()}\n")
    with socket.socket() as squatter, socket.socket() as probe:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        probe.bind(("127.0.0.1", 0))
        http = probe.getsockname()[1]
        probe.close()
        env = {"DOCGRAPH_NEO4J_DIR": str(home), "DOCGRAPH_NEO4J_PORT": str(taken),
               "DOCGRAPH_NEO4J_HTTP_PORT": str(http), "DOCGRAPH_NEO4J_HEAP": "512m"}
        assert script("status", **env).returncode == 1  # the stale pid is not a server
        started = script("start", **env)
        try:
            assert started.returncode == 0, started.stderr
            port = int(started.stdout.strip().rsplit(":", 1)[1])
            assert port > taken
            for bound in (port, http):
                assert listening_addresses(bound) and listening_addresses(bound) <= LOOPBACK
            assert script("start", **env).stdout == started.stdout
            assert script("status", **env).stdout == started.stdout
        finally:
            stopped = script("stop", **env)
        assert stopped.returncode == 0, stopped.stderr
        assert script("status", **env).returncode == 1
        assert not listening_addresses(port) and not listening_addresses(http)
