"""The graph's vocabulary (allowlists) and the rows the writer takes.

Labels and relationship types come only from these tuples: Cypher cannot take them as
parameters, so cypher.py builds its static queries from them, and anything else a model
says is remapped (Concept, RELATED_TO) and counted, never formatted into a query.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

# Order matters: it breaks ties when resolution counts types, and when two documents give
# one entity key different types, the type earlier in this tuple wins (in any write order).
ENTITY_TYPES: tuple[str, ...] = (
    "Person", "Organization", "Product", "Location", "Event", "Concept",
)
FALLBACK_ENTITY_TYPE = "Concept"
RELATION_TYPES: tuple[str, ...] = (
    "WORKS_FOR", "USES", "REPORTED", "FIXED", "LOCATED_IN", "PART_OF", "RELATED_TO",
)
FALLBACK_RELATION_TYPE = "RELATED_TO"

_ENTITY_TYPE_BY_FOLDED = {t.casefold(): t for t in ENTITY_TYPES}
_RELATION_TYPE_BY_FOLDED = {t.casefold(): t for t in RELATION_TYPES}


def allowed_entity_type(value: str) -> str | None:
    """The allowlisted spelling of `value` ("person" -> "Person"), or None."""
    return _ENTITY_TYPE_BY_FOLDED.get(value.strip().casefold())


def allowed_relation_type(value: str) -> str | None:
    """The allowlisted spelling of `value` ("works for" -> "WORKS_FOR"), or None."""
    folded = "_".join(value.strip().replace("-", " ").split()).casefold()
    return _RELATION_TYPE_BY_FOLDED.get(folded)


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """The row of a (:Document) node. Not assets.models.Document, the ingested text: the
    graph keeps only the key, the path and the title."""

    key: str
    path: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: str
    document_key: str
    index: int
    text: str
    embedding: Sequence[float] | None = None


@dataclass(frozen=True, slots=True)
class EntityRow:
    key: str
    name: str
    type: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Mention:
    chunk_id: str
    entity_key: str


@dataclass(frozen=True, slots=True)
class RelationRow:
    source_key: str
    target_key: str
    type: str
    document_key: str
    chunk_id: str


@dataclass
class StepStats:
    """One step of a write (e.g. "relationships"): rows sent, batches, time per batch.
    "read_current" is the read of what the document contributed before (rows read)."""

    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)


@dataclass
class WriteStats:
    """What one write did, summed from the server's result counters (never estimated).

    `retries` counts transaction-function invocations beyond one per batch: transient
    errors (deadlocks) retried by the driver, plus our own retries of a batch that raced
    with another document's removal of an orphaned entity.
    """

    nodes_created: int = 0
    nodes_deleted: int = 0
    relationships_created: int = 0
    relationships_deleted: int = 0
    properties_set: int = 0
    labels_added: int = 0
    labels_removed: int = 0
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    remapped_labels: int = 0
    remapped_relationship_types: int = 0
    steps: dict[str, StepStats] = field(default_factory=dict)

    def summary(self) -> dict[str, int | float]:
        """The totals without the per-step detail, e.g. for asset metadata."""
        return {k: v for k, v in vars(self).items() if k != "steps"}
