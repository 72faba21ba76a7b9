"""`document_themes`: the themes of each document, each judged by K independent votes.

Three kinds of LLM call, all through the enrichment step's one stream
(assets/enrichment.py): one extraction per document once its chunk metadata and
embeddings are in and passed their gates (its chunks, numbered `[1]`, `[2]`, … in
document order, cited back by number: assets/citations.py), then K votes per theme on the
chunks it cites, and one embedding request per document for its themes (theme_catalog
merges near-duplicates with them).
Extraction is pure per document: nothing is shared between documents or calls, and the
corpus-wide canonical themes are made afterwards, in one place (assets/catalog.py).
"""

import statistics

import dagster as dg
import pandas as pd

from assets import prompts
from assets.citations import Citations, passage_marker, resolve_citations
from assets.keys import CHUNK_EMBEDDINGS, CHUNK_METADATA, CHUNKS, DOCUMENT_THEMES
from assets.llm_assets import GateConfig, llm_spec, success_rate_spec
from assets.models import DocumentThemeList, Theme, ThemeVote
from assets.partitions import documents_partitions
from resources.llm import ChatItem, EmbedItem, ItemResult

THEMES_VERSION = f"{prompts.DOCUMENT_THEMES.version}+{prompts.THEME_VOTE.version}"
# evidence: the citations as the model gave them; evidence_chunk_ids: the chunks they name
# (cited_chunk_ids, the same list, is what the votes judged); citations_unknown: the
# citations that named no chunk of the document.
THEME_COLUMNS = ["theme_id", "document_key", "signature", "label", "description",
                 "evidence", "evidence_chunk_ids", "cited_chunk_ids", "citations_unknown",
                 "votes", "score", "kept", "embedding", "error_class", "error"]
CHARS_PER_TOKEN = 4  # to cut text to a token budget without tokenizing it twice


class ThemeConfig(GateConfig):
    votes: int = 3  # independent judgements per theme, averaged into its score
    min_score: float = 3.0  # on the votes' 1-5 scale; themes below are dropped, and counted
    text_budget_tokens: int = 6000  # whole chunks up to this; beyond, their metadata digests
    vote_temperature: float = 0.7  # votes must be able to disagree to be worth averaging


def document_passages(chunks: pd.DataFrame, metadata: pd.DataFrame, budget: int) -> str:
    """The document as the extraction prompt shows it: each chunk after its number, `[1]`,
    `[2]`, … in the frame's order, whole if the document fits the budget, else as its
    title, summary and keywords from chunk_metadata (so a 300-page document still fits one
    prompt). Numbers, not ids: a model copies `[3]` back faithfully, a 32-hex id not."""
    whole = int(chunks["n_tokens"].sum()) <= budget
    digests = metadata.set_index("chunk_id")
    passages = []
    for number, chunk in enumerate(chunks.itertuples(), start=1):
        body = chunk.text
        if not whole:
            meta = digests.loc[chunk.chunk_id]
            body = (f"{meta.title}\n{meta.summary}\nkeywords: {', '.join(meta.keywords)}"
                    if pd.isna(meta.error_class) else chunk.text[:400])
        passages.append(f"{passage_marker(number)}\n{body}")
    return "\n\n".join(passages)


def unique_themes(themes: list[Theme]) -> list[Theme]:
    """One theme per signature: a repeated signature adds its citations to the first."""
    by_signature: dict[str, Theme] = {}
    for theme in themes:
        first = by_signature.get(theme.signature)
        if first is None:
            by_signature[theme.signature] = theme
        else:
            merged = list(dict.fromkeys([*first.evidence, *theme.evidence]))
            by_signature[theme.signature] = first.model_copy(update={"evidence": merged})
    return list(by_signature.values())


def theme_text(theme: Theme) -> str:
    """What a theme is embedded as: its label and signature words, the part that names it
    (descriptions quote the document and would make every theme look unique)."""
    return f"{theme.label} ({theme.signature.replace('_', ' ')})"


