"""`theme_catalog`: the canonical themes of the whole corpus.

Canonicalisation is a pure function of the documents' kept themes and when each document
was first registered, so the catalog is the same whatever the concurrency of extraction,
the order of documents, or the order partitions were materialized in (field note 000: a
shared signature dict raced under threads). Two steps:

1. signatures are normalised (ASCII, lowercase, singular words, sorted, de-duplicated:
   `rate_limits` and `limit_rate` are one theme);
2. groups are visited oldest first (by the registration time of their first document,
   then document key and signature) and each joins the most similar earlier canonical
   theme if the cosine similarity of their embeddings reaches the threshold, else starts
   its own. A canonical theme's id is the signature that first stated it.

Visiting oldest first is what keeps ids stable: a document added later is visited after
every existing theme, so it can join them or add new ones but never renames one.
"""

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from assets.keys import DOCUMENT_THEMES, THEME_CATALOG
from resources.registry import DocumentRegistry
from resources.storage import UNPARTITIONED, AssetStore

CATALOG_VERSION = "theme-catalog-v1"
# Words that qualify a theme without naming it: "billing_issue" is the "billing" theme.
FILLER_WORDS = frozenset({"issue", "issues", "problem", "problems", "and", "of", "the",
                          "with", "for", "on", "in", "to", "a"})


@dataclass(frozen=True)
class ThemeMention:
    """A kept theme of one document: what canonicalisation works from."""

    document_key: str
    signature: str
    label: str
    description: str
    score: float
    embedding: tuple[float, ...] | None


