"""Ingesting the next batches in a helper process while this one enriches.

`docgraph materialize` runs its batches' jobs one after another; ingestion (reading and
chunking, CPU only) of batch k+1 would leave the provider idle for seconds after
enrichment k. So when there are at least two batches, a helper process
(pipeline_defs/helper_process.py) ingests batches 2..n in order, each as its own run (as
the CLI's would be), while this process runs ingestion 1 and the enrichment and graph
runs; before batch k's enrichment this process waits for the helper's ingestion run k.

The helper is `python -m pipeline_defs.ingest_ahead FD` on the same instance (its
InstanceRef, sent with the batches); it writes each run id to the pipe FD when the run has
ended. It launches its runs through `run_launch.launch`, so they carry its own owner tags
and stop cleanly on SIGINT/SIGTERM. If it dies, this process says so once and ingests the
remaining batches itself.
"""

import os
import sys

import dagster as dg

from pipeline_defs.helper_process import HelperProcess, read_job

HELPER = [sys.executable, "-m", "pipeline_defs.ingest_ahead"]  # + the pipe's fd


class IngestAhead:
    """The helper process, and the run ids it reports, batch by batch."""

    def __init__(self, instance: dg.DagsterInstance, batches: list[list[str]],
                 run_config: dict, actor: str):
        self._instance, self._actor = instance, actor
        self._helper = HelperProcess(HELPER, {
            "instance": dg.serialize_value(instance.get_ref()), "batches": batches,
            "run_config": run_config, "actor": actor})
        self._ended = False

    def next_run_id(self) -> str | None:
        """The run id of the helper's next batch, once that run has ended; None if the
        helper is gone (said once; its dead run is marked ended): ingest it here."""
        if not self._ended and (line := self._helper.readline()):
            return line
        if not self._ended:
            self._ended = True
            self._helper.say_gone(self._instance, self._actor, "the ingest-ahead process",
                                  "; ingesting the remaining batches here")
        return None

    def close(self) -> None:
        self._helper.close()


def _helper(fd: int) -> int:
    job = read_job()
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


if __name__ == "__main__":
    sys.exit(_helper(int(sys.argv[1])))
