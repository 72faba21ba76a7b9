"""Who runs a run: the tags every in-process run carries, and whether that process lives.

A pid alone is not an identity: pids are reused, and after a reboot a new process may hold
a dead run's pid. So a run records its host, its pid, the pid's start time (field 22 of
/proc/<pid>/stat, in clock ticks since boot), the boot id and the pid namespace: the owner
is alive only if this host has booted once since, and the pid exists and started at that
very tick; an owner in another pid namespace (another container) is not ours to judge.

Linux only through /proc (what the project's machines run; no psutil dependency for two
numbers). Where /proc is missing the start time is unknown and only the pid is checked.
"""

import os
import socket
from dataclasses import dataclass
from pathlib import Path

HOST_TAG = "docgraph/host"
PID_TAG = "docgraph/pid"
PID_STARTED_TAG = "docgraph/pid_started"
BOOT_TAG = "docgraph/boot_id"
PID_NS_TAG = "docgraph/pid_ns"  # containers on one host name and kernel have their own pids

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host() -> str:
    return socket.gethostname()


def boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_started(pid: int) -> str | None:
    """The pid's start time in clock ticks since boot, or None if there is no such process
    (or no /proc to ask)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_tags() -> dict[str, str]:
    """The tags naming this process as the owner of the runs it launches."""
    pid = os.getpid()
    tags = {HOST_TAG: host(), PID_TAG: str(pid)}
    if started := process_started(pid):
        tags[PID_STARTED_TAG] = started
    if boot := boot_id():
        tags[BOOT_TAG] = boot
    if namespace := pid_namespace():
        tags[PID_NS_TAG] = namespace
    return tags


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: str | None
    boot: str | None
    namespace: str | None = None

    @classmethod
    def of(cls, tags: dict[str, str]) -> "Owner | None":
        """The owner a run's tags name, or None for runs docgraph did not launch."""
        try:
            return cls(tags[HOST_TAG], int(tags[PID_TAG]), tags.get(PID_STARTED_TAG),
                       tags.get(BOOT_TAG), tags.get(PID_NS_TAG))
        except (KeyError, ValueError):
            return None

    def here(self) -> bool:
        """On this host and in this pid namespace: only then can its pid be looked up (a
        container with the host's name but its own pids is another host to us)."""
        return self.host == host() and (self.namespace is None or pid_namespace() is None
                                        or self.namespace == pid_namespace())

    def alive(self) -> bool:
        """Whether the owning process still runs (meaningful only for an owner on this host):
        not after a reboot, not if the pid is gone or now belongs to a younger process."""
        if self.boot and boot_id() and self.boot != boot_id():
            return False
        started = process_started(self.pid)
        if started is None:
            if Path("/proc/self/stat").exists():
                return False  # /proc works, and has no such process
            return _pid_exists(self.pid)
        return self.started is None or started == self.started

    def __str__(self) -> str:
        return f"process {self.pid} on host {self.host}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
