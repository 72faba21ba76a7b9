"""The simulator in its own process on 127.0.0.1, for the benchmarks: started on a free
port, waited for, asked for its stats and its CPU time, stopped by its pid.

A process of its own, not SimulatorServer's thread: on a 2-core machine a simulator in
the client's process would share its GIL and be measured as the client.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class SimulatorProcess:
    def __init__(self, config: dict | None = None, start_seconds: float = 30):
        self.config = config or {}
        self.start_seconds = start_seconds
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "SimulatorProcess":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "simulator.server", "--port", str(self.port),
             "--config", json.dumps(self.config)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_seconds
        while True:
            try:
                self.call("/sim/stats")
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def call(self, path: str, payload: dict | None = None) -> dict:
        """GET `path`, or POST `payload` to it."""
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)


def process_cpu_seconds(pid: int) -> float:
    """A local process's user + system time so far (/proc/<pid>/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
