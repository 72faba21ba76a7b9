"""scripts/neo4j.sh: safe to run twice, loopback only, a free port when its own is taken
(even when it is taken between the check and the bind), a stale pid file ignored, and
stop really stops."""

import os
import random
import socket
import subprocess
from pathlib import Path

from tests.conftest import NEO4J_SCRIPT

DEFAULT_DIR = Path(os.environ.get("DOCGRAPH_NEO4J_DIR", "/tmp/docgraph-neo4j"))
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::ffff:127.0.0.1


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


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports below the ephemeral range (32768+), where
    outgoing connections cannot take one between our check and the server's bind."""
    rng = random.Random()
    while True:
        first = rng.randrange(20_000, 32_000)
        probes = []
        try:
            for port in range(first, first + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()


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


def test_taken_ports_and_a_stale_pid_file(neo4j_settings, tmp_path: Path):
    """A second server in its own directory (sharing the fetched jars). Its Bolt port is
    held by a listener (the script sees it and moves on); the next one is bound without
    listening, so it looks free but Neo4j cannot bind it (the race of a port taken after
    the check): the script must retry on the one after. Its pid file names a live process
    that is not Neo4j."""
    home = tmp_path / "neo4j"
    home.mkdir()
    (home / "lib").symlink_to(DEFAULT_DIR / "lib")
    (home / "neo4j.pid").write_text(f"{os.getpid()}\n")
    bolt = free_ports(3)
    http = free_ports(2)  # the retry moves HTTP on too
    while abs(http - bolt) < 3:
        http = free_ports(2)
    with socket.socket() as listener, socket.socket() as binder:
        listener.bind(("127.0.0.1", bolt))
        listener.listen()
        binder.bind(("127.0.0.1", bolt + 1))
        env = {"DOCGRAPH_NEO4J_DIR": str(home), "DOCGRAPH_NEO4J_PORT": str(bolt),
               "DOCGRAPH_NEO4J_HTTP_PORT": str(http), "DOCGRAPH_NEO4J_HEAP": "512m"}
        assert script("status", **env).returncode == 1  # the stale pid is not a server
        started = script("start", **env)
        try:
            assert started.returncode == 0, started.stderr
            assert started.stdout == f"bolt://127.0.0.1:{bolt + 2}\n"
            assert "was taken while Neo4j started" in started.stderr
            for port in (bolt + 2, http + 1):  # http moved on with bolt's retry
                assert listening_addresses(port) and listening_addresses(port) <= LOOPBACK
            assert script("start", **env).stdout == started.stdout
            assert script("status", **env).stdout == started.stdout
        finally:
            stopped = script("stop", **env)
        assert stopped.returncode == 0, stopped.stderr
        assert script("status", **env).returncode == 1
        assert not listening_addresses(bolt + 2) and not listening_addresses(http + 1)
