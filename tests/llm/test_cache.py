"""The response cache on its two stores: a SQLite file (one machine) and PostgreSQL
(workers on several machines), alike; an unreachable or dropped PostgreSQL costs misses,
never the run."""

import threading

import psycopg2
import pytest

from resources.llm.cache import CACHE_ERRORS, PostgresCache, SQLiteCache, open_cache
from tests.conftest import fresh_database
from tests.llm.conftest import Summary, chat_items, fast_settings, run


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "cache.sqlite")
        return
    with fresh_database(request.getfixturevalue("pg_url"), request, "cache") as url:
        yield url


def test_open_cache_picks_the_store_by_the_setting(tmp_path):
    assert isinstance(open_cache(str(tmp_path / "c.sqlite")), SQLiteCache)
    assert isinstance(open_cache("postgresql://127.0.0.1:1/none"), PostgresCache)


def test_both_stores_keep_what_was_put_from_many_threads(location):
    cache = open_cache(location)
    assert cache.get("missing") is None

    def put(start: int) -> None:
        for i in range(start, 100, 4):
            cache.put(f"k{i}", {"value": i, "text": "é"})

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(cache) == 100
    assert [cache.get(f"k{i}") for i in (0, 57, 99)] == [
        {"value": i, "text": "é"} for i in (0, 57, 99)]
    cache.put("k0", {"value": "again"})
    assert cache.get("k0") == {"value": "again"} and len(open_cache(location)) == 100


def test_a_dropped_postgres_connection_costs_one_miss_then_reconnects(pg_url, request):
    with fresh_database(pg_url, request, "cache") as url:
        cache = open_cache(url)
        cache.put("k", {"value": 1})
        admin = psycopg2.connect(pg_url)
        admin.autocommit = True
        with admin.cursor() as cur:  # what a server restart or a failover does
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s", (url.rsplit("/", 1)[1],))
        admin.close()
        with pytest.raises(CACHE_ERRORS):
            cache.get("k")
        assert cache.get("k") == {"value": 1}


def test_the_engine_serves_a_second_run_from_a_postgres_cache(sim, pg_url, request):
    with fresh_database(pg_url, request, "cache") as url:
        settings = fast_settings(sim, cache_path=url)
        first, _ = run(settings, chat_items(20, Summary))
        calls = sim.stats()["requests"]
        second, metrics = run(settings, chat_items(20, Summary))
        assert metrics.cache_hits == 20 and sim.stats()["requests"] == calls
        assert {r.key: r.value for r in second} == {r.key: r.value for r in first}


def test_an_unreachable_postgres_cache_only_costs_misses(sim):
    settings = fast_settings(sim, cache_path="postgresql://docgraph@127.0.0.1:1/none")
    results, metrics = run(settings, chat_items(5, Summary))
    assert metrics.succeeded == 5 and metrics.cache_hits == 0
    assert sim.stats()["requests"] == 5