def vote_items(theme_id: str, theme: Theme, evidence: str, config: ThemeConfig
               ) -> list[ChatItem]:
    subject = (f"<theme>\n{theme.signature}\nlabel: {theme.label}\n"
               f"description: {theme.description}\n</theme>\n")
    return [
        ChatItem(f"{theme_id}#vote{i}",
                 prompts.THEME_VOTE.messages(evidence, f"{subject}You are judge {i + 1} of "
                                                       f"{config.votes}.\n"),
                 ThemeVote, prompts.THEME_VOTE.version, temperature=config.vote_temperature)
        for i in range(config.votes)
    ]


def themes_frame(key: str, candidates: list[Theme], citations: list[Citations],
                 results: dict[str, ItemResult], config: ThemeConfig) -> pd.DataFrame:
    """One row per theme: its citations, votes, score and embedding, or the error of the
    first of its calls that failed; a failed extraction is one row with that error."""
    extraction = results[f"{key}:themes"]
    if not extraction.ok:
        return pd.DataFrame([{"theme_id": f"{key}:extraction", "document_key": key,
                              "kept": False, "error_class": extraction.error_class,
                              "error": extraction.error}], columns=THEME_COLUMNS)
    embedded = results.get(f"{key}:embed")
    rows = []
    for position, (theme, cites) in enumerate(zip(candidates, citations, strict=True)):
        theme_id = f"{key}:{theme.signature}"
        cited = cites.chunk_ids
        votes = [results[f"{theme_id}#vote{i}"] for i in range(config.votes)] if cited else []
        failed = next((r for r in [*votes, embedded] if not r.ok), None)
        scores = [v.value.score for v in votes] if failed is None else []
        score = round(statistics.fmean(scores), 3) if scores else None
        rows.append({
            "theme_id": theme_id, "document_key": key, "signature": theme.signature,
            "label": theme.label, "description": theme.description,
            "evidence": theme.evidence, "evidence_chunk_ids": cited, "cited_chunk_ids": cited,
            "citations_unknown": cites.unknown,
            "votes": scores, "score": score,
            "kept": score is not None and score >= config.min_score,
            "embedding": embedded.value[position] if failed is None else None,
            "error_class": failed.error_class if failed else None,
            "error": failed.error if failed else None,
        })
    return pd.DataFrame(rows, columns=THEME_COLUMNS)


def _records(rows: pd.DataFrame) -> list[dict]:
    # A document has a handful of themes: plain dicts, not pandas' per-call machinery
    # (which was ~3% of an enrichment step's CPU on frames this small).
    return rows.to_dict("records")


def _extracted(records: list[dict]) -> list[dict]:
    """The rows of themes the extraction gave (not the row of a failed extraction)."""
    return [r for r in records if isinstance(r["signature"], str)]


def evidence_check(key: str, rows: pd.DataFrame) -> dg.AssetCheckEvaluation:
    extracted = _extracted(_records(rows))
    uncited = [r for r in extracted if len(r["cited_chunk_ids"]) == 0]
    return dg.AssetCheckEvaluation(
        asset_key=DOCUMENT_THEMES, check_name="document_themes_evidence",
        passed=not uncited, severity=dg.AssetCheckSeverity.WARN, partition=key,
        metadata={
            "themes": dg.MetadataValue.int(len(extracted)),
            "without_evidence": dg.MetadataValue.int(len(uncited)),
            "uncited": dg.MetadataValue.json([
                {"signature": r["signature"], "evidence": list(r["evidence"])}
                for r in uncited]),
        },
    )


def _preview(records: list[dict]) -> str:
    lines = ["| signature | label | votes | score | kept |", "|---|---|---|---|---|"]
    for row in records:
        signature = row["signature"] if isinstance(row["signature"], str) else "(extraction)"
        if not pd.isna(row["error_class"]):
            lines.append(f"| {signature} | **failed** | {row['error_class']} | | |")
        else:
            label = str(row["label"]).replace("|", "\\|")
            votes = ", ".join(str(v) for v in row["votes"]) or "no evidence"
            lines.append(f"| {signature} | {label} | {votes} | {row['score']} | "
                         f"{'yes' if row['kept'] else 'dropped'} |")
    return "\n".join(lines)


