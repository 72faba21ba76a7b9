"""Ingesting the next batches in a helper process while this one enriches.

`docgraph materialize` runs its batches' jobs one after another; ingestion (reading and
chunking, CPU only) of batch k+1 would leave the provider idle for seconds after
enrichment k. So when there are at least two batches, a helper process ingests batches
2..n in order, each as its own run (as the CLI's would be), while this process runs
ingestion 1 and the enrichment and graph runs; before batch k's enrichment this process
waits for the helper's ingestion run k. A second process, not a thread: Dagster's
in-process runs are not safe side by side in one process (each redirects the process's
output to its compute log and re-configures logging; two at once deadlocked on the
logging lock).

The helper is `python -m pipeline_defs.ingest_ahead FD` on the same instance (its
InstanceRef, read from stdin with the batches); it writes each run id to the pipe FD when
the run has ended. It launches its runs through `run_launch.launch`, so they carry its own
owner tags and stop cleanly on SIGINT/SIGTERM. It ends with its parent: SIGTERM when this
process closes it, and the kernel's parent-death signal (Linux prctl) if this process is
killed. If it dies, this process says so once and ingests the remaining batches itself.
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

STOP_SECONDS = 10.0  # the helper's run_launch stops within STOP_GRACE_SECONDS (7 s)
_PR_SET_PDEATHSIG = 1
_PROJECT = Path(__file__).resolve().parents[1]
HELPER = [sys.executable, "-m", "pipeline_defs.ingest_ahead"]  # + the pipe's fd


class IngestAhead:
    """The helper process, and the run ids it reports, batch by batch."""

    def __init__(self, instance: dg.DagsterInstance, batches: list[list[str]],
                 run_config: dict, actor: str):
        self._instance, self._actor = instance, actor
        read, write = os.pipe()
        path = os.pathsep.join(filter(None, [str(_PROJECT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [*HELPER, str(write)],
            stdin=subprocess.PIPE, pass_fds=(write,), env={**os.environ, "PYTHONPATH": path},
            text=True)
        os.close(write)
        self._runs = os.fdopen(read)
        job = json.dumps({"instance": dg.serialize_value(instance.get_ref()),
                          "batches": batches, "run_config": run_config, "actor": actor,
                          "parent": os.getpid()})
        # in a thread: a big job fills the pipe before the helper has imported Dagster
        threading.Thread(target=self._send, args=(job,), daemon=True).start()
        self._ended = False

    def _send(self, job: str) -> None:
        with self._process.stdin as stdin:
            stdin.write(job)

    def next_run_id(self) -> str | None:
        """The run id of the helper's next batch, once that run has ended; None if the
        helper is gone (said once; its dead run is marked ended): ingest it here."""
        if not self._ended and (line := self._runs.readline().strip()):
            return line
        if not self._ended:
            self._ended = True
            code = self._process.wait(STOP_SECONDS)
            print(f"docgraph: the ingest-ahead process ended (exit code {code}); ingesting "
                  "the remaining batches here", flush=True)
            if line := recover(self._instance, self._actor).line():
                print(line, flush=True)
        return None

    def close(self) -> None:
        """Stop the helper (it cancels a run it has going) and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._runs.close()


def _helper(fd: int) -> int:
    job = json.loads(sys.stdin.read())
    _die_with_parent(job["parent"])
    from pipeline_defs import run_launch  # imports Dagster and the definitions once
    from pipeline_defs.runs import launch_batch

    run_launch.install_stop_handlers()
    run_launch.settings.actor = f"{job['actor']} (ingest-ahead)"
    try:
        with (dg.DagsterInstance.from_ref(dg.deserialize_value(job["instance"])) as instance,
              os.fdopen(fd, "w", buffering=1) as runs):
            for batch in job["batches"]:
                result = launch_batch(instance, "ingestion_job", batch, job["run_config"])
                runs.write(f"{result.run_id}\n")
    except run_launch.Interrupted as stop:
        return stop.exit_code
    return 0


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the parent dies, even by SIGKILL (Linux); elsewhere it
    lives until its current run ends and its next write fails."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call above
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(_helper(int(sys.argv[1])))
