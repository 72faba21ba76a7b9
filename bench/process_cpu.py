"""CPU seconds by role over a benchmark: which processes of the topology the cores went to.

A thread samples every process's /proc/<pid>/stat once a second and keeps each pid's last
user + system time under the role its command line names (the daemon, run processes, the
Celery workers, PostgreSQL, ...). A process that lived less than one interval is missed,
so the totals are a lower bound; on a 2-core machine they say where the 2 × seconds went.
"""

import threading
from pathlib import Path

from bench.simulator_process import process_cpu_seconds

ROLES = (  # the first match of the command line wins
    ("run processes", "multiprocessing.spawn"),  # code servers start runs this way
    ("code servers", "api grpc"),
    ("daemon", "dagster-daemon"),
    ("webserver", "dagster-webserver"),
    ("celery workers", "celery"),
    ("simulator", "simulator.server"),
    ("neo4j", "org.neo4j"),
    ("postgres", "postgres"),
    ("redis", "redis-server"),
)


def role_of(command_line: str) -> str | None:
    return next((role for role, marker in ROLES if marker in command_line), None)


class ProcessCpu:
    """`with ProcessCpu() as cpu: ...; cpu.by_role()` -> {role: CPU seconds in the block}."""

    def __init__(self, interval_seconds: float = 1.0):
        self.interval_seconds = interval_seconds
        self.first: dict[int, float] = {}  # CPU a process had when first seen (pre-existing)
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "ProcessCpu":
        self._take(initial=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._take()

    def by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, (role, seconds) in self.last.items():
            spent = seconds - self.first.get(pid, 0.0)
            totals[role] = round(totals.get(role, 0.0) + spent, 1)
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def _sample(self) -> None:
        while not self.stop.wait(self.interval_seconds):
            self._take()

    def _take(self, initial: bool = False) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if pid not in self.last:
                    command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace")
                    role = role_of(command_line)
                    if role is None:
                        continue
                else:
                    role = self.last[pid][0]
                seconds = process_cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
                continue
            if initial:
                self.first[pid] = seconds
            self.last[pid] = (role, seconds)
