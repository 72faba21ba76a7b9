"""The engine against servers that are not OpenAI: a loose model, and servers that reject
response_format json_schema (and json_object), over real HTTP on loopback."""

import json
import logging
import random
import sqlite3
from collections import Counter
from pathlib import Path

from assets.models import ChunkMetadata, DocumentThemeList
from resources.llm import ChatItem
from resources.llm.structured import SCHEMA_BEGIN
from simulator.loose import Rates, loosen
from simulator.simulator import SimConfig
from tests.llm.conftest import fast_settings, run

SAMPLES = Path(__file__).parents[2] / "data" / "sample"
TEXTS = [(SAMPLES / name).read_text()[:1500] for name in (
    "support-chat-double-charge.txt", "support-email-okta-sso.txt",
    "incident-review-2026-03-payments-retry.md", "support-call-rate-limits.txt",
    "release-notes-lumen-ledger-4-2.md", "postmortem-lumen-mobile-crash.md")]


def metadata_items(n: int, prefix: str = "m"):
    for i in range(n):
        text = f"<document>{TEXTS[i % len(TEXTS)]}\nTicket {prefix}-{i}.</document>"
        yield ChatItem(f"{prefix}-{i}", [{"role": "user", "content": text}], ChunkMetadata)


def theme_items(n: int):
    for i in range(n):
        passages = "\n".join(f"[chunk:{i:04x}{j:04x}] {TEXTS[(i + j) % len(TEXTS)][:400]}"
                             for j in range(3))
        yield ChatItem(f"t-{i}", [{"role": "user", "content": f"<document>{passages}"
                                                              "</document>"}],
                       DocumentThemeList)


def test_a_loose_model_is_normalised_not_repaired(sim):
    sim.configure(loose=0.3, seed=7)
    results, metrics = run(fast_settings(sim), metadata_items(200))
    stats = sim.stats()
    assert metrics.succeeded >= 190  # >= 95%
    assert metrics.repairs <= 4
    assert metrics.http_calls == sum(r.http_calls for r in results) == stats["requests"]
    assert {"enum", "names", "length", "wrap"} <= set(stats["loose"])
    assert metrics.normalised["ChunkMetadata.language"] > 0
    assert metrics.normalised["ChunkMetadata.category"] > 0
    assert metrics.normalised["json_unwrapped"] == stats["loose"]["wrap"]
    assert sum(metrics.normalised.values()) == sum(sum(dict(r.normalised).values())
                                                   for r in results)
    for result in results:
        if result.ok:
            assert result.value.language == "und" or len(result.value.language) == 2


def test_loose_signatures_lengths_and_citations_in_themes(sim):
    sim.configure(loose_pattern=0.5, loose_length=0.3, loose_citations=0.5, seed=2)
    results, metrics = run(fast_settings(sim), theme_items(40))
    assert metrics.succeeded >= 38 and metrics.repairs <= 2
    loose = sim.stats()["loose"]
    assert loose["pattern"] and loose["citations"] and loose["length"]
    assert metrics.normalised["Theme.signature"] > 0
    assert metrics.normalised["Theme.evidence"] > 0
    for result in results:
        for theme in result.value.themes if result.ok else ():
            assert all(len(c) == 8 and c.isalnum() for c in theme.evidence)


def test_a_server_rejecting_json_schema_is_asked_in_json_mode_once_learned(sim, caplog):
    sim.configure(reject_json_schema=True, latency_ms=5)
    with caplog.at_level(logging.WARNING):
        results, metrics = run(fast_settings(sim), metadata_items(60), concurrency=16)
    stats = sim.stats()
    assert metrics.succeeded == 60 and metrics.retries == 0 and metrics.repairs == 0
    assert stats["faults"] == {"reject_json_schema": 1}  # per model, not per item
    assert metrics.format_rejected == 1 and metrics.http_calls == stats["requests"] == 61
    assert metrics.response_format_modes == {"json_object": 60}
    warnings = [r.getMessage() for r in caplog.records if "rejected response_format" in
                r.getMessage()]
    assert len(warnings) == 1 and "json_object" in warnings[0] and "gpt-4o-mini" in warnings[0]


