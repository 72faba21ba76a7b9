"""The batch lane over real HTTP against the simulator's Batch API on loopback."""

import asyncio
import logging

import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from resources.errors import ErrorClass
from resources.llm import ChatItem, EmbedItem, LLMEngine
from resources.llm import batch_lane as lane_module
from resources.llm.batch_store import BatchStore
from tests.conftest import fresh_database
from tests.llm.conftest import Summary, chat_items, fast_settings


def lane_then_run(settings, items, wait=True, stage="test"):
    """The lane for `items`, then the engine's run of them; (report, results, metrics)."""
    items = list(items)

    async def go():
        async with LLMEngine(settings) as engine:
            report = await engine.batch_lane().run(items, stage, ["doc"], wait=wait)
            if not wait:
                return report, [], None
            results, metrics = await engine.run_all(items)
            return report, results, metrics

    return asyncio.run(go())


def sync_run(settings, items):
    async def go():
        async with LLMEngine(settings) as engine:
            return await engine.run_all(list(items))

    return asyncio.run(go())


@pytest.fixture
def lane_settings(sim, tmp_path):
    def make(**overrides):
        values = dict(cache_path=str(tmp_path / "cache.sqlite"), batch_poll_seconds=0.05)
        return fast_settings(sim, **{**values, **overrides})

    return make


def test_answers_match_the_sync_route_at_half_the_price(sim, lane_settings, tmp_path):
    items = list(chat_items(40, Summary))
    sync_results, sync_metrics = sync_run(fast_settings(sim), items)
    sim.simulator.reset()
    report, results, metrics = lane_then_run(lane_settings(), items)
    stats = sim.stats()
    assert stats["chat_requests"] == 0  # nothing synchronous
    assert stats["batch"]["files_uploaded"] == 1 and stats["batch"]["batches_created"] == 1
    assert report.submitted == 40 and report.outcomes == {"answered": 40}
    assert {r.key: r.value for r in results} == {r.key: r.value for r in sync_results}
    assert metrics.routes == {"batch": 40} and metrics.batch_ids == report.batches
    assert metrics.prompt_tokens == sync_metrics.prompt_tokens
    half = sync_metrics.estimated_cost_usd / 2
    assert metrics.estimated_cost_usd == pytest.approx(half, abs=1e-6)  # both rounded
    assert metrics.cost_saved_usd == pytest.approx(half, abs=1e-6)
    # a second run pays nothing and sends nothing
    report, _, metrics = lane_then_run(lane_settings(), items)
    assert report.already_answered == 40 and report.submitted == 0
    assert metrics.cache_hits == 40 and metrics.estimated_cost_usd == 0
    assert sim.stats()["batch"]["batches_created"] == 1


def test_duplicate_items_are_one_line(sim, lane_settings):
    items = [*chat_items(5, Summary), *chat_items(5, Summary)]  # same keys, same requests
    report, results, metrics = lane_then_run(lane_settings(), items)
    assert report.submitted == 5 and sim.stats()["batch"]["batch_lines"] == 5
    assert metrics.succeeded == 10


def test_files_split_at_the_request_limit(sim, lane_settings):
    report, _, metrics = lane_then_run(lane_settings(batch_max_requests=7),
                                       chat_items(20, Summary))
    assert report.uploads == 3 and len(report.batches) == 3
    assert metrics.routes == {"batch": 20}


def test_failed_and_expired_lines_are_asked_synchronously(sim, lane_settings):
    """5% of the lines fail, and the first of two batches expires half done."""
    sim.configure(batch={"failed_line_rate": 0.05, "seed": 3, "expire_next": 1,
                         "expired_done_share": 0.5})
    report, results, metrics = lane_then_run(lane_settings(batch_max_requests=50),
                                             chat_items(100, Summary))
    assert len(report.batches) == 2 and report.outcomes["expired"] == 25
    unanswered = report.outcomes["failed"] + report.outcomes["expired"]
    assert report.outcomes["failed"] > 0
    assert report.outcomes["answered"] == 100 - unanswered
    assert metrics.succeeded == 100 and metrics.batch_fallbacks == unanswered
    assert metrics.routes == {"batch": 100 - unanswered, "sync": unanswered}
    assert sim.stats()["chat_requests"] == unanswered