def _counts(records: list[dict]) -> dict[str, dg.MetadataValue]:
    ok = [r for r in records if pd.isna(r["error_class"])]
    scores = [r["score"] for r in ok if not pd.isna(r["score"])]
    extracted = _extracted(records)
    return {
        "themes_extracted": dg.MetadataValue.int(len(extracted)),
        # every citation the themes gave, and those that named no passage of the document
        "citations": dg.MetadataValue.int(sum(len(r["evidence"]) for r in extracted)),
        "citations_unknown": dg.MetadataValue.int(
            sum(len(r["citations_unknown"]) for r in extracted)),
        "themes_kept": dg.MetadataValue.int(sum(bool(r["kept"]) for r in ok)),
        "themes_dropped": dg.MetadataValue.int(sum(not r["kept"] for r in ok)),
        "themes_failed": dg.MetadataValue.int(len(records) - len(ok)),
        "mean_score": dg.MetadataValue.float(round(statistics.fmean(scores), 3)) if scores
        else dg.MetadataValue.null(),
    }


DOCUMENT_THEMES_SPEC = llm_spec(
    DOCUMENT_THEMES,
    deps=[CHUNKS, CHUNK_METADATA, CHUNK_EMBEDDINGS],
    code_version=THEMES_VERSION,
    description="Themes per document: snake_case signature, label, description and the "
    "chunks that evidence them (cited by passage number, mapped back to chunk ids; "
    "citations that name no chunk are counted in `citations_unknown`), each scored by "
    "`votes` independent LLM judgements (averaged, 1-5); themes under `min_score` are "
    "kept in the table but marked dropped (counted in `themes_dropped`). Skips "
    "documents whose chunk_metadata or chunk_embeddings gate failed.",
    with_inputs=True,  # in the same stream as its inputs: requested with them
)
DOCUMENT_THEMES_CHECKS = [
    success_rate_spec(DOCUMENT_THEMES),
    dg.AssetCheckSpec(
        "document_themes_evidence", asset=DOCUMENT_THEMES,
        partitions_def=documents_partitions,
        description="every theme cites at least one chunk that exists in the document "
        "(an uncited theme is not judged; the uncited are listed with their citations)",
    ),
]


def extraction_item(key: str, chunks: pd.DataFrame, metadata: pd.DataFrame,
                    config: ThemeConfig) -> ChatItem:
    passages = document_passages(chunks, metadata, config.text_budget_tokens)
    return ChatItem(f"{key}:themes", prompts.DOCUMENT_THEMES.messages(passages),
                    DocumentThemeList, prompts.DOCUMENT_THEMES.version)


def candidate_themes(extraction: ItemResult, chunks: pd.DataFrame
                     ) -> tuple[list[Theme], list[Citations]]:
    """The extraction's themes, one per signature, and the chunks each cites (by the
    numbers the prompt gave them, in the frame's order)."""
    candidates = unique_themes(extraction.value.themes) if extraction.ok else []
    chunk_ids = chunks["chunk_id"].tolist()
    return candidates, [resolve_citations(t.evidence, chunk_ids) for t in candidates]


def themes_description(rows: pd.DataFrame, config: ThemeConfig) -> dict[str, dg.MetadataValue]:
    records = _records(rows)
    return {**_counts(records), "votes_per_theme": dg.MetadataValue.int(config.votes),
            "min_score": dg.MetadataValue.float(config.min_score),
            "preview": dg.MetadataValue.md(_preview(records))}


def judging_items(key: str, candidates: list[Theme], citations: list[Citations],
                  chunks: pd.DataFrame, config: ThemeConfig) -> list[ChatItem | EmbedItem]:
    """One embedding request for the document's themes, and K votes for each theme that
    cites a chunk of the document (one that cites nothing real is not worth paying judges
    for), on the text of the passages it cites, under their numbers."""
    if not candidates:
        return []
    texts = chunks.set_index("chunk_id")["text"]
    numbers = {chunk_id: n for n, chunk_id in enumerate(chunks["chunk_id"], start=1)}
    items: list[ChatItem | EmbedItem] = [
        EmbedItem(f"{key}:embed", [theme_text(t) for t in candidates])]
    for theme, cites in zip(candidates, citations, strict=True):
        if cited := cites.chunk_ids:
            evidence = "\n\n".join(f"{passage_marker(numbers[c])}\n{texts[c]}" for c in cited)
            items += vote_items(f"{key}:{theme.signature}", theme,
                                evidence[: config.text_budget_tokens * CHARS_PER_TOKEN], config)
    return items
