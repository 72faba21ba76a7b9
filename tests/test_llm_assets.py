"""assets/llm_assets.py: the `<asset>_success_rate` gate of one document's rows."""

import io

import dagster as dg
import pandas as pd

from assets.llm_assets import MAX_LISTED_FAILURES, success_rate_check

ASSET = dg.AssetKey("chunk_metadata")


def _rows(failed: set[int], n: int) -> pd.DataFrame:
    return pd.DataFrame([{"chunk_id": f"c{i:03d}", "error_class": "timeout" if i in failed
                          else None, "error": f"slow {i}" if i in failed else None}
                         for i in reversed(range(n))])


def _round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


def test_the_gate_counts_rows_with_an_error_class_and_lists_them_by_id():
    for frame in (_rows({2, 5}, 8), _round_trip(_rows({2, 5}, 8))):
        check = success_rate_check(ASSET, "doc", frame, threshold=0.8)
        assert not check.passed and check.partition == "doc"
        assert check.metadata["success_rate"].value == 0.75
        assert (check.metadata["attempted"].value, check.metadata["failed"].value) == (8, 2)
        assert check.metadata["failed_items"].value == [
            {"id": "c002", "error_class": "timeout", "error": "slow 2"},
            {"id": "c005", "error_class": "timeout", "error": "slow 5"}]


def test_a_document_without_failures_or_rows_passes():
    assert success_rate_check(ASSET, "doc", _rows(set(), 3), threshold=0.99).passed
    empty = _rows(set(), 0).reindex(columns=["chunk_id", "error_class", "error"])
    assert success_rate_check(ASSET, "doc", empty, threshold=0.99).passed


def test_the_listed_failures_are_capped_but_all_are_counted():
    check = success_rate_check(ASSET, "doc", _rows(set(range(80)), 80), threshold=0.99)
    assert check.metadata["failed"].value == 80
    listed = check.metadata["failed_items"].value
    assert len(listed) == MAX_LISTED_FAILURES and listed[0]["id"] == "c000"