def test_failed_and_expired_lines_fail_with_their_class(sim, lane_settings):
    sim.configure(batch={"failed_line_rate": 0.2, "expire_next": 1,
                         "expired_done_share": 0.5, "seed": 5})
    report, results, metrics = lane_then_run(lane_settings(batch_fallback="fail"),
                                             chat_items(40, Summary))
    assert report.outcomes["expired"] == 20
    by_class = metrics.failed_by_class
    assert by_class["batch_expired"] == 20
    assert by_class["batch_failed"] == report.outcomes["failed"] > 0
    assert metrics.attempted == metrics.succeeded + metrics.failed == 40
    assert metrics.succeeded == report.outcomes["answered"]
    assert sim.stats()["chat_requests"] == 0
    assert all("batch_" in r.error and r.error_class in (ErrorClass.BATCH_FAILED,
                                                          ErrorClass.BATCH_EXPIRED)
               for r in results if not r.ok)


class Strict(BaseModel):
    """An answer the offline heuristics never get right: every one needs its repair."""

    model_config = ConfigDict(extra="forbid")
    title: str
    keywords: list[str]

    @field_validator("title")
    @classmethod
    def _never(cls, value: str) -> str:
        raise ValueError("the title must be in Latin")


def test_an_invalid_answer_goes_straight_to_its_repair_turn(sim, lane_settings):
    report, results, metrics = lane_then_run(lane_settings(max_repairs=1),
                                             chat_items(6, Strict))
    assert report.outcomes == {"invalid": 6}
    # one synchronous call per item, and it is the repair turn (the batch asked first)
    assert sim.stats()["chat_requests"] == 6 == metrics.repairs
    assert metrics.failed_by_class == {"invalid_output": 6}


def test_embeddings_take_the_lane(sim, lane_settings):
    items = [EmbedItem(f"e{i}", [f"text {i}", f"more text {i}"], 64) for i in range(5)]
    sync_results, _ = sync_run(fast_settings(sim), items)
    sim.simulator.reset()
    report, results, metrics = lane_then_run(lane_settings(), items)
    assert sim.stats()["embedding_requests"] == 0 and report.outcomes == {"answered": 5}
    assert {r.key: r.value for r in results} == {r.key: r.value for r in sync_results}


def test_a_resumed_run_waits_for_the_open_batch_and_never_sends_it_again(sim, lane_settings):
    sim.configure(batch={"completion_delay_seconds": 1.0})
    items = list(chat_items(10, Summary))
    report, _, _ = lane_then_run(lane_settings(), items, wait=False)  # the run is killed
    assert report.submitted == 10
    report, results, metrics = lane_then_run(lane_settings(), items)
    assert report.already_open == 10 and report.submitted == 0
    assert sim.stats()["batch"]["batches_created"] == 1
    assert metrics.routes == {"batch": 10} and sim.stats()["chat_requests"] == 0


def test_a_submission_cut_before_its_batch_is_finished_not_sent_twice(sim, lane_settings,
                                                                      monkeypatch):
    items = list(chat_items(8, Summary))

    async def killed(self, submission):
        raise KeyboardInterrupt  # the process dies between recording and creating

    with monkeypatch.context() as patch:
        patch.setattr(lane_module.BatchLane, "_create", killed)
        with pytest.raises(KeyboardInterrupt):
            lane_then_run(lane_settings(), items)
    monkeypatch.setattr(lane_module, "STALE_SUBMITTING_SECONDS", 0)
    report, results, metrics = lane_then_run(lane_settings(), items)
    assert sim.stats()["batch"] == {**sim.stats()["batch"], "files_uploaded": 1,
                                    "batches_created": 1}
    assert metrics.routes == {"batch": 8}


def test_a_batch_created_but_not_recorded_is_adopted(sim, lane_settings, monkeypatch,
                                                     tmp_path):
    items = list(chat_items(8, Summary))
    real_update = BatchStore.update

    def lost(self, submission, **values):
        if "batch_id" in values:
            raise KeyboardInterrupt  # created at the provider, the process died
        return real_update(self, submission, **values)

    with monkeypatch.context() as patch:
        patch.setattr(BatchStore, "update", lost)
        with pytest.raises(KeyboardInterrupt):
            lane_then_run(lane_settings(), items)
    # at once: a batch the provider made for the submission is adopted, never made again
    report, results, metrics = lane_then_run(lane_settings(), items)
    assert sim.stats()["batch"]["batches_created"] == 1
    assert metrics.routes == {"batch": 8}


