"""`batch_sensor`: when the batches an enrichment run left open are over, it requests the
run that records their documents (assets/batch_route.py).

Each tick looks up the provider's status of every open submission (resources/llm/
batch_store.py: in the response cache's database, so it sees the batches of every run
and worker). Submissions of the same documents go together: once all of them are over
(completed, failed, expired or cancelled), one enrichment run over those documents,
selecting their stages on the batch route (and document_themes, which follows from the
metadata and embeddings), collects the answers into the response cache and records the
documents from it; lines a batch did not answer go as LLM_BATCH_FALLBACK
says. The run key is the submissions' ids, so a batch is never collected by two requested
runs; a run that died before collecting leaves the submissions open for a re-run or the
daily sweep.
"""

import asyncio

import dagster as dg
import openai

from assets.batch import data_version
from assets.batch_route import STAGES
from assets.dagster_compat import RANGE_END_TAG, RANGE_START_TAG
from pipeline_defs.intervals import sensor_interval
from pipeline_defs.jobs import enrichment_job
from resources.llm import LLMEngine
from resources.llm.batch_lane import TERMINAL
from resources.llm.batch_store import BatchStore, Submission
from resources.llm.resource import LLMResource


def refreshed(llm: LLMResource) -> list[Submission]:
    """The open submissions, with their batches' status as the provider has it now."""
    settings = llm.settings()
    location = settings.resolved_cache_path()
    if not location:
        return []
    store = BatchStore(location)
    open_ones = store.open_submissions()
    if not open_ones:
        return []

    async def refresh() -> list[Submission]:
        async with LLMEngine(settings) as engine:
            lane = engine.batch_lane()
            return [await lane.refresh(s.submission) for s in open_ones]

    return asyncio.run(refresh())


def run_requests(submissions: list[Submission]) -> list[dg.RunRequest]:
    """One request per set of documents whose submissions are all over."""
    by_documents: dict[tuple[str, ...], list[Submission]] = {}
    for submission in submissions:
        by_documents.setdefault(submission.partitions, []).append(submission)
    requests = []
    for documents, group in by_documents.items():
        if not documents or any(s.status not in TERMINAL and not s.collected for s in group):
            continue
        stages = sorted({s.stage for s in group})
        # the themes follow from the metadata and embeddings in the same stream (and may
        # not be requested by automation: their run was the one that sent the batch)
        themes = {"document_themes"} if {"chunk_metadata", "chunk_embeddings"} & set(stages) \
            else set()
        requests.append(dg.RunRequest(
            run_key="batch:" + data_version(*sorted(s.submission for s in group)),
            asset_selection=[STAGES[stage] for stage in sorted({*stages, *themes})],
            run_config={"ops": {"enrichment": {"config": {
                stage: {"route": "batch"} for stage in stages}}}},
            tags={RANGE_START_TAG: documents[0], RANGE_END_TAG: documents[-1],
                  "docgraph/batches": ",".join(sorted(s.batch_id or "" for s in group))}))
    return requests


@dg.sensor(
    job=enrichment_job,
    minimum_interval_seconds=sensor_interval(30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the enrichment run that records the documents of batches "
    "(the batch route: LLM_ROUTE=batch) once those batches are over.",
)
def batch_sensor(context: dg.SensorEvaluationContext, llm: LLMResource):
    try:
        submissions = refreshed(llm)
    except openai.OpenAIError as exc:  # the provider is down: the next tick asks again
        return dg.SkipReason(f"the provider could not be asked about open batches: {exc}")
    if not submissions:
        return dg.SkipReason("no open batches")
    requests = run_requests(submissions)
    for submission in submissions:
        context.log.info(f"batch {submission.batch_id} ({submission.stage}, "
                         f"{submission.requests} requests): {submission.status}, "
                         f"{submission.completed} done, {submission.failed} failed")
    if not requests:
        return dg.SkipReason(f"{len(submissions)} open batches, none over yet")
    return requests
