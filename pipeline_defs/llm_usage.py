"""One line on what the LLM stages of the CLI's runs cost: how many answers came from the
response cache and how many HTTP calls were paid for (a resumed run should pay only for
what the killed one never received)."""

import dagster as dg


def usage_line(instance: dg.DagsterInstance, run_ids: list[str]) -> str | None:
    """From the per-document metadata of the runs' LLM materializations
    (resources/llm/resource.py:metrics_metadata), or None if they made no LLM call."""
    answers = hits = calls = 0
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            meta = entry.asset_materialization.metadata
            if "cache_hits" in meta and "http_calls" in meta:
                answers += meta["succeeded"].value
                hits += meta["cache_hits"].value
                calls += meta["http_calls"].value
    if not answers and not calls:
        return None
    return (f"docgraph: LLM: {answers} answers, {hits} of them from the response cache; "
            f"{calls} HTTP calls made")