class CanonicalTheme(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme_id: str  # the signature that first stated it; never changes when documents are added
    label: str
    description: str
    signatures: list[str]  # every signature merged into it, sorted
    documents: list[str]  # document keys, sorted
    document_count: int
    mention_count: int
    mean_score: float
    first_seen: str  # registration time of its earliest document
    last_seen: str  # ... and of its latest


class ThemeCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    similarity_threshold: float
    documents: int  # documents that contributed at least one theme
    mentions: int
    themes: list[CanonicalTheme]  # most documents first, then by id


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalize_signature(signature: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", signature).encode("ascii", "ignore").decode()
    words = {_singular(w) for w in re.split(r"[^a-z0-9]+", ascii_text.lower()) if w}
    return "_".join(sorted(words - FILLER_WORDS)) or "general"


class _Leaders:
    """The canonical themes so far, with unit embeddings in one matrix for fast lookup."""

    def __init__(self) -> None:
        self.anchors: list[ThemeMention] = []
        self.matrix = np.zeros((0, 0))
        self.rows: list[int] = []  # leader index of each matrix row

    def most_similar(self, vector: np.ndarray | None, threshold: float) -> int | None:
        """The leader whose embedding is most similar to `vector`, if at least `threshold`;
        ties go to the older leader."""
        if vector is None or not self.rows or self.matrix.shape[1] != len(vector):
            return None
        # rounded, so that the last bits of a float sum never decide a merge
        similarity = np.round(self.matrix[: len(self.rows)] @ vector, 6)
        best = int(np.argmax(similarity))  # the first (oldest) of equal maxima
        return self.rows[best] if similarity[best] >= threshold else None

    def add(self, anchor: ThemeMention, vector: np.ndarray | None) -> int:
        self.anchors.append(anchor)
        if vector is not None and (not self.rows or self.matrix.shape[1] == len(vector)):
            if len(self.rows) == len(self.matrix):  # grow by doubling
                grown = np.zeros((max(16, 2 * len(self.matrix)), len(vector)))
                if self.rows:
                    grown[: len(self.rows)] = self.matrix[: len(self.rows)]
                self.matrix = grown
            self.matrix[len(self.rows)] = vector
            self.rows.append(len(self.anchors) - 1)
        return len(self.anchors) - 1


def _unit(embedding: tuple[float, ...] | None) -> np.ndarray | None:
    if not embedding:
        return None
    vector = np.asarray(embedding, dtype=np.float64)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else None


def canonical_themes(mentions: Iterable[ThemeMention], first_seen: dict[str, str],
                     threshold: float) -> ThemeCatalog:
    """The catalog of `mentions` (a pure function: any order of the same mentions gives the
    same catalog). `first_seen` maps each document key to its registration time."""
    def age(m: ThemeMention) -> tuple[str, str, str]:
        return first_seen[m.document_key], m.document_key, m.signature

    mentions = sorted(mentions, key=age)
    groups: dict[str, list[ThemeMention]] = defaultdict(list)
    for mention in mentions:  # in age order, so each group's first mention is its oldest
        groups[normalize_signature(mention.signature)].append(mention)

    leaders = _Leaders()
    members: dict[int, list[ThemeMention]] = defaultdict(list)
    for group in groups.values():  # dicts keep insertion order: oldest group first
        vector = _unit(group[0].embedding)
        index = leaders.most_similar(vector, threshold)
        if index is None:
            index = leaders.add(group[0], vector)
        members[index].extend(group)

    themes = []
    for index, leader in enumerate(leaders.anchors):
        group = members[index]
        documents = sorted({m.document_key for m in group})
        seen = sorted(first_seen[d] for d in documents)
        themes.append(CanonicalTheme(
            theme_id=leader.signature, label=leader.label, description=leader.description,
            signatures=sorted({m.signature for m in group}), documents=documents,
            document_count=len(documents), mention_count=len(group),
            mean_score=round(sum(m.score for m in group) / len(group), 3),
            first_seen=seen[0], last_seen=seen[-1],
        ))
    themes.sort(key=lambda t: (-t.document_count, t.theme_id))
    return ThemeCatalog(similarity_threshold=threshold,
                        documents=len({m.document_key for m in mentions}),
                        mentions=len(mentions), themes=themes)


MENTION_COLUMNS = ["document_key", "signature", "label", "description", "score", "embedding",
                   "kept", "error_class"]


def kept_mentions(rows: list[dict]) -> list[ThemeMention]:
    """The themes a document kept, from its document_themes rows (MENTION_COLUMNS)."""
    return [ThemeMention(r["document_key"], r["signature"], r["label"], r["description"],
                         float(r["score"]),
                         tuple(r["embedding"]) if r["embedding"] is not None else None)
            for r in rows if r["kept"] and r["error_class"] is None]


class CatalogConfig(dg.Config):
    similarity_threshold: float = 0.8  # cosine of theme embeddings at which themes merge
    top: int = 10  # themes shown in the materialization's preview


def _preview(catalog: ThemeCatalog, top: int) -> str:
    lines = ["| theme | label | documents | signatures |", "|---|---|---|---|"]
    for theme in catalog.themes[:top]:
        lines.append(f"| {theme.theme_id} | {theme.label} | {theme.document_count} | "
                     f"{', '.join(theme.signatures)} |")
    return "\n".join(lines)


@dg.asset(
    deps=[DOCUMENT_THEMES],
    group_name="enrichment",
    kinds={"json"},
    code_version=CATALOG_VERSION,
    check_specs=[dg.AssetCheckSpec(
        "theme_catalog_coverage", asset=THEME_CATALOG,
        description="every registered document has materialized themes (WARN; the ones "
        "without are listed)")],
    # Since it was last *requested*, not since_last_handled(): that also resets on the
    # catalog's own materialization, and a reset wins over a trigger first seen on the
    # same tick, so themes updated while the previous catalog run was finishing were
    # never picked up (tests/test_daemon.py failed 2 runs in 3). A catalog materialized
    # outside automation (the CLI, catalog_schedule, by hand) after new themes costs one
    # more automated rebuild (pure, no LLM, ~1 s): cheaper than a stale catalog.
    automation_condition=(
        (dg.AutomationCondition.missing() | dg.AutomationCondition.any_deps_updated())
        .since(dg.AutomationCondition.newly_requested())
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ),
)
def theme_catalog(context: dg.AssetExecutionContext, config: CatalogConfig,
                  store: AssetStore, registry: DocumentRegistry):
    """Canonical themes across all documents: normalised signatures, then near-duplicates
    merged by embedding similarity; per theme its documents, counts and first/last seen.
    Built from what is stored (no LLM calls), so rebuilding it is cheap and repeatable."""
    first_seen, mentions, missing = {}, [], []
    for entry in registry.entries():
        if not store.exists(DOCUMENT_THEMES, entry.key, pd.DataFrame):
            missing.append(entry.key)
            continue
        first_seen[entry.key] = entry.added_at
        mentions.extend(kept_mentions(store.read_rows(DOCUMENT_THEMES, entry.key,
                                                      MENTION_COLUMNS)))
    catalog = canonical_themes(mentions, first_seen, config.similarity_threshold)
    store.write(THEME_CATALOG, UNPARTITIONED, catalog)
    blob = catalog.model_dump_json().encode()
    yield dg.MaterializeResult(
        metadata={
            "themes": dg.MetadataValue.int(len(catalog.themes)),
            "recurring_themes": dg.MetadataValue.int(
                sum(t.document_count > 1 for t in catalog.themes)),
            "mentions": dg.MetadataValue.int(catalog.mentions),
            "documents": dg.MetadataValue.int(catalog.documents),
            "documents_without_themes": dg.MetadataValue.int(len(missing)),
            "preview": dg.MetadataValue.md(_preview(catalog, config.top)),
            "path": dg.MetadataValue.path(str(store.path(THEME_CATALOG, UNPARTITIONED,
                                                         ThemeCatalog))),
        },
        data_version=dg.DataVersion(hashlib.sha256(blob).hexdigest()[:16]),
        check_results=[dg.AssetCheckResult(
            check_name="theme_catalog_coverage", passed=not missing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"missing": dg.MetadataValue.json(missing[:50]),
                      "missing_count": dg.MetadataValue.int(len(missing))})],
    )
