"""The per-document chain as one batched step: documents -> chunks -> chunk_metadata,
chunk_embeddings -> document_themes, and chunks -> graph_extraction, for a range of
documents.

Why one step for five assets: a step over a range of partitions records each partition
on its own (assets/batch.py), so its outputs are skippable and never yielded; Dagster
skips any later step that depends on an output that was not yielded. Inside one step the
stages run in order, each over the documents that came through the stage before, and
any subset of the assets can be selected (a stage not selected reads what is stored).

A document that fails a stage is reported with that stage's assets and reason, and skips
the stages that need what failed (not the others); a document whose LLM stage fails its
success-rate gate is held back by the stages that read it
(assets/enrichment.py:read_upstream). Every other document runs to the end.
"""

import dataclasses
from collections import defaultdict

import dagster as dg

from assets.batch import DOCUMENTS_PER_RUN, PartitionError, check_outputs, raise_failures
from assets.embeddings import (
    CHUNK_EMBEDDINGS_CHECKS,
    CHUNK_EMBEDDINGS_SPEC,
    EmbedConfig,
    embeddings_stage,
)
from assets.enrichment import EnrichConfig
from assets.graph_extraction import (
    GRAPH_EXTRACTION_CHECKS,
    GRAPH_EXTRACTION_SPEC,
    graph_extraction_stage,
)
from assets.ingestion import CHUNKS_SPEC, DOCUMENTS_SPEC, IngestConfig, ingest_stage
from assets.interrupts import raise_if_stopped
from assets.metadata import (
    CHUNK_METADATA_CHECKS,
    CHUNK_METADATA_SPEC,
    metadata_stage,
)
from assets.themes import (
    DOCUMENT_THEMES_CHECKS,
    DOCUMENT_THEMES_SPEC,
    ThemeConfig,
    themes_stage,
)
from resources.llm.resource import LLMResource
from resources.registry import DocumentRegistry
from resources.storage import AssetStore

LLM_POOL = "llm"  # dagster.yaml gives each pool its default number of slots

# In the order the stages run.
PIPELINE_SPECS = [DOCUMENTS_SPEC, CHUNKS_SPEC, CHUNK_METADATA_SPEC, CHUNK_EMBEDDINGS_SPEC,
                  DOCUMENT_THEMES_SPEC, GRAPH_EXTRACTION_SPEC]


class PipelineConfig(dg.Config):
    """Each stage's own settings; the LLM stages each take their own `concurrency`
    ceiling (default: the engine's LLM_MAX_CONCURRENCY) and `success_threshold`."""

    ingestion: IngestConfig = IngestConfig()
    chunk_metadata: EnrichConfig = EnrichConfig()
    chunk_embeddings: EmbedConfig = EmbedConfig()
    document_themes: ThemeConfig = ThemeConfig()
    graph_extraction: EnrichConfig = EnrichConfig()


@dg.multi_asset(
    name="document_pipeline",
    specs=PIPELINE_SPECS,
    check_specs=[*CHUNK_METADATA_CHECKS, *CHUNK_EMBEDDINGS_CHECKS, *DOCUMENT_THEMES_CHECKS,
                 *GRAPH_EXTRACTION_CHECKS],
    can_subset=True,
    pool=LLM_POOL,
    op_tags={"docgraph/stage": "llm"},
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=DOCUMENTS_PER_RUN),
)
def document_pipeline(
    context: dg.AssetExecutionContext,
    config: PipelineConfig,
    llm: LLMResource,
    store: AssetStore,
    registry: DocumentRegistry,
):
    selected = context.selected_asset_keys
    all_keys = list(context.partition_keys)
    failures: list[PartitionError] = []  # every stage's failures, with the stage's assets
    failed_assets: dict[str, set[dg.AssetKey]] = defaultdict(set)

    def run(specs: list[dg.AssetSpec], stage) -> None:
        """Run a stage over the documents none of whose inputs failed in this step (a
        document held back from its themes still gets its graph extraction)."""
        if not selected & {spec.key for spec in specs}:
            return
        raise_if_stopped()  # the CLI was told to stop: no new stage
        needs = {dep.asset_key for spec in specs for dep in spec.deps}
        ready = [k for k in all_keys if not failed_assets[k] & needs]
        names = tuple(spec.key.to_user_string() for spec in specs if spec.key in selected)
        for failure in stage(ready) if ready else []:
            failures.append(dataclasses.replace(failure, assets=names))
            failed_assets[failure.partition].update(spec.key for spec in specs)

    run([DOCUMENTS_SPEC, CHUNKS_SPEC],
        lambda keys: ingest_stage(context, config.ingestion, registry, store, keys))
    run([CHUNK_METADATA_SPEC], lambda keys: metadata_stage(
        context, config.chunk_metadata, llm, store, registry, keys))
    run([CHUNK_EMBEDDINGS_SPEC], lambda keys: embeddings_stage(
        context, config.chunk_embeddings, llm, store, registry, keys))
    run([DOCUMENT_THEMES_SPEC], lambda keys: themes_stage(
        context, config.document_themes, llm, store, registry, keys))
    run([GRAPH_EXTRACTION_SPEC], lambda keys: graph_extraction_stage(
        context, config.graph_extraction, llm, store, registry, keys))
    yield from check_outputs(context)  # every partition was recorded by its stage
    raise_failures(failures, len(all_keys))