def test_cached_prompt_tokens_are_read_and_priced_at_the_cached_rate(sim):
    sim.configure(prompt_cache_min_tokens=0, prompt_cache_block=1)
    settings = fast_settings(sim, max_concurrency=1)
    instructions = {"role": "system", "content": "Summarise the ticket as a title and keywords."}
    items = [ChatItem(item.key, [instructions, *item.messages], Summary)
             for item in chat_items(5, Summary)]
    results, metrics = sync_run(settings, items)
    assert metrics.cached_tokens > 0 and metrics.cached_tokens == sim.stats()["cached_tokens"]
    price = settings.prices[settings.chat_model]
    full = (metrics.prompt_tokens * price.input + metrics.completion_tokens * price.output) / 1e6
    cached = metrics.cached_tokens * (price.input - price.cached_input) / 1e6
    assert metrics.estimated_cost_usd == pytest.approx(full - cached, abs=1e-6)  # rounded
    assert metrics.cost_saved_usd == pytest.approx(cached, abs=1e-6)


def test_the_lane_needs_the_response_cache(sim):
    async def go():
        async with LLMEngine(fast_settings(sim, cache_path=None)) as engine:
            engine.batch_lane()

    with pytest.raises(ValueError, match="response cache"):
        asyncio.run(go())


def test_progress_is_logged_while_a_batch_runs(sim, lane_settings, caplog):
    sim.configure(batch={"completion_delay_seconds": 0.5})
    with caplog.at_level(logging.INFO):
        lane_then_run(lane_settings(), chat_items(10, Summary))
    progress = [r.getMessage() for r in caplog.records if "done," in r.getMessage()]
    assert any("in_progress" in line for line in progress)
    assert progress[-1].endswith("completed, 10 of 10 done, 0 failed")


def test_the_lane_on_postgres_resumes_like_on_sqlite(sim, pg_url, request):
    """`make prod`'s cache and batch records: the instance's PostgreSQL."""
    sim.configure(batch={"completion_delay_seconds": 0.5})
    items = list(chat_items(12, Summary))
    with fresh_database(pg_url, request, "cache") as url:
        settings = fast_settings(sim, cache_path=url, batch_poll_seconds=0.05)
        report, _, _ = lane_then_run(settings, items, wait=False)
        assert report.submitted == 12
        report, results, metrics = lane_then_run(settings, items)
        assert report.already_open == 12 and report.submitted == 0
        assert metrics.routes == {"batch": 12} and metrics.succeeded == 12
        assert sim.stats()["batch"]["batches_created"] == 1


def test_a_batch_the_provider_lost_is_asked_again(sim, lane_settings):
    sim.configure(batch={"completion_delay_seconds": 30.0})
    items = list(chat_items(5, Summary))
    report, _, _ = lane_then_run(lane_settings(), items, wait=False)
    sim.simulator.batches.batches.clear()  # the provider forgot it (its process ended)
    report, results, metrics = lane_then_run(lane_settings(), items)
    assert report.submitted == 0 and metrics.succeeded == 5
    assert metrics.routes == {"sync": 5} and metrics.batch_fallbacks == 5


def test_a_cancelled_batch_answers_what_it_did_and_the_rest_goes_sync(sim, lane_settings):
    sim.configure(batch={"completion_delay_seconds": 2.0})
    items = list(chat_items(10, Summary))
    report, _, _ = lane_then_run(lane_settings(), items, wait=False)

    async def cancel():
        async with LLMEngine(lane_settings()) as engine:
            await asyncio.sleep(1.1)  # about half of the lines are done by then
            [batch] = [b async for b in engine.client().batches.list()]
            cancelled = await engine.client().batches.cancel(batch.id)
            return cancelled.status

    assert asyncio.run(cancel()) == "cancelled"
    report, results, metrics = lane_then_run(lane_settings(), items)
    answered, missing = report.outcomes["answered"], report.outcomes["missing"]
    assert 0 < answered < 10 and answered + missing == 10
    assert metrics.succeeded == 10 and metrics.routes == {"batch": answered, "sync": missing}
