"""What one document contributes to the graph, checked and in write order (no I/O).

A document's rows are validated against each other before anything is written, types
outside the allowlists are remapped (and counted), duplicates are dropped, and every list
is sorted by key: concurrent writers then lock shared nodes in the same order, which keeps
deadlocks rare (the driver retries the ones that still happen).
"""

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from resources.errors import DocgraphError, ErrorClass
from resources.neo4j.model import (
    ENTITY_TYPES,
    FALLBACK_ENTITY_TYPE,
    FALLBACK_RELATION_TYPE,
    ChunkRow,
    DocumentRow,
    EntityRow,
    Mention,
    RelationRow,
    allowed_entity_type,
    allowed_relation_type,
)

TYPE_RANK = {t: i for i, t in enumerate(ENTITY_TYPES)}

# (source_key, target_key, type, chunk_id): a relationship of one document. Two documents
# asserting the same fact give two relationships, each with its own provenance, so
# replacing or deleting one document never touches the other's (and concurrent writers of
# different documents never update the same relationship).
RelationshipId = tuple[str, str, str, str]


class InvalidContribution(DocgraphError, ValueError):
    """The rows of a document contradict each other; nothing was written (the document's
    graph write fails)."""

    def __init__(self, message: str):
        super().__init__(ErrorClass.GRAPH_WRITE_FAILED, message)


@dataclass(frozen=True)
class Contribution:
    document: DocumentRow
    chunks: list[dict]  # UPSERT_CHUNKS rows, by id
    entities: list[dict]  # by key, with chunk_ids (merged across documents: changes.py)
    relationships: list[dict]  # MERGE_RELATIONSHIPS rows, by identity
    remapped_labels: int
    remapped_relationship_types: int

    @property
    def chunk_ids(self) -> set[str]:
        return {c["id"] for c in self.chunks}

    @property
    def entity_keys(self) -> set[str]:
        return {e["key"] for e in self.entities}

    @property
    def mentions(self) -> set[tuple[str, str]]:
        return {(c, e["key"]) for e in self.entities for c in e["chunk_ids"]}

    @property
    def relationship_ids(self) -> set[RelationshipId]:
        return {relationship_id(r) for r in self.relationships}


def relationship_id(row: dict) -> RelationshipId:
    return row["source_key"], row["target_key"], row["type"], row["chunk_id"]


def build_contribution(
    document: DocumentRow,
    chunks: Iterable[ChunkRow],
    entities: Iterable[EntityRow],
    mentions: Iterable[Mention],
    relationships: Iterable[RelationRow],
    dimensions: int | None = None,
) -> Contribution:
    problems: list[str] = []
    chunk_rows = _chunks(document, chunks, dimensions, problems)
    entity_rows, remapped_labels = _entities(entities, problems)
    chunk_ids_by_entity: dict[str, set[str]] = defaultdict(set)
    for mention in mentions:
        if mention.chunk_id not in chunk_rows:
            problems.append(f"mention of {mention.entity_key!r} in unknown chunk "
                            f"{mention.chunk_id!r}")
        elif mention.entity_key not in entity_rows:
            problems.append(f"mention of unknown entity {mention.entity_key!r}")
        else:
            chunk_ids_by_entity[mention.entity_key].add(mention.chunk_id)
    for key in entity_rows:
        if key not in chunk_ids_by_entity:
            # It would be an orphan at once: every entity must be mentioned somewhere.
            problems.append(f"entity {key!r} has no mention")
    relationship_rows, remapped_types = _relationships(
        document, relationships, chunk_rows, entity_rows, problems)
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InvalidContribution(f"document {document.key!r}: {shown}{more}")
    for key, row in entity_rows.items():
        row["chunk_ids"] = sorted(chunk_ids_by_entity[key])
    return Contribution(
        document=document,
        chunks=[chunk_rows[k] for k in sorted(chunk_rows)],
        entities=[entity_rows[k] for k in sorted(entity_rows)],
        relationships=sorted(relationship_rows.values(), key=relationship_id),
        remapped_labels=remapped_labels,
        remapped_relationship_types=remapped_types,
    )


def _chunks(document: DocumentRow, chunks: Iterable[ChunkRow], dimensions: int | None,
            problems: list[str]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for chunk in chunks:
        if chunk.document_key != document.key:
            problems.append(f"chunk {chunk.id!r} belongs to document {chunk.document_key!r}")
            continue
        embedding = None if chunk.embedding is None else [float(x) for x in chunk.embedding]
        if embedding is not None:
            if dimensions is not None and len(embedding) != dimensions:
                problems.append(f"chunk {chunk.id!r} has a {len(embedding)}-dimensional "
                                f"embedding; the vector index has {dimensions}")
            if not all(math.isfinite(x) for x in embedding):
                problems.append(f"chunk {chunk.id!r} has a non-finite embedding value")
        row = {"id": chunk.id, "document_key": chunk.document_key, "index": chunk.index,
               "text": chunk.text, "embedding": embedding}
        if rows.setdefault(chunk.id, row) != row:
            problems.append(f"chunk {chunk.id!r} is given twice with different content")
    return rows


def _entities(entities: Iterable[EntityRow], problems: list[str]) -> tuple[dict[str, dict], int]:
    rows: dict[str, dict] = {}
    remapped = 0
    for entity in entities:
        label = allowed_entity_type(entity.type)
        if label is None:
            label = FALLBACK_ENTITY_TYPE
            remapped += 1
        row = {"key": entity.key, "name": entity.name, "type": label,
               "aliases": sorted(set(entity.aliases) - {entity.name})}
        if rows.setdefault(entity.key, row) != row:
            problems.append(f"entity {entity.key!r} is given twice with different content")
    return rows, remapped


def _relationships(document: DocumentRow, relationships: Iterable[RelationRow],
                   chunk_rows: dict, entity_rows: dict,
                   problems: list[str]) -> tuple[dict[RelationshipId, dict], int]:
    rows: dict[RelationshipId, dict] = {}
    remapped = 0
    for rel in relationships:
        if rel.document_key != document.key:
            problems.append(f"relationship {rel.source_key!r}->{rel.target_key!r} belongs to "
                            f"document {rel.document_key!r}")
            continue
        missing = [k for k in (rel.source_key, rel.target_key) if k not in entity_rows]
        if missing:
            problems.append(f"relationship to unknown entity {missing[0]!r}")
            continue
        if rel.chunk_id not in chunk_rows:
            problems.append(f"relationship in unknown chunk {rel.chunk_id!r}")
            continue
        rel_type = allowed_relation_type(rel.type)
        if rel_type is None:
            rel_type = FALLBACK_RELATION_TYPE
            remapped += 1
        row = {"source_key": rel.source_key, "target_key": rel.target_key, "type": rel_type,
               "document_key": rel.document_key, "chunk_id": rel.chunk_id}
        rows[relationship_id(row)] = row  # remapping can make two rows one
    return rows, remapped