def test_a_server_without_any_response_format_gets_the_schema_in_the_prompt(sim, caplog):
    sim.configure(reject_json_schema=True, reject_json_object=True, loose=0.2, seed=4)
    with caplog.at_level(logging.WARNING):
        results, metrics = run(fast_settings(sim), metadata_items(50), concurrency=8)
    stats = sim.stats()
    assert metrics.succeeded >= 48
    assert stats["faults"] == {"reject_json_schema": 1, "reject_json_object": 1}
    assert metrics.format_rejected == 2 and metrics.http_calls == stats["requests"]
    assert metrics.response_format_modes == {"prompt": 50}  # every item, straight there
    assert sum("rejected response_format" in r.getMessage() for r in caplog.records) == 1


def test_answers_are_shared_across_modes_and_cached_counts_replayed(sim, tmp_path):
    cache = tmp_path / "cache.sqlite"
    settings = fast_settings(sim, cache_path=str(cache))
    sim.configure(reject_json_schema=True, loose_names=1.0, seed=1)
    first, m1 = run(settings, metadata_items(10))
    assert m1.succeeded == 10 and m1.normalised["ChunkMetadata.language"] == 10
    sim.configure()  # a server with json_schema: the same logical requests
    calls = sim.stats()["requests"]
    second, m2 = run(settings, metadata_items(10))
    assert sim.stats()["requests"] == calls and m2.cache_hits == 10
    assert m2.normalised == m1.normalised  # the cache remembers what was normalised
    # entries written before the counts were stored still serve, with nothing to report
    with sqlite3.connect(cache) as conn:
        conn.execute("UPDATE responses SET value = json_remove(value, '$.normalised')")
    third, m3 = run(settings, metadata_items(10))
    assert m3.cache_hits == 10 and m3.normalised == {} and sim.stats()["requests"] == calls


def test_a_400_that_is_not_about_the_format_fails_the_item_without_fallback(sim):
    sim.configure(target="Ticket m-3.", target_status=400, target_rate=1.0)
    results, metrics = run(fast_settings(sim), metadata_items(8))
    assert metrics.failed_by_class == {"client_error": 1}
    assert metrics.format_rejected == 0 and metrics.response_format_modes == {"json_schema": 7}


def test_the_loose_model_is_driven_by_the_schema_and_seeded():
    schema = {"type": "object", "properties": {
        "colour": {"type": "string", "enum": ["dark_blue", "red"]},
        "lang": {"type": "string", "pattern": "^[a-z]{2}$"},
        "slug": {"type": "string", "pattern": "^[a-z_]+$", "maxLength": 30},
        "evidence": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}}
    answer = json.dumps({"colour": "dark_blue", "lang": "fr", "slug": "deep_sea_blue",
                         "evidence": ["1", "2", "3"]})
    rates = Rates(enum=1, names=1, length=1, pattern=1, citations=1, wrap=1)
    counts: Counter[str] = Counter()
    out = [loosen(answer, schema, rates, random.Random(5), counts) for _ in range(2)]
    assert out[0] == out[1] and out[0] != answer  # same seed, same liberties
    assert counts["enum"] == counts["names"] == counts["wrap"] == 2
    assert counts["pattern"] == counts["citations"] == 2
    assert loosen(answer, schema, Rates(), random.Random(5), Counter()) == answer


def test_loose_sets_every_rate_unless_given():
    config = SimConfig(loose=0.3, loose_wrap=0.0)
    assert config.loose_enum == config.loose_citations == 0.3 and config.loose_wrap == 0.0
    assert SCHEMA_BEGIN  # the marker both sides use exists
