"""A helper process of the CLI's: started with a job, it answers line by line.

`docgraph materialize` hands work to helper processes (pipeline_defs/ingest_ahead.py,
pipeline_defs/chain_processes.py) rather than threads: Dagster's in-process runs are not
safe side by side in one process (each redirects the process's output to its compute log
and re-configures logging; two at once deadlocked on the logging lock).

A helper is `command + [FD]`: it reads its job as JSON from stdin (`read_job`, which also
makes it end with its parent: SIGTERM when the parent dies, even by SIGKILL, through
Linux's parent-death signal) and writes its answers, one line each, to the pipe FD.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg

from pipeline_defs.run_recovery import recover

STOP_SECONDS = 10.0  # a helper's run_launch stops within STOP_GRACE_SECONDS (7 s)
_PR_SET_PDEATHSIG = 1
_PROJECT = Path(__file__).resolve().parents[1]


class HelperProcess:
    """The process, its job sent, and the lines it answers."""

    def __init__(self, command: list[str], job: dict, env: dict[str, str] | None = None):
        read, write = os.pipe()
        path = os.pathsep.join(filter(None, [str(_PROJECT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [*command, str(write)], stdin=subprocess.PIPE, pass_fds=(write,),
            env={**os.environ, **(env or {}), "PYTHONPATH": path}, text=True)
        os.close(write)
        self._answers = os.fdopen(read)
        text = json.dumps({**job, "parent": os.getpid()})
        # in a thread: a big job fills the pipe before the helper has imported Dagster
        threading.Thread(target=self._send, args=(text,), daemon=True).start()

    def _send(self, text: str) -> None:
        with self._process.stdin as stdin:
            stdin.write(text)

    def readline(self) -> str:
        """The helper's next answer; "" once it has ended."""
        return self._answers.readline().strip()

    def exit_code(self) -> int:
        """Once it has closed its pipe: how it ended (-9 if it had to be killed)."""
        try:
            return self._process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()

    def say_gone(self, instance: dg.DagsterInstance, actor: str, name: str, then: str
                 ) -> None:
        """Once its pipe closed without an answer: say so (`name` ended, its exit code,
        `then`) and mark the runs it left behind ended (run_recovery)."""
        print(f"docgraph: {name} ended (exit code {self.exit_code()}){then}", flush=True)
        if line := recover(instance, actor).line():
            print(line, flush=True)

    def terminate(self) -> None:
        """Ask the helper to stop (it cancels a run it has going)."""
        if self._process.poll() is None:
            self._process.terminate()

    def close(self) -> None:
        """Stop the helper and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._answers.close()


def read_job() -> dict:
    """In the helper: its job, once it is sure to end with its parent."""
    job = json.loads(sys.stdin.read())
    die_with_parent(job["parent"])
    return job


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when the parent dies, even by SIGKILL (Linux); elsewhere it
    lives until its current run ends and its next write fails."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call above
        sys.exit(1)
