"""One line on what the LLM stages of the CLI's runs cost: how many answers came from the
response cache, how many through the Batch API, how many HTTP calls were paid for (a
resumed run should pay only for what the killed one never received), and the estimated
dollars and what the batch route and the provider's prompt cache saved."""

import dagster as dg


def usage_line(instance: dg.DagsterInstance, run_ids: list[str]) -> str | None:
    """From the per-document metadata of the runs' LLM materializations
    (resources/llm/resource.py:metrics_metadata), or None if they made no LLM call."""
    answers = hits = calls = batched = 0
    cost = saved = 0.0
    batches: set[str] = set()
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            meta = entry.asset_materialization.metadata
            if "cache_hits" in meta and "http_calls" in meta:
                answers += meta["succeeded"].value
                hits += meta["cache_hits"].value
                calls += meta["http_calls"].value
                batched += (meta["routes"].value or {}).get("batch", 0) if "routes" in meta \
                    else 0
                batches.update(meta["batch_ids"].value if "batch_ids" in meta else ())
                cost += _usd(meta, "estimated_cost_usd")
                saved += _usd(meta, "cost_saved_usd")
    if not answers and not calls:
        return None
    through = f", {batched} through {len(batches)} batches" if batched else ""
    dollars = f"; estimated ${cost:.4f}, ${saved:.4f} saved" if cost or saved else ""
    return (f"docgraph: LLM: {answers} answers, {hits} of them from the response cache"
            f"{through}; {calls} HTTP calls made{dollars}")


def _usd(meta: dict, name: str) -> float:
    return float(meta[name].value or 0.0) if name in meta else 0.0
